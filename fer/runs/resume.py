"""`python train.py ckpt_path=RUN/checkpoints/last.ckpt` continues that run, in RUN, with its own config.

Inside the Hydra job (fer.runs.rundir.RunDirGuard.on_run_start, before Hydra makes the job's dir): the
config is composed afresh from conf/ with the run's config groups and the overrides typed now, and
the run's saved settings (RUN/.hydra/config.yaml) are laid over it, except what is typed now. A run
folder is a file anyone can hand over, so from it come only settings: never Hydra's own, never what
builds objects (`_target_` and the other `_..._` keys) and never where files go (a callback's
dirpath, a logger's save_dir): those are conf/'s, and a saved value that differs is refused.
"""

import re
import sys
import warnings
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from fer.errors import FerError, first_line
from fer.paths import CONF_DIR, in_project

# Keys that name where files go (ModelCheckpoint, loggers, Trainer, launchers): never taken from a run folder.
FILE_KEYS = frozenset(
    {"dirpath", "filename", "save_dir", "name", "version", "log_dir", "sub_dir", "default_root_dir", "submitit_folder"}
)
_RESOLVER = re.compile(r"\$\{\s*[\w.]+\s*:")  # ${oc.create:...}, ${oc.env:...}: an interpolation that calls code
_OPTION = re.compile(r"[A-Za-z0-9_][\w-]*")


def resuming(config: DictConfig) -> bool:
    return bool(config.get("train")) and bool(config.get("ckpt_path"))


def resumes_in(config: DictConfig, run_dir: Path) -> bool:
    """Whether this job continues the run whose dir is run_dir (the one dir a job may enter that holds a run)."""
    if not resuming(config):
        return False
    ckpt = Path(str(config.ckpt_path)).expanduser().resolve()
    return ckpt == last_checkpoint(Path(run_dir).resolve())


def last_checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.ckpt"


def run_dir_of(ckpt: Path) -> Path | None:
    """The run dir a checkpoint lies in (RUN/checkpoints/NAME.ckpt, RUN/.hydra/config.yaml), or None."""
    run_dir = ckpt.parent.parent
    if ckpt.parent.name == "checkpoints" and (run_dir / ".hydra" / "config.yaml").is_file():
        return run_dir
    return None


def resume_into_run(config: DictConfig):
    """The job's config (the `config` Hydra composed, changed in place) for a resume: the run's own, in its dir."""
    if not resuming(config):
        return
    ckpt = Path(str(config.ckpt_path)).expanduser().resolve()
    run_dir = run_dir_of(ckpt)
    if run_dir is None:
        return  # a checkpoint outside a run dir: resumed with the config as given, in a new run dir
    if ckpt != last_checkpoint(run_dir):
        raise FerError(
            f"{ckpt} is not where its run left off: continue the run with ckpt_path={last_checkpoint(run_dir)}, "
            f"start a new run from these weights with init_from={ckpt}, or evaluate them with train=false ckpt_path={ckpt}"
        )
    given_dir = _typed_value(config.hydra.overrides.hydra, "hydra.run.dir")
    if given_dir is not None and Path(str(given_dir)).expanduser().resolve() != run_dir:
        raise FerError(f"a resume continues in its own run dir {run_dir}: drop hydra.run.dir={given_dir}")
    typed = [str(o) for o in config.hydra.overrides.task]
    groups = _run_groups(run_dir)
    typed_groups = [o for o in _parse(typed, "typed") if _is_group(o.key_or_group)]
    for o in typed_groups:
        if groups.get(o.key_or_group) != o.input_line.split("=", 1)[1]:
            raise FerError(
                f"{o.input_line}: a resume keeps the run's config groups "
                f"({groups.get(o.key_or_group, 'the default')}); to train with another, start a new run"
            )
    group_lines = [f"{k}={v}" for k, v in groups.items() if k not in {o.key_or_group for o in typed_groups}]
    composed = GlobalHydra.instance().hydra.compose_config(
        config.hydra.job.config_name, [*group_lines, *typed], run_mode=RunMode.RUN
    )
    task = OmegaConf.to_container(OmegaConf.masked_copy(composed, [k for k in composed if k != "hydra"]))
    saved = _load(run_dir / ".hydra" / "config.yaml")
    refused = []
    _overlay(task, saved, {o.key_or_group for o in _parse(typed, "typed")}, "", refused)
    if refused:
        raise FerError(
            f"not resuming: {run_dir / '.hydra' / 'config.yaml'} sets what a resume takes from conf/ alone: "
            f"{'; '.join(refused)}. Nothing was run"
        )
    with read_write(config), open_dict(config):
        for key in [k for k in config if k != "hydra"]:
            del config[key]
        for key, value in task.items():
            config[key] = value
        config.hydra.run.dir = str(run_dir)
        config.hydra.runtime.choices = composed.hydra.runtime.choices
        config.hydra.overrides.task = [*group_lines, *typed]  # what the next resume finds in .hydra/overrides.yaml
    # Lightning's notice that checkpoints/ is not empty is what a resume expects.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    print(f"resuming {run_dir} with its saved config and: {' '.join(typed)}", file=sys.stderr, flush=True)


def check_init_from(cfg: DictConfig):
    """A warm-started run compares itself with its starting point at the end: that file must still be there."""
    init_from = cfg.get("init_from")
    if init_from and not in_project(str(init_from)).is_file():
        raise FerError(
            f"this run started from init_from={init_from}, which is gone, and compares itself with it at the end: "
            f"put it back, or resume without the comparison: python train.py ckpt_path={cfg.ckpt_path} init_from=null"
        )


def _typed_value(lines, key: str):
    found = None
    for o in _parse([str(x) for x in lines], "typed"):
        if o.key_or_group == key and not o.is_delete():
            found = o.value()
    return found


def _parse(lines: list[str], what: str):
    parser = OverridesParser.create()
    try:
        return parser.parse_overrides(lines)
    except Exception as e:
        raise FerError(f"not resuming: the {what} overrides cannot be read ({first_line(e)})") from None


def _is_group(key: str) -> bool:
    return "/" not in key and "@" not in key and (CONF_DIR / key).is_dir()


def _run_groups(run_dir: Path) -> dict[str, str]:
    """The run's config groups (model=baseline, callbacks=[ema,early_stopping]), as its command line chose them:
    options of conf/'s groups only."""
    path = run_dir / ".hydra" / "overrides.yaml"
    lines = _load(path) if path.is_file() else []
    if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
        raise FerError(f"not resuming: {path} is not a list of overrides as Hydra writes it")
    groups = {}
    for o in _parse(lines, f"{path}'s"):
        key = o.key_or_group
        if not _is_group(key) or o.is_delete():
            continue
        options = o.value() if isinstance(o.value(), list) else [o.value()]
        if o.package is not None or not all(
            isinstance(v, str) and _OPTION.fullmatch(v) and (CONF_DIR / key / f"{v}.yaml").is_file() for v in options
        ):
            raise FerError(f"not resuming: {path} asks for {o.input_line}, which is not an option of conf/{key}/")
        groups[key] = o.input_line.split("=", 1)[1]
    return groups


def _load(path: Path):
    try:
        return OmegaConf.to_container(OmegaConf.load(path))
    except Exception as e:
        raise FerError(f"not resuming: {path} cannot be read ({first_line(e)})") from None


def _overlay(base: dict, saved: dict, typed: set[str], prefix: str, refused: list[str]):
    """base with saved's settings laid over it, in place; what saved may not set goes to `refused`."""
    if not isinstance(saved, dict):
        refused.append(f"{prefix or 'the config'} (not a mapping)")
        return
    for key, value in saved.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if any(path == t or path.startswith(t + ".") or t.startswith(path + ".") and not isinstance(value, dict) for t in typed):
            continue  # typed now: the command line wins
        if not prefix and key == "hydra":
            refused.append("hydra (Hydra's own settings)")
        elif _reserved(key) or key in FILE_KEYS:
            if base.get(key) != value:
                refused.append(f"{path}={value} ({'builds objects' if _reserved(key) else 'names where files go'})")
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            _overlay(base[key], value, typed, path, refused)
        elif base.get(key) != value:
            why = _unsafe(value)
            if why:
                refused.append(f"{path}={value} ({why})")
            else:
                base[key] = value
    for key in [k for k in base if k not in saved and not _reserved(k) and k not in FILE_KEYS]:
        path = f"{prefix}.{key}" if prefix else str(key)
        if not any(path == t or path.startswith(t + ".") for t in typed):
            del base[key]  # the run deleted it (~model.scheduler)


def _reserved(key) -> bool:
    key = str(key)
    return len(key) > 2 and key.startswith("_") and key.endswith("_")


def _unsafe(value) -> str | None:
    if isinstance(value, str) and _RESOLVER.search(value):
        return "an interpolation that calls a resolver"
    if isinstance(value, dict):
        for k, v in value.items():
            if _reserved(k):
                return "builds objects"
            if k in FILE_KEYS:
                return "names where files go"
            why = _unsafe(v)
            if why:
                return why
    if isinstance(value, list):
        return next((w for w in map(_unsafe, value) if w), None)
    return None
