"""A run dir belongs to one run, and a sweep dir to one sweep: each is claimed when the job (or
sweep) starts, after Hydra has resolved its name, and before anything of ours is written there.

The claim is a marker file created with O_EXCL (two runs racing for one dir: one wins) and held
under an flock while the job runs (two resumes of one run: one wins). Hydra itself would write
`.hydra/` and open train.log in the dir before the job runs; conf/train.yaml turns both off
(`hydra.output_subdir: null`, a log file opened on its first line), and RunDirGuard writes `.hydra/`
once the dir is claimed. A refused job leaves the dir as it found it; in a sweep it is written
down in the sweep dir instead (refused.txt), and the sweep summary lists it as refused.
"""

import fcntl
import functools
import logging
import os
import socket
import sys
import time
import traceback
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from fer.errors import FerError, user_error

MARKER = ".fer-run"  # in a run dir; in a sweep dir, SWEEP_MARKER
SWEEP_MARKER = ".fer-sweep"
REFUSED = "refused.txt"  # in a sweep dir: one line per refused job, "JOB_DIR_NAME<TAB>message"
# Where Lightning looks for a process's rank before any Trainer exists (lightning_fabric's _get_rank).
_RANK_ENV = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")

_held: dict[Path, int] = {}  # run dir -> the open, flocked marker this process holds
_refused: dict[Path, str] = {}  # run dir -> why this process's job may not run there


class RunDirTaken(FerError):
    """The job's run dir belongs to another run: the job runs nothing and writes nothing there."""


def holds_run(run_dir: Path) -> bool:
    return (run_dir / MARKER).exists() or (run_dir / "checkpoints").exists() or (run_dir / "metrics.json").exists()


def occupied_message(run_dir: Path, sweep: bool = False) -> str:
    if sweep:
        return f"{run_dir} already holds a sweep; choose another hydra.sweep.dir (nothing was overwritten)"
    return (
        f"{run_dir} already holds a run; choose another hydra.run.dir (nothing was overwritten), "
        f"or continue it: python train.py ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"
    )


def claim(run_dir: Path, resuming: bool = False):
    """Make run_dir this process's, or raise RunDirTaken. A resume enters its own run's dir, but never while
    another process runs there."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:
        return
    if not resuming and holds_run(run_dir):  # runs made before the marker existed have checkpoints or metrics
        raise RunDirTaken(occupied_message(run_dir))
    run_dir.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | (0 if resuming else os.O_EXCL)
    try:
        fd = os.open(run_dir / MARKER, flags, 0o644)
    except FileExistsError:
        raise RunDirTaken(occupied_message(run_dir)) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDirTaken(f"{run_dir} is in use: another process is running there now (nothing was overwritten)") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{socket.gethostname()} pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
    _held[run_dir] = fd


def release(run_dir: Path):
    fd = _held.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        os.close(fd)  # the marker stays: the dir is still that run's


def require_claim(run_dir: Path):
    """In the job, before it does anything: the dir is this job's (rank 0; other ranks join rank 0's)."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _refused:
        raise RunDirTaken(_refused.pop(run_dir))
    if rank() == 0 and run_dir not in _held:
        raise FerError(f"{run_dir} was not claimed for this run: keep hydra.callbacks.run_dir (fer.runs.rundir.RunDirGuard)")


def record_failure(run_dir: Path, message: str):
    """A job that failed says so in its own dir: error.txt, and train.log where it has one."""
    run_dir = Path(run_dir)
    if run_dir.resolve() not in _held:
        return  # never into a dir that is not this job's
    (run_dir / "error.txt").write_text(message + "\n")
    for handler in logging.root.handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == run_dir.resolve():
            handler.emit(logging.LogRecord("fer", logging.ERROR, __file__, 0, "failed: %s", (message,), None))


def rank() -> int:
    for key in _RANK_ENV:
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def _drop_file_logging(run_dir: Path):
    # The job's log file (opened on its first line, conf/hydra/job_logging/fer.yaml) is the other run's.
    for handler in [h for h in logging.root.handlers if isinstance(h, logging.FileHandler)]:
        if Path(handler.baseFilename).parent == run_dir:
            logging.root.removeHandler(handler)
            handler.close()


def _save_hydra_record(config: DictConfig, run_dir: Path):
    """What Hydra's output_subdir would hold: the job's config, Hydra's and the command line's overrides."""
    out = run_dir / ".hydra"
    out.mkdir(exist_ok=True)
    task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    (out / "config.yaml").write_text(OmegaConf.to_yaml(task))
    (out / "hydra.yaml").write_text(OmegaConf.to_yaml(HydraConfig.instance().cfg))
    (out / "overrides.yaml").write_text(OmegaConf.to_yaml(config.hydra.overrides.task))


def _stops_the_command(hook):
    """Hydra turns an exception in a callback into a warning and runs the job anyway (in a fresh dir, with the
    config as composed): a refusal here must end the command instead, as a user's error (one line, exit 2)."""

    @functools.wraps(hook)
    def run(*args, **kwargs):
        try:
            return hook(*args, **kwargs)
        except Exception as e:
            user = user_error(e)
            if user is None:
                traceback.print_exc()
                sys.exit(1)
            print(f"error: {user}", file=sys.stderr, flush=True)
            sys.exit(2)

    return run


def _continues_a_stored_study(config: DictConfig) -> bool:
    """fer's Optuna sweeper with a stored study goes on in its sweep dir: the study knows its finished
    trials, and each job still claims its own run dir, so nothing of the earlier sweep is written over."""
    sweeper = config.hydra.get("sweeper") or {}
    return str(sweeper.get("_target_", "")).startswith("hydra_plugins.fer_optuna.") and bool(sweeper.get("storage"))


class RunDirGuard(Callback):
    """conf/train.yaml's hydra.callbacks.run_dir: resume composition, the run-dir and sweep-dir claims."""

    @_stops_the_command
    def on_run_start(self, config: DictConfig, **kwargs):
        from fer.runs.resume import resume_into_run

        resume_into_run(config)

    @_stops_the_command
    def on_multirun_start(self, config: DictConfig, **kwargs):
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        if rank() != 0:
            return
        sweep_dir.mkdir(parents=True, exist_ok=True)
        try:
            os.close(os.open(sweep_dir / SWEEP_MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            if not _continues_a_stored_study(config):
                raise FerError(occupied_message(sweep_dir, sweep=True)) from None

    def on_job_start(self, config: DictConfig, **kwargs):
        run_dir = Path(config.hydra.runtime.output_dir).resolve()
        if rank() != 0:
            return  # DDP and SLURM ranks > 0 join the run rank 0 claimed
        from fer.runs.resume import resumes_in

        try:
            # A run resumes into its own dir; so does a sweep's trial that the Optuna sweeper runs again
            # from the last.ckpt it left when the sweep was killed (fer.search.study).
            claim(run_dir, resuming=resumes_in(config, run_dir))
        except RunDirTaken as e:
            _drop_file_logging(run_dir)
            _refused[run_dir] = str(e)
            if config.hydra.mode == RunMode.MULTIRUN:
                with open(Path(str(config.hydra.sweep.dir)) / REFUSED, "a") as f:
                    f.write(f"{run_dir.name}\t{e}\n")
            return
        _save_hydra_record(config, run_dir)

    def on_job_end(self, config: DictConfig, **kwargs):
        release(Path(config.hydra.runtime.output_dir))
