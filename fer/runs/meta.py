"""What a model carries besides its weights: one typed object, ModelMeta, read and written here alone,
for a checkpoint's "fer" entry and an export's metadata_props alike.

torch-free: the ONNX backend reads exports through it too. Checkpoints written before the data set
came from the config hold no "image_size" (they were all FER2013's 48 px faces) and keep their face
settings under "preprocess", the group's old name; they are read as they are, never rewritten.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from fer.errors import FerError

FORMAT = 1  # bump when what a checkpoint's "fer" entry holds changes
IMAGE_SIZE_OF_OLDER_FILES = 48  # every checkpoint without "image_size" was trained on FER2013's 48x48 faces


@dataclass(frozen=True)
class ModelMeta:
    net: dict  # the architecture spec: arch and its settings (fer.models.build_net(**net))
    class_names: tuple[str, ...]  # in label order
    mean: float  # the normalisation the weights expect
    std: float
    input_size: int  # the network's input: a centre crop of image_size
    image_size: int = IMAGE_SIZE_OF_OLDER_FILES  # the side of the square grey faces it takes
    face: dict | None = None  # how inference prepares a face (conf/face): align, margin, gamma; None: not stored
    history: tuple = ()  # one row per epoch of its training
    temperature: dict = field(default_factory=dict)  # TTA mode -> the temperature fitted on the validation split
    format: int = FORMAT

    @property
    def arch(self) -> str:
        return self.net["arch"]

    def temperature_of(self, tta: str) -> float:
        # Models from before calibration, or trained with calibrate=false, have none: 1 leaves them as trained.
        return float(self.temperature.get(tta, 1.0))

    def to_dict(self) -> dict:
        """Plain Python types only, so a checkpoint loads with torch's weights_only unpickler."""
        d = dataclasses.asdict(self)
        d["class_names"], d["history"] = list(self.class_names), list(self.history)
        return d

    @classmethod
    def from_dict(cls, meta, source) -> ModelMeta:
        """A checkpoint's "fer" entry (or an export's metadata) -> ModelMeta; FerError naming `source` and
        the problem when it is not one this fer can use."""
        problem = _problem(meta)
        if problem:
            raise FerError(f"{source} is not a usable fer checkpoint: {problem}")
        if meta.get("format", 0) > FORMAT:
            raise FerError(f"{source} was written by a newer fer (format {meta['format']}); upgrade fer")
        face = meta["face"] if "face" in meta else meta.get("preprocess")
        return cls(
            net=dict(meta["net"]),
            class_names=tuple(meta["class_names"]),
            mean=float(meta["mean"]),
            std=float(meta["std"]),
            input_size=int(meta["input_size"]),
            image_size=int(meta.get("image_size", IMAGE_SIZE_OF_OLDER_FILES)),
            face=dict(face) if face is not None else None,
            history=tuple(meta.get("history") or ()),
            temperature=dict(meta.get("temperature") or {}),
            format=int(meta.get("format", FORMAT)),
        )

    def replace(self, **changes) -> ModelMeta:
        return dataclasses.replace(self, **changes)


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _pixels(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


def _problem(meta) -> str | None:
    """What is wrong with a "fer" entry for the code that reads it, or None."""
    if not isinstance(meta, Mapping):
        return f"its 'fer' entry is a {type(meta).__name__}, not a mapping"
    required = {
        "net": lambda v: isinstance(v, Mapping) and isinstance(v.get("arch"), str),
        "class_names": lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(c, str) for c in v),
        "mean": _number,
        "std": lambda v: _number(v) and v > 0,
        "input_size": _pixels,
    }
    optional = {
        "format": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "face": lambda v: v is None or isinstance(v, Mapping),
        "preprocess": lambda v: v is None or isinstance(v, Mapping),
        "image_size": _pixels,
        "history": lambda v: isinstance(v, (list, tuple)),
        "temperature": lambda v: isinstance(v, Mapping) and all(_number(t) and t > 0 for t in v.values()),
    }
    for key, ok in {**required, **optional}.items():
        if key not in meta:
            if key in required:
                return f"its 'fer' entry lacks {key!r}"
        elif not ok(meta[key]):
            return f"its 'fer' entry has an invalid {key!r} ({str(meta[key])[:80]})"
    image_size = meta.get("image_size", IMAGE_SIZE_OF_OLDER_FILES)
    if meta["input_size"] > image_size:
        return f"its input_size {meta['input_size']} is larger than its image_size {image_size}"
    return None
