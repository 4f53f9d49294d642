import contextlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from filelock import FileLock  # a dependency of torch's

ROOT = Path(__file__).resolve().parents[1]

# Under pytest-xdist the cores are shared out: each worker's torch (and the commands it starts) gets
# its share of threads, since several workers each using every core run slower than one alone.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _threads = max(1, (os.cpu_count() or 1) // _WORKERS)
    torch.set_num_threads(_threads)
    os.environ["OMP_NUM_THREADS"] = str(_threads)


def pytest_xdist_auto_num_workers(config):
    # `-n auto` (pyproject's addopts): a worker per core, at most 4; each holds FER2013 and torch in memory
    return max(1, min(os.cpu_count() or 1, 4))


# How the tests shrink a training run of the README's defaults: a few batches of 32 faces in one epoch, no
# train-split evaluation, no calibration, 2 batches of 64 faces to validate and test (ten-crop TTA: 10 views each).
SHRINK = {
    "trainer.max_epochs": "1",
    "data.batch_size": "32",
    "trainer.limit_train_batches": "2",
    "trainer.limit_val_batches": "2",
    "trainer.limit_test_batches": "2",
    "eval_train_split": "false",
    "calibrate": "false",
    "data.eval_batch_size": "64",
}


def _shared_dir(tmp_path_factory) -> Path:
    """A folder for the whole test run: under pytest-xdist each worker has its own basetemp, and
    their common parent is where what one worker makes (the parsed data, the tiny run) is found by the others."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _data_path() -> Path | None:
    # The same place train.py looks: $FER2013_PATH, else data/fer2013.csv in the project (or the other form beside it).
    from fer.data.reader import default_data_path
    from fer.errors import FerError

    try:
        return default_data_path(ROOT)
    except FerError:
        return None


@pytest.fixture(scope="session")
def fer2013_path(tmp_path_factory) -> Path:
    """The real FER2013 file, parsed into the session's cache once.
    Under CI=true a missing file fails the test instead of skipping it."""
    p = _data_path()
    if p is None:
        msg = (
            f"FER2013 not found (FER2013_PATH={os.environ.get('FER2013_PATH')!r}, "
            f"otherwise {ROOT / 'data' / 'fer2013.csv'}); see data/README.md"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    with FileLock(_shared_dir(tmp_path_factory) / "fer-cache.lock"):  # one parse, not one per worker or command
        _load_as_train_py_does(p)
    return p


def _load_as_train_py_does(path: Path):
    # The cache key holds the data settings: the ones train.py passes, so its runs find this parse.
    from omegaconf import OmegaConf

    from fer.data.cache import load
    from fer.data.reader import Fer2013, fer2013_settings

    data = OmegaConf.load(ROOT / "conf" / "data" / "fer2013.yaml")
    seed = OmegaConf.load(ROOT / "conf" / "train.yaml").seed
    return load(fer2013_settings(path, on_bad_row=data.on_bad_row, val_fraction=data.val_fraction, seed=seed), Fer2013())


@pytest.fixture(scope="session")
def fer2013(fer2013_path):
    return _load_as_train_py_does(fer2013_path)


@pytest.fixture(scope="session")
def real_faces(fer2013):
    """A few real PrivateTest faces, one per class where possible: (images (N,48,48) uint8, labels)."""
    images, labels = fer2013.split("test")
    picks = [int(np.flatnonzero(labels == c)[0]) for c in range(7)]
    return images[picks], labels[picks]


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    # Parsed-data cache shared by the whole session (its xdist workers and the commands it runs), never the user's ~/.cache.
    with pytest.MonkeyPatch.context() as mp:
        # FER_TEST_CACHE_DIR: a cache kept across test runs (tests/mutation_check.py runs pytest once per mutant)
        mp.setenv("FER_CACHE_DIR", os.environ.get("FER_TEST_CACHE_DIR") or str(_shared_dir(tmp_path_factory) / "fer-cache"))
        yield


@pytest.fixture(scope="session")
def tiny_run(fer2013_path, tmp_path_factory) -> Path:
    """A run dir of the README's default model trained by `python train.py`, shrunk (SHRINK): last.ckpt,
    best-*.ckpt, metrics.json, train.log. Made once for the whole test run (and all its xdist workers)
    and shared: a test that changes a run works on its own copy (shutil.copytree into tmp_path)."""
    shared = _shared_dir(tmp_path_factory)
    run_dir, done = shared / "tiny-run", shared / "tiny-run.done"
    with FileLock(shared / "tiny-run.lock"):
        if not done.exists():
            r = run_cli(
                ["train.py", *(f"{k}={v}" for k, v in SHRINK.items()), f"hydra.run.dir={run_dir}"],
                env={"FER2013_PATH": str(fer2013_path)},
                fresh_process=True,  # the README's first command, exactly as a user starts it
            )
            assert r.returncode == 0, r.stderr[-3000:]
            done.touch()
    return run_dir


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_run) -> Path:
    """The tiny run's best checkpoint (read-only: copy it before changing it)."""
    return next((tiny_run / "checkpoints").glob("best-*.ckpt"))


def write_csv(path: Path, rows: list[tuple]):
    """rows: (label, pixels: iterable or str, usage)"""
    lines = ["emotion,pixels,Usage"]
    for label, pixels, usage in rows:
        pix = pixels if isinstance(pixels, str) else " ".join(str(int(v)) for v in pixels)
        lines.append(f"{label},{pix},{usage}")
    path.write_text("\n".join(lines) + "\n")
    return path


def random_rows(n_per_split: int = 14, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = []
    for usage in ("Training", "PublicTest", "PrivateTest"):
        for i in range(n_per_split):
            rows.append((i % 7, rng.integers(0, 256, 48 * 48), usage))
    return rows


@pytest.fixture
def tiny_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "tiny.csv", random_rows())


def model_net(arch: str = "regularized") -> dict:
    """model.net of conf/model/<arch>.yaml: the network's settings where their defaults live (arch included)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={arch}"])
    return OmegaConf.to_container(cfg.model.net)


def net_kwargs(arch: str = "regularized", **changes) -> dict:
    """What the fer.models class of `arch` is given for conf/model/<arch>.yaml (7 classes), with changes."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        input_size = compose("train", overrides=[f"model={arch}"]).model.input_size
    spec = {k: v for k, v in model_net(arch).items() if k != "arch"}
    return {**spec, "input_size": input_size, "num_classes": 7, **changes}


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    """A fer checkpoint with untrained weights (no training needed): for loading and inference tests."""
    from fer.data.labels import EMOTIONS
    from fer.train.module import EmotionClassifier

    torch.manual_seed(0)
    model = EmotionClassifier(net=model_net("regularized"), class_names=EMOTIONS, image_size=48, input_size=44).eval()
    model.pixel_mean.fill_(0.508)
    model.pixel_std.fill_(0.255)
    path = tmp_path_factory.mktemp("ckpt") / "random.ckpt"
    face = {"align": True, "margin": 0.0, "gamma": "auto"}  # conf/preprocess/default.yaml, as training stores it
    torch.save({"fer": {**model.fer_meta(), "face": face}, "state_dict": model.state_dict()}, path)
    return path


# The project's entry points by the name a user types; run_cli runs these in this process (see _run_in_process).
ENTRY_POINTS = {"train.py": "fer.cli.train", "infer.py": "fer.cli.infer", "export.py": "fer.cli.export"}


def run_cli(args: list[str], cwd: Path = ROOT, env: dict | None = None, timeout: int = 600, fresh_process: bool = False):
    """Run a project command as a user would; returns CompletedProcess with text output.

    `python train.py ...` (infer.py, export.py; by name or by their path in the project) runs the script's own
    main() in this process, with its command line, directory and environment, and its output and exit code
    captured: a new Python would spend ~9 CPU-seconds importing torch and Lightning again. fresh_process=True
    (and DDP, and any other command: -m, -c) starts a real `python`: for what only a process shows (signals,
    launchers that start workers, an installed package), and the README's first command, run exactly as typed."""
    env = {"PYTHONWARNINGS": "ignore", **(env or {})}
    # A process of its own for DDP, whose second rank Lightning starts from this process's command line, and
    # for warnings left on: only a new process shows them as a user sees them (none yet shown, no other filters).
    ddp = any(a.startswith("trainer=ddp") for a in args)
    if not (fresh_process or ddp) and env["PYTHONWARNINGS"] == "ignore" and args and _entry_point(args[0]):
        return _run_in_process(args, Path(cwd), env)
    import subprocess

    # DDP runs one at a time, even under pytest-xdist: two side by side would start four processes on the
    # same cores, and each run's rank 0 picks a free port some seconds before it binds it.
    with FileLock(_DDP_LOCK) if ddp and _DDP_LOCK else contextlib.nullcontext():
        return subprocess.run(
            [sys.executable, *args], cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout
        )


_DDP_LOCK: Path | None = None  # a file lock for the whole test run, set by _one_ddp_run_at_a_time


@pytest.fixture(scope="session", autouse=True)
def _one_ddp_run_at_a_time(tmp_path_factory):
    global _DDP_LOCK
    _DDP_LOCK = _shared_dir(tmp_path_factory) / "ddp.lock"


def _entry_point(script: str) -> str | None:
    """The module behind a project script given by name (train.py) or by its path in the project."""
    path = Path(script)
    if path.name in ENTRY_POINTS and (not path.is_absolute() or path.parent == ROOT):
        return ENTRY_POINTS[path.name]
    return None


def _run_in_process(args: list[str], cwd: Path, env: dict):
    """`python SCRIPT ARGS` as the script's main() in this process. What a command may change for the rest
    of a process (environment, working directory, argv, logging handlers, warning filters, torch's thread
    count) is put back afterwards, so each call starts as a new process would."""
    import importlib
    import io
    import logging
    import subprocess
    import traceback
    import warnings

    main = importlib.import_module(_entry_point(args[0])).main
    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
    root = logging.getLogger()
    saved_handlers, saved_level, threads = root.handlers[:], root.level, torch.get_num_threads()
    from lightning.pytorch.utilities import rank_zero_only

    rank = rank_zero_only.rank  # a Trainer sets it for the process
    os.environ.update(env)
    os.chdir(cwd)
    sys.argv = [str(ROOT / Path(args[0]).name), *args[1:]]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PYTHONWARNINGS=ignore, as run_cli gives a subprocess
            try:
                main()
            except SystemExit as e:
                if isinstance(e.code, int) or e.code is None:
                    code = e.code or 0
                else:  # sys.exit("message"): Python prints it and exits 1
                    print(e.code, file=sys.stderr)
                    code = 1
            except Exception:  # what Python would print before exiting 1
                traceback.print_exc()
                code = 1
    finally:
        for handler in root.handlers:
            if handler not in saved_handlers:
                handler.close()  # the run's log file
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        torch.set_num_threads(threads)
        rank_zero_only.rank = rank
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
