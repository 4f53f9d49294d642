"""A run dir that holds a run is entered only to resume that run.

Checked on the command line before Hydra starts: Hydra writes the job's `.hydra/` (config.yaml,
hydra.yaml, overrides.yaml) into the run dir before the job runs, and a resume re-applies what
overrides.yaml says, so a refusal that came later would already have rewritten the run's record.
fer.train.run checks again, for a run dir set another way (in a config file).
"""

import os
from pathlib import Path

from fer import overrides
from fer.errors import FerError

# Where Lightning looks for a process's rank before any Trainer exists (lightning_fabric's _get_rank).
_RANK_ENV = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def holds_run(run_dir: Path) -> bool:
    return (run_dir / "checkpoints").exists() or (run_dir / "metrics.json").exists()


def occupied_message(run_dir: Path) -> str:
    return (
        f"{run_dir} already holds a run; choose another hydra.run.dir (nothing was overwritten), "
        f"or continue it: python train.py ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"
    )


def refuse_occupied_run_dir(argv: list[str]):
    """Before Hydra: hydra.run.dir=DIR that holds a run, unless this command resumes a checkpoint of that run."""
    args = argv[1:]
    if _rank() != 0 or any(a in overrides.MULTIRUN_FLAGS or a in overrides.NO_JOB_FLAGS for a in args):
        return  # DDP workers join rank 0's run; a multirun has job dirs of its own; --cfg & co. write nothing
    given = overrides.command_line(args)
    value = overrides.element(given, "hydra.run.dir")
    if not isinstance(value, str) or "${" in value:
        return  # none given, or one with a timestamp (a new dir)
    run_dir = Path(value)
    if not holds_run(run_dir):
        return
    ckpt = overrides.element(given, "ckpt_path")
    resuming = bool(ckpt) and str(overrides.element(given, "train")).lower() != "false"
    if resuming and run_dir.resolve() in Path(str(ckpt)).expanduser().resolve().parents:
        return
    raise FerError(occupied_message(run_dir))


def _rank() -> int:
    for key in _RANK_ENV:
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0
