"""Scaling out: DDP over two CPU processes and multirun launchers (joblib, SLURM); the Optuna search is tests/test_search.py."""

import csv
import json
import os
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from fer.data.datamodule import EvalShardSampler
from fer.train.distributed import JOB_ENV, brief_workers, worker_argv

from conftest import run_cli
from test_cli import assert_clean_error

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY = ["model=baseline", "data.batch_size=4", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]
DDP_ON_CPU = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


def make(overrides):
    with initialize_config_dir(str(CONF), version_base="1.3", job_name="train"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def event_file_pids(run_dir: Path) -> set[str]:
    # events.out.tfevents.<time>.<host>.<pid>.<n>: which processes wrote TensorBoard events
    return {p.name.split(".")[-2] for p in (run_dir / "tensorboard").glob("events.out.tfevents.*")}


# --- DDP: the pieces ------------------------------------------------------------------------------


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_eval_shards_cover_every_face_exactly_once(world_size):
    faces = range(3589)  # PublicTest, PrivateTest: not divisible by 2, 3 or 4
    shards = [list(EvalShardSampler(faces, num_replicas=world_size, rank=r)) for r in range(world_size)]
    assert sorted(i for s in shards for i in s) == list(faces)
    assert [len(EvalShardSampler(faces, world_size, r)) for r in range(world_size)] == [len(s) for s in shards]


def test_a_ddp_worker_rejoins_its_job_and_not_the_sweep(monkeypatch):
    monkeypatch.setenv(JOB_ENV, "")  # restored after the test; brief_workers writes it
    job_dir = "/sweeps/0_model.net.dropout=0.2,model=baseline/it's"
    brief_workers(
        job_dir,
        ["model.net.dropout=0.2", "model=baseline"],
        ["hydra.sweep.dir=/sweeps", "hydra.mode=MULTIRUN", "hydra/launcher=joblib", "hydra.job.chdir=true"],
        ["train.py", "-m", "--config-dir", "extra", "model.net.dropout=0.2,0.5", "model=baseline"],
    )
    # what Lightning starts: rank 0's command line (the whole sweep) plus its own hydra.run.dir
    lightning_cmd = [
        "train.py",
        "-m",
        "--config-dir",
        "extra",
        "model.net.dropout=0.2,0.5",
        "model=baseline",
        'hydra.run.dir="outputs/runs/x"',
        "hydra.job.name=train_ddp_process_1",
        "hydra.output_subdir=null",
    ]
    monkeypatch.setenv("LOCAL_RANK", "1")
    argv = worker_argv(lightning_cmd)
    assert argv[:-2] == ["train.py", "--config-dir", "extra", "model.net.dropout=0.2", "model=baseline", "hydra.job.chdir=true"]
    assert argv[-1] == "hydra.output_subdir=null"  # workers write no .hydra/ of their own
    from hydra.core.override_parser.overrides_parser import OverridesParser

    run_dir = OverridesParser.create().parse_override(argv[-2])
    assert run_dir.key_or_group == "hydra.run.dir" and run_dir.value() == job_dir  # one value, though it holds = , '
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert worker_argv(lightning_cmd) == lightning_cmd  # rank 0 keeps its command line


# --- DDP: real runs ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("model", [None, "baseline"], ids=["default", "baseline"])
def test_ddp_on_two_cpu_processes_is_one_run_that_sees_each_face_once(fer2013_path, tmp_path, model):
    # The default model has BatchNorm, which trainer=ddp synchronises on GPUs; on CPU each process keeps its own.
    run_dir = tmp_path / "run"
    r = run_cli(
        [
            "train.py",
            *DDP_ON_CPU,
            f"data.path={fer2013_path}",
            *([f"model={model}"] if model else []),
            "data.batch_size=32",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=3",
            "eval_train_split=false",
            "calibrate=false",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={run_dir}",
        ]
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in out
    if model is None:
        assert out.count("sync_batchnorm: off on accelerator=cpu") == 1  # said once, by rank 0

    # one run: one directory, one set of files, all written by rank 0
    assert sorted(p.name for p in run_dir.iterdir()) == [
        ".fer-run",  # the run's claim on its dir (fer.runs.rundir)
        ".hydra",
        "checkpoints",
        "confusion_test.png",
        "curves.png",
        "metrics.json",
        "tensorboard",
        "train.log",
    ]
    assert len(list((run_dir / "checkpoints").glob("best-*.ckpt"))) == 1 and (run_dir / "checkpoints" / "last.ckpt").exists()
    assert len(event_file_pids(run_dir)) == 1
    assert "rank 1 of 2" not in (run_dir / "train.log").read_text()  # the worker logs to the console only
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["epochs"] == 1 and len(m["history"]) == 1 and m["val"]["acc"] is not None

    # each rank trains on its own half of Training and evaluates its own part of PublicTest: together each face once
    shards = {
        int(rank): (int(train), int(val))
        for rank, train, val in re.findall(
            r"rank (\d) of 2: (\d+) of 28709 Training faces per epoch \(DistributedSampler\), (\d+) of 3589 PublicTest faces "
            r"\(EvalShardSampler\)",
            out,
        )
    }
    assert shards == {0: (14355, 1795), 1: (14355, 1794)}, out[-4000:]
    # the test split goes the same way, and its confusion matrix counts every PrivateTest face once
    assert sum(map(sum, m["test"]["confusion_matrix"])) == 3589


@pytest.mark.slow
def test_ddp_ranks_end_training_with_bit_identical_weights(tiny_csv, tmp_path):
    # Each rank trains on its own half of the faces: only gradients averaged across the ranks at every
    # step keep their weights equal. The baseline has no BatchNorm, whose running statistics each CPU
    # process keeps for itself (sync_batchnorm is GPU-only), so every tensor of the state dict must match.
    weights = tmp_path / "weights"
    r = run_cli(
        [
            "train.py",
            *DDP_ON_CPU,
            f"data.path={tiny_csv}",
            *TINY,
            "eval_train_split=false",
            "calibrate=false",
            "+callbacks.rank_weights._target_=rank_weights.RankWeights",
            f"+callbacks.rank_weights.folder={weights}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        env={"PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))},
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    start, rank0, rank1 = (
        torch.load(weights / name, weights_only=True) for name in ("rank0-start.pt", "rank0-end.pt", "rank1-end.pt")
    )
    assert rank0.keys() == rank1.keys() == start.keys()
    moved = [k for k in rank0 if not torch.equal(rank0[k], start[k])]
    assert moved, "training changed no weight: equal ranks would prove nothing"
    differing = [k for k in rank0 if not torch.equal(rank0[k], rank1[k])]
    assert not differing, f"rank 0 and rank 1 differ in {differing}"


@pytest.mark.slow
def test_ddp_jobs_in_a_multirun_each_get_their_own_workers(tiny_csv, tmp_path):
    sweep, run_dir = tmp_path / "sweep", tmp_path / "not-a-run-dir"
    r = run_cli(
        [
            "train.py",
            "-m",
            *DDP_ON_CPU,
            "model.net.dropout=0.1,0.3",
            f"data.path={tiny_csv}",
            *TINY,
            f"hydra.sweep.dir={sweep}",
            f"hydra.run.dir={run_dir}",
        ]
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    jobs = sorted(d for d in sweep.iterdir() if d.is_dir())
    assert [j.name.split("_")[0] for j in jobs] == ["0", "1"]
    for job in jobs:
        assert (job / "metrics.json").exists() and len(event_file_pids(job)) == 1
        assert not list(job.glob("*ddp_process*"))
    assert out.count("rank 1 of 2:") == 2  # a worker for each job, and each joined its job
    assert out.count("sweep dir:") == 1  # no worker ran the sweep again
    assert not run_dir.exists()  # nor fell back to hydra.run.dir


# --- multi-node on SLURM: config only (no cluster here) -----------------------------------------

CLUSTER = [
    "hydra/launcher=slurm",
    "trainer=ddp",
    "trainer.devices=4",
    "trainer.num_nodes=2",
    "hydra.launcher.partition=gpu",
    "hydra.launcher.timeout_min=120",
]


def test_slurm_launcher_asks_for_one_task_per_gpu_on_each_node(tmp_path, monkeypatch):
    import submitit

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit's SLURM executor looks for srun; nothing runs it
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    cfg = make([*CLUSTER, f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    submitted = {}

    def capture_instead_of_sbatch(executor, fn, *job_args):
        submitted.update(executor=executor, overrides=job_args[0])
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", capture_instead_of_sbatch)
    launcher.launch([["model.net.dropout=0.3"]], initial_job_idx=0)

    assert submitted["overrides"] == (["model.net.dropout=0.3"],)
    slurm = submitted["executor"]._executor
    assert {k: slurm.parameters[k] for k in ("nodes", "ntasks_per_node", "gpus_per_node", "partition", "time")} == {
        "nodes": 2,
        "ntasks_per_node": 4,
        "gpus_per_node": 4,
        "partition": "gpu",
        "time": 120,
    }
    sbatch = slurm._make_submission_file_text("python -m submitit.core._submit FOLDER", "uid")
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=120",
        f"#SBATCH --output={tmp_path / 'sweep'}/.submitit/%j/",
    ):
        assert line in sbatch, sbatch
    assert "\nsrun " in sbatch  # srun starts the 8 tasks


def test_lightning_connects_the_tasks_srun_starts(monkeypatch):
    from lightning.fabric.plugins.environments import SLURMEnvironment

    # what SLURM sets for task 5 of the 8 that the job above starts (node 2, its second GPU)
    for key, value in {
        "SLURM_NTASKS": "8",
        "SLURM_NTASKS_PER_NODE": "4",
        "SLURM_NNODES": "2",
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "1",
        "SLURM_JOB_NAME": "train",
        "SLURM_JOB_ID": "4242",
        "SLURM_NODELIST": "gpu[07-08]",
    }.items():
        monkeypatch.setenv(key, value)
    from lightning.pytorch.utilities import rank_zero_only

    # The Trainer makes this process rank 5 for Lightning's rank-zero-only logging, and Lightning's SLURM
    # environment sets MASTER_ADDR=gpu07 in it: both put back after the test, or a later DDP run here waits for gpu07.
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    for key in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    cfg = make([*CLUSTER, "trainer.accelerator=cpu"])
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False, precision="32-true")
    env = trainer.strategy.cluster_environment
    assert isinstance(env, SLURMEnvironment) and env.creates_processes_externally  # Lightning starts no process itself
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank, trainer.world_size) == (5, 1, 1, 8)
    assert env.main_address == "gpu07"
    env.validate_settings(num_devices=cfg.trainer.devices, num_nodes=cfg.trainer.num_nodes)  # raises on a mismatch


# --- sweeps side by side: joblib -------------------------------------------------------------------


@pytest.mark.slow
def test_joblib_launcher_runs_sweep_jobs_side_by_side(tiny_csv, tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli(
        [
            "train.py",
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "model.net.dropout=0.1,0.3",
            f"data.path={tiny_csv}",
            *TINY,
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "Joblib.Parallel(n_jobs=2" in r.stdout + r.stderr
    jobs = sorted(d for d in sweep.iterdir() if d.is_dir())
    assert len(jobs) == 2 and all((j / "metrics.json").exists() for j in jobs)
    assert len(event_file_pids(jobs[0]) | event_file_pids(jobs[1])) == 2  # two worker processes
    with open(sweep / "summary.csv") as f:
        assert [row["status"] for row in csv.DictReader(f)] == ["ok", "ok"]


# --- bad input ---------------------------------------------------------------------------------------


def test_unknown_launcher_or_search_option(tmp_path):
    assert_clean_error(
        run_cli(["train.py", "-m", "hydra/launcher=kubernetes", f"hydra.sweep.dir={tmp_path}"]),
        "hydra/launcher=kubernetes",
        "joblib",
        "slurm",
    )
    assert_clean_error(
        run_cli(["train.py", "-m", "hparams_search=hyperopt", f"hydra.sweep.dir={tmp_path}"]), "hparams_search=hyperopt", "optuna"
    )


def test_slurm_without_its_plugin_says_what_to_install(tmp_path):
    # A Python without hydra-submitit-launcher: the import system is told the plugin is not there.
    hide_plugin = (
        "import runpy, sys; sys.modules['hydra_plugins.hydra_submitit_launcher'] = None; "
        "sys.argv = ['train.py', *sys.argv[1:]]; runpy.run_path('train.py', run_name='__main__')"
    )
    r = run_cli(["-c", hide_plugin, "-m", "hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path}"])
    assert_clean_error(
        r, "hydra/launcher=slurm needs the Hydra plugin hydra-submitit-launcher", "pip install hydra-submitit-launcher"
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_a_ddp_job_in_a_joblib_worker_is_refused_with_a_reason(tiny_csv, tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli(
        ["train.py", "-m", "hydra/launcher=joblib", *DDP_ON_CPU, f"data.path={tiny_csv}", *TINY, f"hydra.sweep.dir={sweep}"]
    )
    assert_clean_error(r, "1 of 1 jobs failed")
    assert "cannot start its processes inside a joblib worker" in next(sweep.glob("0*/error.txt")).read_text()
