"""DistributedDataParallel under Hydra: one run, one directory, whatever the number of processes.

With `strategy: ddp` on one machine, Lightning starts ranks 1..N-1 by running the script again with
rank 0's command line plus `hydra.run.dir=<run.dir>`. Under Hydra that goes wrong three ways: in a
multirun the workers see `-m` and the whole sweep, so each starts a sweep of its own; `hydra.run.dir`
is not the job's directory in a multirun; and each worker writes a log file of its own into the run
dir. So rank 0 writes down, for each job, the command line that rejoins exactly that job (its
overrides, its directory, no `.hydra/` output) in an environment variable, which Lightning hands to the
processes it starts, and `train.py` gives a worker that command line instead of rank 0's.
Ranks started by a cluster (srun, torchrun) run the same command line already; only their log files
and the run-dir guard need to know they are not rank 0.
"""

import json
import logging
import os
from contextlib import contextmanager

from fer.errors import FerError

# torch and lightning are imported where used: train.py calls worker_argv before Hydra has even
# parsed the command line, and that must stay quick.


JOB_ENV = "FER_DDP_JOB"
# What Lightning's launcher puts in rank 0's environment for the workers it starts.
_LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", JOB_ENV)
_CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
# Hydra settings of the sweep or launcher that started this job; a worker runs a single job in place.
_NOT_FOR_WORKERS = (
    "hydra.mode",
    "hydra.run.",
    "hydra.sweep.",
    "hydra.output_subdir",
    "hydra/launcher",
    "hydra.launcher.",
    "hydra/sweeper",
    "hydra.sweeper.",
)


def is_rank_zero() -> bool:
    # Known before any Trainer exists: Lightning reads RANK / LOCAL_RANK / SLURM_PROCID at import.
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank == 0


def brief_workers(run_dir, task_overrides, hydra_overrides, argv: list[str]):
    """Rank 0, before Lightning starts the workers: the command line that rejoins this job."""
    hydra_args = [o for o in hydra_overrides if not o.lstrip("+~").startswith(_NOT_FOR_WORKERS)]
    args = [
        *_config_flags(argv[1:]),
        *task_overrides,
        *hydra_args,
        f"hydra.run.dir={_quoted(run_dir)}",
        "hydra.output_subdir=null",
    ]
    os.environ[JOB_ENV] = json.dumps(args)


def worker_argv(argv: list[str]) -> list[str]:
    """A DDP worker Lightning started: the job's command line in place of rank 0's (which may be a sweep)."""
    job = os.environ.get(JOB_ENV)
    if job is None or int(os.environ.get("LOCAL_RANK", "0")) == 0:
        return argv
    return [argv[0], *json.loads(job)]


def check_launcher_can_start_workers(launcher_target: str, trainer):
    # In a joblib worker, the command line Lightning would re-run is joblib's, not train.py.
    if (
        "joblib" in launcher_target.lower()
        and trainer.world_size > 1
        and not trainer.strategy.cluster_environment.creates_processes_externally
    ):
        raise FerError(
            "a DDP job cannot start its processes inside a joblib worker; "
            "run DDP jobs with the default launcher (drop hydra/launcher=joblib) or with hydra/launcher=slurm"
        )


def sync_batchnorm_works(accelerator) -> bool:
    """Whether BatchNorm can be synchronised across processes on this accelerator: torch's
    SyncBatchNorm takes CUDA tensors only (on CPU, gloo: "SyncBatchNorm layers only work with GPU modules")."""
    import torch

    accelerator = str(accelerator).lower()
    if accelerator in ("gpu", "cuda"):
        return True
    return accelerator == "auto" and torch.cuda.is_available()  # what Lightning's "auto" picks first


def keep_log_files_to_rank_zero():
    # Every rank shares the run dir: ranks > 0 print to the console only (their lines are in the
    # console output; on SLURM in the per-task logs under .submitit/).
    if is_rank_zero():
        return
    for handler in [h for h in logging.root.handlers if isinstance(h, logging.FileHandler)]:
        logging.root.removeHandler(handler)
        handler.close()


@contextmanager
def job_scope():
    """What DDP leaves behind ends with the job. The next job of a multirun runs in this same process:
    Lightning's launcher leaves LOCAL_RANK & co. in the environment, from which the next Trainer would
    conclude that someone else starts its workers, and Lightning keeps the process group up, which the
    next job would join although its other ranks have exited. Either way rank 0 would wait forever."""
    saved = {k: os.environ.get(k) for k in _LAUNCHER_ENV}
    try:
        yield
    finally:
        import torch

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _config_flags(args: list[str]) -> list[str]:
    kept = []
    for i, a in enumerate(args):
        if a.split("=", 1)[0] in _CONFIG_FLAGS:
            kept += [a] if "=" in a else args[i : i + 2]
    return kept


def _quoted(path) -> str:
    # A dir may hold what Hydra's grammar reads as syntax ('=', ',', a space: hydra.sweep.dir is the user's): quoted, one value.
    return "'" + str(path).replace("'", "\\'") + "'"
