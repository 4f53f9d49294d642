"""The run's callbacks and loggers, built from their config groups (conf/callbacks/, conf/logger/):
one entry per object, named, each a `_target_` and its arguments, as lightning-hydra-template does.
An entry set to null is left out (`callbacks.shard_report=null`), so any one can be switched off
without a file of its own."""

from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from fer.errors import FerError


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    """cfg: the `callbacks` group (name -> config); [] when there is none."""
    return _instantiate_all(cfg, "callbacks", Callback)


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    """cfg: the `logger` group (name -> config); [] when there is none (`~logger`: no logger)."""
    return _instantiate_all(cfg, "logger", Logger)


def _instantiate_all(cfg: DictConfig | None, group: str, kind: type) -> list:
    built = []
    for name, entry in (cfg or {}).items():
        if entry is None:
            continue
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            raise FerError(
                f"{group}.{name} is not a {kind.__name__} config (a mapping with a _target_); "
                f"see conf/{group}/ for the form, or set it to null to leave it out"
            )
        obj = instantiate(entry)
        if not isinstance(obj, kind):
            raise FerError(f"{group}.{name}: {entry._target_} is not a Lightning {kind.__name__}")
        built.append(obj)
    return built
