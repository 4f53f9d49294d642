"""Checkpoints that rebuild their model alone: besides the weights, a "fer" entry holds the
architecture spec, class names, image size, normalisation statistics, input size and face settings,
all plain Python types, so loading needs neither Hydra nor unpickling of arbitrary objects."""

import pickle
from pathlib import Path

import torch
from torch import nn

from fer.errors import FerError, first_line
from fer.models import build_net
from fer.runs.atomic import replace_atomically
from fer.runs.meta import ModelMeta

NOT_OURS = "is not a checkpoint this project wrote (or not a trusted one)"


def unreadable(path: Path, e: Exception) -> str:
    """What a file torch.load(weights_only=True) refused is, in one line. Never torch's own text: it ends
    in advice to load with weights_only=False, which runs whatever code the file holds."""
    if path.stat().st_size == 0:
        return f"{path} is empty (0 bytes), not a checkpoint"
    with open(path, "rb") as f:
        head = f.read(512)
    if all(c >= 32 or c in b"\t\n\r" for c in head):  # no control bytes: text (a zip or a pickle starts with some)
        return f"{path} {NOT_OURS}: it is a text file; pass the .ckpt written by `python train.py`"
    if isinstance(e, pickle.UnpicklingError) and "global" in str(e).lower():  # "Unsupported global: GLOBAL module.Class"
        what = "it holds Python objects besides weights and plain values, which are never loaded (they could run code)"
    else:
        what = f"torch cannot read it as weights ({type(e).__name__})"
    return f"{path} {NOT_OURS}: {what}; pass the .ckpt written by `python train.py`"


def read_checkpoint(path: str | Path) -> dict:
    """The whole checkpoint (weights, training state, "fer" meta as stored); its meta checked by ModelMeta."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FerError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise FerError(f"cannot read {path}: permission denied") from None
    except Exception as e:  # torch's safe unpickler raises many kinds (IndexError on an empty file, KeyError on text...)
        raise FerError(unreadable(path, e)) from None
    if not isinstance(ckpt, dict) or "fer" not in ckpt or "state_dict" not in ckpt:
        raise FerError(f"{path} {NOT_OURS} (no 'fer' entry); train one with `python train.py`")
    if not isinstance(ckpt["state_dict"], dict):
        raise FerError(f"{path} is not a usable fer checkpoint: its state_dict is not a mapping")
    ModelMeta.from_dict(ckpt["fer"], path)  # refuses, in one line, what the code that reads it could not use
    return ckpt


def read_meta(path: str | Path) -> ModelMeta:
    return ModelMeta.from_dict(read_checkpoint(path)["fer"], Path(path).expanduser())


def net_weights(state_dict: dict) -> dict:
    # The LightningModule keeps the network under `net.`; slim checkpoints use the same keys.
    return {k[len("net.") :]: v.float() for k, v in state_dict.items() if k.startswith("net.")}


def load_network(path: str | Path) -> tuple[nn.Module, ModelMeta]:
    """path -> (the bare network in eval mode, what the checkpoint says about it: fer.runs.meta.ModelMeta)."""
    ckpt = read_checkpoint(path)
    meta = ModelMeta.from_dict(ckpt["fer"], path)
    net = build_net(**meta.net)
    try:
        net.load_state_dict(net_weights(ckpt["state_dict"]))
    except RuntimeError as e:
        raise FerError(f"{path}: weights do not fit the stored architecture {meta.arch!r} ({mismatch(e)})") from None
    return net.eval(), meta


def mismatch(e: RuntimeError) -> str:
    """load_state_dict's many-line complaint -> its first problem, one line."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return first_line(lines[1] if len(lines) > 1 else lines[0] if lines else "size mismatch", 200)


def weight_differences(stored: dict, wanted: dict, limit: int = 3) -> str:
    """Where two state dicts differ, one line: tensors of another shape, then ones only one side has."""
    shapes = [
        f"{k} {tuple(stored[k].shape)} in the checkpoint, {tuple(wanted[k].shape)} here"
        for k in wanted
        if k in stored and stored[k].shape != wanted[k].shape
    ]
    shapes += [f"{k} missing from the checkpoint" for k in wanted if k not in stored]
    shapes += [f"{k} only in the checkpoint" for k in stored if k not in wanted]
    more = f" and {len(shapes) - limit} more" if len(shapes) > limit else ""
    return "; ".join(shapes[:limit]) + more


def _save_atomically(ckpt: dict, dst: Path):
    # An interrupted save never leaves half a checkpoint (fer.runs.atomic).
    replace_atomically(dst, lambda f: torch.save(ckpt, f))


def save_slim(src: str | Path, dst: str | Path, half: bool = True, meta_updates: dict | None = None) -> Path:
    """A small inference-only copy of a training checkpoint: weights (fp16 by default) and meta."""
    ckpt = read_checkpoint(src)
    weights = {
        k: (v.half() if half and v.is_floating_point() else v) for k, v in ckpt["state_dict"].items() if k.startswith("net.")
    }
    meta = ModelMeta.from_dict(ckpt["fer"], src).replace(**(meta_updates or {}))
    dst = Path(dst)
    _save_atomically({"fer": meta.to_dict(), "state_dict": weights}, dst)
    return dst


def update_meta(path: str | Path, **changes) -> None:
    """Change a checkpoint's "fer" meta in place (the temperatures fitted after training); the rest stays."""
    ckpt = read_checkpoint(path)
    ckpt["fer"] = ModelMeta.from_dict(ckpt["fer"], path).replace(**changes).to_dict()
    _save_atomically(ckpt, Path(path))
