"""The settings a user can type, typed: one dataclass per config node, one `setting` per key (its
type, range or choices), checked once when train.py, infer.py or export.py starts.

A bad value is one line naming the key, the value and what is allowed (exit 2), before anything
runs: `seed=abc: must be a whole number, 0 or more`. Nodes that users legitimately extend (the
Trainer takes any Lightning argument: `+trainer.profiler=simple`) are checked for the keys listed
here and left open for the rest; keys Hydra does not know are Hydra's to refuse (unless added with +).
"""

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fer.errors import FerError

# Lightning's precision values that train here; "auto" is fer.train.precision's choice. Lightning's "-true" half
# precisions and 64 are refused: the data, the loss and BatchNorm of these models run in fp32 or mixed only.
PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "16-mixed")


def setting(kind: str, *, lo=None, hi=None, lo_open=False, hi_open=False, choices=(), null=False, what: str = "", note: str = ""):
    """A key's rule. kind: int, number, bool, str, choice, any. lo/hi bound numbers (open: excluded); what: the unit;
    note: why a value Lightning or torch would take is refused."""
    rule = dict(kind=kind, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, choices=choices, null=null, what=what, note=note)
    return field(default=None, metadata=rule)


# --- train.py ----------------------------------------------------------------------------------------------
@dataclass
class Preprocess:
    align: Any = setting("bool")
    margin: Any = setting("number", lo=0, hi=1)
    gamma: Any = setting("number", lo=0, lo_open=True, choices=("auto",), null=True, what="a gamma")


@dataclass
class Trainer:
    max_epochs: Any = setting(
        "int", lo=1, what="epochs", note="Lightning's -1 (no end) is refused: the learning-rate schedule needs the run's length"
    )
    min_epochs: Any = setting("int", lo=0, null=True)
    precision: Any = setting(
        "choice", choices=PRECISIONS, note="half precision throughout (-true) and 64 do not train these models"
    )
    num_nodes: Any = setting("int", lo=1)
    limit_train_batches: Any = setting("number", lo=0, lo_open=True, null=True, what="batches (a whole number) or a fraction")
    limit_val_batches: Any = setting("number", lo=0, null=True, what="batches (a whole number) or a fraction")
    limit_test_batches: Any = setting("number", lo=0, lo_open=True, null=True, what="batches (a whole number) or a fraction")
    check_val_every_n_epoch: Any = setting("int", lo=1, null=True)
    log_every_n_steps: Any = setting("int", lo=1)
    num_sanity_val_steps: Any = setting("int", lo=-1)
    gradient_clip_val: Any = setting("number", lo=0, null=True)
    accumulate_grad_batches: Any = setting("int", lo=1)
    fast_dev_run: Any = setting("bool")
    deterministic: Any = setting("bool")
    enable_progress_bar: Any = setting("bool")
    enable_model_summary: Any = setting("bool")
    sync_batchnorm: Any = setting("bool")


@dataclass
class Model:
    input_size: Any = setting("int", lo=1, what="pixels")
    label_smoothing: Any = setting("number", lo=0, hi=1, hi_open=True)
    channels_last: Any = setting("bool")
    tta: Any = setting("choice", choices=("none", "flip", "ten_crop"))


@dataclass
class Data:
    image_size: Any = setting("int", lo=1, null=True, what="pixels")
    batch_size: Any = setting("int", lo=1, what="faces")
    eval_batch_size: Any = setting("int", lo=1, what="faces")
    on_bad_row: Any = setting("choice", choices=("error", "skip"))
    val_fraction: Any = setting("number", lo=0, hi=1, lo_open=True, hi_open=True)
    test_fraction: Any = setting("number", lo=0, hi=1, lo_open=True, hi_open=True)
    faces: Any = setting("choice", choices=("auto", "detect", "whole"))
    balanced_sampling: Any = setting("bool")
    use_cache: Any = setting("bool")


@dataclass
class Train:
    seed: Any = setting("int", lo=0, hi=2**32 - 1, what="a seed")
    train: Any = setting("bool")
    ckpt_path: Any = setting("str", null=True, what="a path")
    init_from: Any = setting("str", null=True, what="a path")
    eval_train_split: Any = setting("bool")
    calibrate: Any = setting("bool")
    preprocess: Preprocess = field(default_factory=Preprocess)
    trainer: Trainer = field(default_factory=Trainer)
    model: Model = field(default_factory=Model)
    data: Data = field(default_factory=Data)


# --- infer.py ----------------------------------------------------------------------------------------------
@dataclass
class Tracker:
    smooth: Any = setting("int", lo=1, what="frames")
    min_iou: Any = setting("number", lo=0, hi=1)
    max_missed: Any = setting("int", lo=0, what="frames")
    reach: Any = setting("number", lo=0)
    min_match: Any = setting("number", lo=-1, hi=1)


@dataclass
class Draw:
    bars: Any = setting("bool")
    uncertain_below: Any = setting("number", lo=0, hi=1)
    show_fps: Any = setting("bool")
    show_ids: Any = setting("bool")


@dataclass
class Haar:
    scale_factor: Any = setting("number", lo=1, lo_open=True)
    min_neighbors: Any = setting("int", lo=0)
    min_face: Any = setting("number", lo=0, hi=1, lo_open=True, what="a fraction of the frame's shorter side")
    work_px: Any = setting("int", lo=1, what="pixels")
    equalize: Any = setting("bool")
    reach: Any = setting("number", lo=0)


@dataclass
class RetinaFace:
    scale: Any = setting("number", lo=0, hi=1, lo_open=True)
    still_scale: Any = setting("number", lo=0, hi=1, lo_open=True)
    # threshold: RetinaFaceDetector refuses a bad one itself, saying what a face score is
    nms: Any = setting("number", lo=0, hi=1)
    min_face: Any = setting("int", lo=0, what="frame pixels")


DETECTORS = {"haar": Haar, "retinaface": RetinaFace}  # by the option's name in conf/detector/; others are not checked here


@dataclass
class Infer:
    ckpt_path: Any = setting("str", null=True, what="a path")  # null: app.py says which file to give
    backend: Any = setting("choice", choices=("auto", "torch", "onnx"))
    output: Any = setting("str", null=True, what="a path")
    predictions: Any = setting("str", null=True, what="a path")
    display: Any = setting("bool", choices=("auto",))
    overwrite: Any = setting("bool")
    detect: Any = setting("bool")
    max_frames: Any = setting("int", lo=1, null=True, what="frames")
    threads: Any = setting("int", lo=1, what="threads")
    tta: Any = setting("choice", choices=("none", "flip", "ten_crop"))
    detect_every: Any = setting("int", lo=1, what="frames")
    preprocess: Preprocess = field(default_factory=Preprocess)
    tracker: Tracker = field(default_factory=Tracker)
    draw: Draw = field(default_factory=Draw)


# --- serve.py: infer.py's model and face settings, and these ----------------------------------------------
@dataclass
class Serve:
    host: Any = setting("str", what="an address")
    port: Any = setting("int", lo=1, hi=65535, what="a TCP port")
    workers: Any = setting("int", lo=1, what="processes")
    concurrency: Any = setting("int", lo=1, what="images at once")
    max_upload_mb: Any = setting("number", lo=0, lo_open=True, what="megabytes")
    max_pixels: Any = setting("int", lo=1, what="pixels")
    uncertain_below: Any = setting("number", lo=0, hi=1)


# --- export.py ---------------------------------------------------------------------------------------------
@dataclass
class Export:
    ckpt_path: Any = setting("str", null=True, what="a path")
    output: Any = setting("str", null=True, what="a path")
    overwrite: Any = setting("bool")
    opset: Any = setting("int", lo=13, hi=20)


def check_train(cfg: DictConfig, choices: Mapping | None = None):
    check(cfg, Train)


def check_infer(cfg: DictConfig, choices: Mapping | None = None):
    check(cfg, Infer)
    detector = DETECTORS.get(str((choices or {}).get("detector")))
    if detector is not None and "detector" in cfg:
        check(cfg.detector, detector, "detector.")


def check_serve(cfg: DictConfig, choices: Mapping | None = None):
    check_infer(cfg, choices)
    check(cfg, Serve)


def check_export(cfg: DictConfig):
    check(cfg, Export)


def check(cfg: DictConfig, schema, prefix: str = ""):
    """Every key of `schema` that `cfg` has, against its rule; the first bad one is a FerError."""
    for f in dataclasses.fields(schema):
        if f.name not in cfg:
            continue
        key = prefix + f.name
        try:
            value = OmegaConf.select(cfg, f.name, throw_on_resolution_failure=True)
        except Exception as e:
            raise FerError(f"{key}: cannot be resolved ({str(e).splitlines()[0]})") from None
        if dataclasses.is_dataclass(f.type):
            if isinstance(value, DictConfig):
                check(value, f.type, key + ".")
            elif value is not None:
                raise FerError(
                    f"{key}={value}: must be a group of settings ({', '.join(x.name for x in dataclasses.fields(f.type))})"
                )
            continue
        problem = _problem(value, f.metadata)
        if problem:
            raise FerError(f"{key}={_shown(value)}: {problem}")


def _problem(value, rule) -> str | None:
    """None when `value` follows `rule`; else what is allowed."""
    kind, choices, null = rule["kind"], rule["choices"], rule["null"]
    if value is None:
        return None if null else f"must be set ({_allowed(rule)})"
    if isinstance(value, str) and value in choices:
        return None
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value),
        "str": isinstance(value, str),
        "choice": str(value) in map(str, choices),
        "any": True,
    }[kind]
    if not ok:
        return f"must be {_allowed(rule)}"
    if kind in ("int", "number") and not _in_range(value, rule):
        return f"must be {_allowed(rule)}"
    return None


def _in_range(v, rule) -> bool:
    lo, hi = rule["lo"], rule["hi"]
    if lo is not None and (v < lo or (rule["lo_open"] and v == lo)):
        return False
    return hi is None or not (v > hi or (rule["hi_open"] and v == hi))


def _allowed(rule) -> str:
    kind, lo, hi = rule["kind"], rule["lo"], rule["hi"]
    if kind == "choice":
        return "one of " + ", ".join(map(str, rule["choices"])) + (f"; {rule['note']}" if rule["note"] else "")
    text = {"bool": "true or false", "int": "a whole number", "number": "a number", "str": "text", "any": "anything"}[kind]
    if kind in ("int", "number"):
        if lo is not None and hi is not None and not rule["lo_open"] and not rule["hi_open"]:
            text += f" from {lo} to {hi}"
        else:
            low = None if lo is None else f"{'above' if rule['lo_open'] else 'at least'} {lo}"
            high = None if hi is None else f"{'below' if rule['hi_open'] else 'at most'} {hi}"
            text += " " + " and ".join(x for x in (low, high) if x) if (low or high) else ""
        if rule["what"]:
            text += f" ({rule['what']})"
    extra = [*(repr(c) if not isinstance(c, str) else c for c in rule["choices"])] if kind != "choice" else []
    if rule["null"]:
        extra.append("null")
    text += ", or " + " or ".join(extra) if extra else ""
    return text + (f"; {rule['note']}" if rule["note"] else "")


def _shown(value) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
