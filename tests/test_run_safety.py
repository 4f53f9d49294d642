"""No fault loses a run: refused runs write nothing, a kill mid-write keeps last.ckpt whole, a moved run
dir resumes into itself, a crafted run folder runs nothing, and bad checkpoints end in one line."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fer.errors import FerError
from fer.runs import atomic
from fer.runs.checkpoint import read_checkpoint
from fer.runs.resume import _overlay
from fer.runs.rundir import RunDirTaken, claim, release
from fer.runs.saving import RunCheckpoint

from conftest import ROOT, SHRINK, run_cli
from test_cli import assert_clean_error

# The README's default model, shrunk to a few batches (5 steps: enough for the one-cycle schedule).
SHORT = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "data.eval_batch_size=64",  # 2 batches of 64 faces to validate and test
    "eval_train_split=false",
    "calibrate=false",
    "trainer.enable_progress_bar=false",
]


TRAIN_BATCHES = f"trainer.limit_train_batches={SHRINK['trainer.limit_train_batches']}"  # as the tiny run recorded it


def one_line_error(r, *fragments):
    assert_clean_error(r, *fragments)
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr[-2000:]


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture
def finished_run(tiny_run, tmp_path) -> Path:
    """A finished run of the README's default model, this test's own: a copy of the session's tiny run (conftest.py)."""
    return shutil.copytree(tiny_run, tmp_path / "finished" / "run")


# --- 3: a refused run writes nothing ------------------------------------------------------------
@pytest.mark.slow
def test_a_refused_run_leaves_the_earlier_runs_record_byte_identical(finished_run, tiny_csv, tmp_path):
    before = digests(finished_run)
    other = tmp_path / "other" / "run"
    (other / "checkpoints").mkdir(parents=True)
    for args in (
        [f"data.path={tiny_csv}", "model.optimizer.lr=0.5", f"hydra.run.dir={finished_run}"],
        [f"data.path={tiny_csv}", f"hydra.run.dir='{finished_run}'"],  # quoted as Hydra reads it
        ["train=false", f"ckpt_path={finished_run}/checkpoints/last.ckpt", f"hydra.run.dir={finished_run}"],
        [f"ckpt_path={other}/checkpoints/last.ckpt", f"hydra.run.dir={finished_run}"],  # another run's checkpoint
        [f"data.path={tiny_csv}", "hydra.run.dir=${oc.env:FER_TEST_DIR}"],  # the claim is on the resolved dir
    ):
        r = run_cli(["train.py", *args], env={"FER_TEST_DIR": str(finished_run)})
        one_line_error(r, "already holds a run", "nothing was overwritten", f"ckpt_path={finished_run}/checkpoints/last.ckpt")
    assert digests(finished_run) == before


# --- 4: a kill while a checkpoint is written ------------------------------------------------------
SLOW_FSYNC = """import os, time
_fsync = os.fsync
def _slow(fd):
    time.sleep(float(os.environ.get("FER_TEST_SLOW_FSYNC", "0")))
    _fsync(fd)
os.fsync = _slow
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs a tmpfs at /dev/shm")
def test_sigkill_during_a_checkpoint_write_keeps_last_ckpt_whole(fer2013_path, tmp_path):
    # $TMPDIR on another file system (tmpfs), where a temporary file moved into the run dir is a copy.
    tmpdir = Path("/dev/shm") / f"fer-test-{os.getpid()}"
    tmpdir.mkdir(exist_ok=True)
    # Each fsync takes a second in the training process, so the kill lands inside a checkpoint write.
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SLOW_FSYNC)
    env = {
        **os.environ,
        "TMPDIR": str(tmpdir),
        "FER_TEST_SLOW_FSYNC": "1",
        "PYTHONWARNINGS": "ignore",
        "PYTHONPATH": os.pathsep.join(p for p in (str(hooks), os.environ.get("PYTHONPATH")) if p),
    }
    run_dir = tmp_path / "run"
    args = [
        sys.executable,
        "train.py",
        f"data.path={fer2013_path}",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=2",
        *SHORT[2:],
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints, last = run_dir / "checkpoints", run_dir / "checkpoints" / "last.ckpt"
    try:
        deadline, good = time.time() + 300, None
        while time.time() < deadline and proc.poll() is None:
            if good is None and last.exists():
                good = last.read_bytes()  # epoch 1's, written whole (the rename comes after the slow fsync)
            if good is not None and any(p.name.startswith(".last.ckpt.") for p in checkpoints.iterdir()):
                break  # epoch 2's last.ckpt is being written
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        shutil.rmtree(tmpdir, ignore_errors=True)
    assert good is not None and not (run_dir / "metrics.json").exists(), "the run ended before a write could be interrupted"
    assert last.read_bytes() == good  # the killed write left the previous checkpoint untouched
    assert torch.load(last, weights_only=True)["epoch"] == 0
    assert [p.name for p in checkpoints.iterdir() if p.name.endswith(".part")]  # what the kill left behind...

    r = run_cli(["train.py", f"ckpt_path={last}"])
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert [h["epoch"] for h in m["history"]] == [0, 1, 2]  # only the unfinished epoch was lost, and redone
    assert not [p.name for p in checkpoints.iterdir() if p.name.endswith(".part")]  # ...is cleaned up by the next write


@pytest.mark.slow
def test_a_best_checkpoint_written_after_last_ckpt_is_set_aside_when_the_run_resumes(finished_run):
    checkpoints = finished_run / "checkpoints"
    # What a kill between epoch 2's two writes leaves: its new best, and last.ckpt (with the state it
    # records) still at epoch 1. The resume trains epoch 2 again; that best belongs to no one.
    orphan = checkpoints / "best-epoch02-acc0.9999.ckpt"
    shutil.copy(next(checkpoints.glob("best-*.ckpt")), orphan)
    r = run_cli(["train.py", f"ckpt_path={checkpoints / 'last.ckpt'}", "trainer.max_epochs=2"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert not orphan.exists() and (checkpoints / "discarded" / orphan.name).is_file()  # set aside, not deleted
    (best,) = checkpoints.glob("best-*.ckpt")  # the resumed run's own best alone
    assert json.loads((finished_run / "metrics.json").read_text())["test"]["checkpoint"] == str(best)
    assert f"{orphan.name} was written after last.ckpt" in (finished_run / "train.log").read_text()


def test_replace_atomically_keeps_the_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"good")
    (tmp_path / ".best.ckpt.999999999.part").write_bytes(b"half")  # a dead writer's leftover

    def fail(f):
        f.write(b"ha")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic.replace_atomically(target, fail)
    assert target.read_bytes() == b"good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    atomic.replace_atomically(target, lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new"


def test_ctrl_c_during_a_write_waits_for_the_whole_file_then_interrupts(tmp_path):
    # Inside torch.save a Ctrl-C would break the C++ writer (a RuntimeError and a traceback, exit 1).
    target = tmp_path / "last.ckpt"

    def write_then_ctrl_c(f):
        f.write(b"first half ")
        signal.raise_signal(signal.SIGINT)  # the user presses Ctrl-C mid-write
        f.write(b"second half")

    # Python's own Ctrl-C handler, as in a terminal (a test run started with `nohup ... &` ignores SIGINT)
    outside = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            atomic.replace_atomically(target, write_then_ctrl_c)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
    finally:
        signal.signal(signal.SIGINT, outside)
    assert target.read_bytes() == b"first half second half"


def test_a_live_writers_temporary_file_is_left_alone(tmp_path):
    live = tmp_path / f".last.ckpt.{os.getppid()}.part"  # the parent process: alive
    live.write_bytes(b"being written")
    atomic.replace_atomically(tmp_path / "other.ckpt", lambda f: f.write(b"x"))
    assert live.exists()


# --- 5: a moved run dir resumes into itself -------------------------------------------------------
def test_checkpoint_paths_are_stored_relative_and_old_absolute_ones_rerooted(tmp_path):
    here, elsewhere = tmp_path / "moved" / "checkpoints", tmp_path / "original" / "checkpoints"
    here.mkdir(parents=True)
    (here / "best-epoch03-acc0.5000.ckpt").write_bytes(b"x")
    callback = RunCheckpoint(dirpath=here, monitor="val/acc", mode="max")
    old = {
        "monitor": "val/acc",
        "best_model_score": torch.tensor(0.5),
        "best_model_path": str(elsewhere / "best-epoch03-acc0.5000.ckpt"),
        "current_score": torch.tensor(0.5),
        "dirpath": str(elsewhere),
        "kth_value": torch.tensor(0.5),
        "best_k_models": {str(elsewhere / "best-epoch03-acc0.5000.ckpt"): torch.tensor(0.5)},
        "kth_best_model_path": str(elsewhere / "best-epoch03-acc0.5000.ckpt"),
        "last_model_path": "",
    }
    callback.load_state_dict(old)
    assert callback.best_model_path == str(here / "best-epoch03-acc0.5000.ckpt")
    assert callback.best_model_score == 0.5 and list(callback.best_k_models) == [callback.best_model_path]
    stored = callback.state_dict()
    assert stored["best_model_path"] == "best-epoch03-acc0.5000.ckpt" and stored["dirpath"] == "."
    assert "ModelCheckpoint{" in callback.state_key  # the key older checkpoints were written under

    gone = RunCheckpoint(dirpath=tmp_path / "empty", monitor="val/acc", mode="max")
    gone.load_state_dict(old)  # the best checkpoint did not come along: rank afresh instead of testing a missing file
    assert gone.best_model_path == "" and gone.best_model_score is None


@pytest.mark.slow
def test_a_moved_run_dir_resumes_into_itself_and_touches_nothing_outside(finished_run, tmp_path):
    before = digests(finished_run)
    copy = shutil.copytree(finished_run, tmp_path / "copy")
    faster = ["data.eval_batch_size=64"]  # calibration on fewer faces; the run's own overrides come back
    r = run_cli(["train.py", f"ckpt_path={copy}/checkpoints/last.ckpt", "calibrate=true", *faster])
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming {copy}" in r.stderr
    m = json.loads((copy / "metrics.json").read_text())
    assert Path(m["test"]["checkpoint"]).parent == copy / "checkpoints"
    assert Path(m["calibration"]["stored_in"]).parent == copy / "checkpoints"
    assert digests(finished_run) == before  # the run it was copied from: not tested, calibrated or rewritten

    moved = tmp_path / "moved"
    copy.rename(moved)  # and with the copy it came from gone
    r = run_cli(["train.py", f"ckpt_path={moved}/checkpoints/last.ckpt", "calibrate=false"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert Path(json.loads((moved / "metrics.json").read_text())["test"]["checkpoint"]).parent == moved / "checkpoints"
    assert digests(finished_run) == before


# --- 6: a crafted run folder runs nothing and writes nowhere else ---------------------------------
def test_a_run_folder_sets_settings_only_never_targets_hydra_or_where_files_go():
    base = {
        "seed": 42,
        "model": {"_target_": "fer.train.module.EmotionClassifier", "net": {"dropout": 0.4}, "scheduler": {"_target_": "x"}},
        "callbacks": {"best_checkpoint": {"_target_": "fer.runs.saving.RunCheckpoint", "dirpath": "${hydra:runtime.output_dir}"}},
        "data": {"path": "${oc.env:FER2013_PATH,data/fer2013.csv}"},
    }
    saved = {
        "seed": 7,
        "model": {"_target_": "fer.train.module.EmotionClassifier", "net": {"dropout": 0.2}},  # scheduler deleted by the run
        "callbacks": {"best_checkpoint": {"_target_": "fer.runs.saving.RunCheckpoint", "dirpath": "${hydra:runtime.output_dir}"}},
        "data": {"path": "/data/fer2013.csv"},
    }
    refused = []
    _overlay(base, saved, {"seed"}, "", refused)  # seed typed now: the command line wins
    assert refused == [] and base["seed"] == 42 and base["model"]["net"]["dropout"] == 0.2 and "scheduler" not in base["model"]
    assert base["data"]["path"] == "/data/fer2013.csv"
    for crafted, why in [
        ({"callbacks": {"best_checkpoint": {"dirpath": "/victim"}}}, "names where files go"),
        ({"model": {"_target_": "os.system"}}, "builds objects"),
        ({"model": {"scheduler": {"_target_": "os.system"}}}, "builds objects"),
        ({"trainer": {"plugins": [{"_target_": "x"}]}}, "builds objects"),
        ({"logger": {"csv": {"save_dir": "/victim"}}}, "names where files go"),
        ({"data": {"path": "${oc.create:{_target_:os.system}}"}}, "calls a resolver"),
        ({"hydra": {"run": {"dir": "/victim"}}}, "Hydra's own settings"),
    ]:
        refused = []
        _overlay(dict(base, trainer={}, logger={"csv": {"save_dir": "${hydra:runtime.output_dir}"}}), crafted, set(), "", refused)
        assert len(refused) == 1 and why in refused[0], (crafted, refused)


@pytest.mark.slow
def test_a_crafted_run_folder_is_refused_and_nothing_outside_is_touched(finished_run, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.ckpt").write_text("mine")
    config = finished_run / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("dirpath: ${hydra:runtime.output_dir}/checkpoints", f"dirpath: {victim}", 1))
    before = digests(finished_run)
    r = run_cli(["train.py", f"ckpt_path={finished_run}/checkpoints/last.ckpt"])
    one_line_error(r, "not resuming", f"callbacks.best_checkpoint.dirpath={victim} (names where files go)")
    assert digests(victim) == {"precious.ckpt": hashlib.sha256(b"mine").hexdigest()} and digests(finished_run) == before


def test_stored_checkpoint_state_never_names_a_file_outside_the_run(tmp_path):
    here = tmp_path / "run" / "checkpoints"
    here.mkdir(parents=True)
    (here / "best.ckpt").write_bytes(b"x")
    victim = tmp_path / "victim.ckpt"
    victim.write_bytes(b"mine")
    callback = RunCheckpoint(dirpath=here, monitor="val/acc", mode="max", save_top_k=1)
    callback.load_state_dict(
        {
            "monitor": "val/acc",
            "best_model_score": torch.tensor(0.5),
            "best_model_path": str(here / "best.ckpt"),
            "current_score": torch.tensor(0.5),
            "dirpath": str(tmp_path),
            "kth_value": torch.tensor(0.5),
            "best_k_models": {
                str(here / "best.ckpt"): torch.tensor(0.5),
                "..": torch.tensor(0.4),
                str(victim): torch.tensor(0.3),
            },
            "kth_best_model_path": "..",
            "last_model_path": str(victim),
        }
    )
    named = [callback.best_model_path, callback.kth_best_model_path, callback.last_model_path, *callback.best_k_models]
    assert all(p == "" or Path(p).parent == here for p in named), named


@pytest.mark.slow
def test_resuming_from_a_best_checkpoint_is_refused_with_the_command_that_works(finished_run):
    before = digests(finished_run)
    best = next((finished_run / "checkpoints").glob("best-*.ckpt"))
    r = run_cli(["train.py", f"ckpt_path={best}"])
    one_line_error(r, "is not where its run left off", f"ckpt_path={finished_run}/checkpoints/last.ckpt", f"init_from={best}")
    assert digests(finished_run) == before


@pytest.mark.slow
def test_resuming_a_warm_started_run_whose_start_is_gone_is_refused_at_start(finished_run, tmp_path):
    config = finished_run / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("init_from: null", f"init_from: {tmp_path / 'gone.ckpt'}"))
    r = run_cli(["train.py", f"ckpt_path={finished_run}/checkpoints/last.ckpt", "trainer.max_epochs=5"])
    one_line_error(r, "which is gone", "init_from=null")
    assert "Epoch 1" not in r.stdout and json.loads((finished_run / "metrics.json").read_text())["epochs"] == 1


def test_a_run_dir_is_claimed_once_and_a_resume_waits_for_no_one(tmp_path):
    run_dir = tmp_path / "run"
    claim(run_dir)
    try:
        with pytest.raises(RunDirTaken, match="already holds a run"):
            subprocess_claim(run_dir, resuming=False)
        with pytest.raises(RunDirTaken, match="another process is running there now"):
            subprocess_claim(run_dir, resuming=True)  # a resume while the run is still going
    finally:
        release(run_dir)
    subprocess_claim(run_dir, resuming=True)  # once it has ended, its own resume may enter


def subprocess_claim(run_dir: Path, resuming: bool):
    # Another process, as another command would be: the flock is per open file, not per process.
    code = f"from fer.runs.rundir import claim; claim({str(run_dir)!r}, resuming={resuming})"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    if r.returncode:
        raise RunDirTaken(r.stderr.strip().splitlines()[-1])


def test_default_run_dirs_of_runs_started_in_one_second_differ():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    dirs = set()
    for _ in range(2):
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", return_hydra_config=True)
            OmegaConf.clear_resolver("now")  # Hydra caches ${now:}; a new process starts without that cache
            from hydra.core.utils import setup_globals

            setup_globals()
            dirs.add(OmegaConf.select(cfg, "hydra.run.dir"))
    assert len(dirs) == 2, dirs


# --- 7: bad checkpoints and outputs, one line each ------------------------------------------------
def test_an_empty_checkpoint_to_resume(tiny_csv, tmp_path):
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    for extra in ([], ["train=false"]):
        one_line_error(
            run_cli(["train.py", f"ckpt_path={empty}", f"data.path={tiny_csv}", *extra, f"hydra.run.dir={tmp_path / 'r'}"]),
            "empty (0 bytes)",
        )


def test_the_shipped_slim_model_is_not_a_run_to_resume(tiny_csv, tmp_path):
    slim = ROOT / "fer" / "weights" / "fer2013_regularized.ckpt"
    r = run_cli(["train.py", f"ckpt_path={slim}", f"data.path={tiny_csv}", f"hydra.run.dir={tmp_path / 'r'}"])
    one_line_error(r, "is a slim model", "train=false", "init_from=")


def test_weights_that_do_not_fit_the_stored_spec(tiny_csv, tmp_path, random_checkpoint):
    ckpt = torch.load(random_checkpoint, weights_only=True)
    first = next(k for k in ckpt["state_dict"] if k.startswith("net."))
    ckpt["state_dict"][first] = torch.zeros(3)
    torch.save(ckpt, tmp_path / "bad.ckpt")
    r = run_cli(
        [
            "train.py",
            "train=false",
            f"ckpt_path={tmp_path / 'bad.ckpt'}",
            f"data.path={tiny_csv}",
            f"hydra.run.dir={tmp_path / 'r'}",
        ]
    )
    one_line_error(r, "weights do not fit the stored architecture 'regularized'", "size mismatch")


@pytest.mark.parametrize(
    "meta, problem",
    [
        (["not", "a", "mapping"], "is a list, not a mapping"),
        ("drop mean", "lacks 'mean'"),
        ("std 0", "invalid 'std'"),
    ],
)
def test_a_fer_entry_that_is_not_usable(random_checkpoint, tmp_path, meta, problem):
    ckpt = torch.load(random_checkpoint, weights_only=True)
    if meta == "drop mean":
        del ckpt["fer"]["mean"]
    elif meta == "std 0":
        ckpt["fer"]["std"] = 0.0
    else:
        ckpt["fer"] = meta
    torch.save(ckpt, tmp_path / "m.ckpt")
    with pytest.raises(FerError, match=problem):
        read_checkpoint(tmp_path / "m.ckpt")


def test_a_fer_entry_without_mean_on_the_command_line(tiny_csv, random_checkpoint, tmp_path):
    ckpt = torch.load(random_checkpoint, weights_only=True)
    del ckpt["fer"]["mean"]
    torch.save(ckpt, tmp_path / "m.ckpt")
    r = run_cli(
        [
            "train.py",
            "train=false",
            f"ckpt_path={tmp_path / 'm.ckpt'}",
            f"data.path={tiny_csv}",
            f"hydra.run.dir={tmp_path / 'r'}",
        ]
    )
    one_line_error(r, "not a usable fer checkpoint", "lacks 'mean'")
    one_line_error(run_cli(["export.py", f"ckpt_path={tmp_path / 'm.ckpt'}"]), "lacks 'mean'")


def test_permission_denied_says_so(random_checkpoint, tiny_csv, monkeypatch):
    from fer.data import reader

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(args[0]))

    monkeypatch.setattr(torch, "load", denied)
    with pytest.raises(FerError, match="permission denied"):
        read_checkpoint(random_checkpoint)
    monkeypatch.setattr(reader, "open", denied, raising=False)  # the module's open(), not everyone's
    with pytest.raises(FerError, match="permission denied") as e:
        reader.read_fer2013(tiny_csv)
    assert "corrupt" not in str(e.value)


def test_export_into_a_folder_it_cannot_make(random_checkpoint, tmp_path, monkeypatch):
    from fer.export import export_onnx

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    with pytest.raises(FerError, match=r"cannot write .*x\.onnx: permission denied"):
        export_onnx(random_checkpoint, str(tmp_path / "readonly" / "new" / "x.onnx"))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_export_py_into_a_read_only_folder(random_checkpoint, tmp_path):
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    try:
        one_line_error(
            run_cli(["export.py", f"ckpt_path={random_checkpoint}", f"output={readonly / 'new' / 'x.onnx'}"]), "permission denied"
        )
    finally:
        readonly.chmod(0o755)
