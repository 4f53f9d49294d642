"""A sweep job's dir name: its number and the values its sweep varies, `3_dropout-0.35_lr-0.05`.

Hydra's own name (hydra.job.override_dirname) holds every override typed, with '=' and ',': long, and a
path that `ckpt_path=` cannot take unquoted (Hydra reads ',' as a sweep, a second '=' as an error). A
job's full overrides stay in its .hydra/overrides.yaml and in the sweep's summary.md.

Which keys a sweep varies only the sweep as a whole knows (a job's config holds its own values), so
SweptKeys, a Hydra callback (conf/train.yaml), writes them down when the sweep starts, in the
environment: jobs a launcher starts in other processes (joblib, SLURM) inherit it.
"""

import os
import re

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

SWEPT_ENV = "FER_SWEPT_KEYS"  # the swept keys, comma-separated
RESOLVER = "fer.job_subdir"  # conf/train.yaml: hydra.sweep.subdir: ${fer.job_subdir:${hydra.job.num},${hydra.overrides.task}}
MAX_LABEL = 80  # characters after the job's number
MAX_VALUE = 24
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")  # what is left reads as one plain value in a Hydra override, and in any shell


def swept_keys(task_overrides, params=None) -> list[str]:
    """The keys given a sweep (a,b  range()  interval()  choice()  glob()) in hydra.sweeper.params or on the
    command line, which wins where both name a key (a value typed there fixes what the params sweep)."""
    lines = [f"{k}={v}" for k, v in (params or {}).items()] + [str(o) for o in task_overrides]
    try:
        overrides = OverridesParser.create().parse_overrides(lines)
    except Exception:
        return []  # Hydra refuses such a command line itself, in its own words
    swept = {}
    for o in overrides:
        swept[o.key_or_group] = o.is_sweep_override()
    return [key for key, is_swept in swept.items() if is_swept]


def job_subdir(num, overrides, keys: list[str] | None = None) -> str:
    """`num_name-value_name-value` for the swept keys among the job's overrides; `num` alone when none is."""
    keys = [k for k in os.environ.get(SWEPT_ENV, "").split(",") if k] if keys is None else keys
    values = {}
    for o in OverridesParser.create().parse_overrides([str(x) for x in overrides]):
        if o.key_or_group in keys and not o.is_delete():
            values[o.key_or_group] = o
    names = _short_names([k for k in keys if k in values])
    label = ""
    for key, name in names.items():
        part = f"{name}-{_short_value(values[key])}"
        if len(label) + len(part) + 1 > MAX_LABEL:
            break  # whole entries or none: a number cut short would read as another number
        label = f"{label}_{part}" if label else part
    return f"{num}_{label}" if label else str(num)


def _short_names(keys: list[str]) -> dict[str, str]:
    """Each key by its last part (dropout), or by as many last parts as tell it from the others (net.dropout)."""
    parts = {k: k.replace("/", ".").split(".") for k in keys}
    names = {}
    for key, own in parts.items():
        for depth in range(1, len(own) + 1):
            name = ".".join(own[-depth:])
            if all(".".join(other[-depth:]) != name for k, other in parts.items() if k != key):
                break
        names[key] = _UNSAFE.sub("-", name)
    return names


def _short_value(override) -> str:
    value = override.value()
    if isinstance(value, float):
        return f"{value:.4g}"  # an Optuna trial's 0.023456789... as 0.02346: the job's number keeps names apart
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    text = _UNSAFE.sub("-", override.get_value_element_as_str()).strip("-.")  # [16,32] -> 16-32, a/b c -> a-b-c
    return text[:MAX_VALUE] or "-"


class SweptKeys(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs):
        params = OmegaConf.to_container(config.hydra.sweeper.params) if config.hydra.sweeper.get("params") else None
        os.environ[SWEPT_ENV] = ",".join(swept_keys(config.hydra.overrides.task, params))


# Registered where it is defined, on import: Hydra imports this module when it builds the callbacks above,
# at the start of every command, and so does any process a launcher unpickles them in: always before a
# job's dir is named.
if not OmegaConf.has_resolver(RESOLVER):
    OmegaConf.register_new_resolver(RESOLVER, job_subdir)
