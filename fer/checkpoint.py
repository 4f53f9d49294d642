"""Checkpoints that rebuild their model alone: besides the weights, a "fer" entry holds the
architecture spec, class names, normalisation statistics, input size and preprocessing settings,
all plain Python types, so loading needs neither Hydra nor unpickling of arbitrary objects."""

import os
from pathlib import Path

import torch
from torch import nn

from fer.errors import FerError
from fer.models import build_net

FORMAT = 1


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FerError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's safe unpickler raises many kinds (IndexError on an empty file, KeyError on text...)
        raise FerError(f"{path} is not a fer checkpoint (could not read it: {str(e).splitlines()[0][:200]})") from None
    if not isinstance(ckpt, dict) or "fer" not in ckpt or "state_dict" not in ckpt:
        raise FerError(f"{path} is not a fer checkpoint (no 'fer' entry); train one with `python train.py`")
    if ckpt["fer"].get("format", 0) > FORMAT:
        raise FerError(f"{path} was written by a newer fer (format {ckpt['fer']['format']}); upgrade fer")
    return ckpt


def net_weights(state_dict: dict) -> dict:
    # The LightningModule keeps the network under `net.`; slim checkpoints use the same keys.
    return {k[len("net."):]: v.float() for k, v in state_dict.items() if k.startswith("net.")}


def load_classifier(path: str | Path) -> tuple[nn.Module, dict]:
    """path -> (network in eval mode, meta: class_names, mean, std, input_size, preprocess, net, ...)"""
    ckpt = read_checkpoint(path)
    meta = ckpt["fer"]
    net = build_net(**meta["net"])
    try:
        net.load_state_dict(net_weights(ckpt["state_dict"]))
    except RuntimeError as e:
        raise FerError(f"{path}: weights do not fit the stored architecture {meta['net'].get('arch')!r} ({str(e)[:200]})") from None
    return net.eval(), meta


def _save_atomically(ckpt: dict, dst: Path):
    # Written beside the target and renamed: an interrupted save never leaves half a checkpoint.
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(f".{dst.name}.{os.getpid()}.part")
    try:
        torch.save(ckpt, part)
        os.replace(part, dst)
    finally:
        part.unlink(missing_ok=True)


def save_slim(src: str | Path, dst: str | Path, half: bool = True, meta_updates: dict | None = None) -> Path:
    """A small inference-only copy of a training checkpoint: weights (fp16 by default) and meta."""
    ckpt = read_checkpoint(src)
    weights = {k: (v.half() if half and v.is_floating_point() else v) for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    dst = Path(dst)
    _save_atomically({"fer": {**ckpt["fer"], **(meta_updates or {})}, "state_dict": weights}, dst)
    return dst


def update_meta(path: str | Path, **entries) -> None:
    """Add entries to a checkpoint's "fer" meta in place (the temperatures fitted after training)."""
    ckpt = read_checkpoint(path)
    ckpt["fer"].update(entries)
    _save_atomically(ckpt, Path(path))
