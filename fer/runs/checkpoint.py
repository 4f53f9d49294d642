"""Checkpoints that rebuild their model alone: besides the weights, a "fer" entry holds the
architecture spec, class names, image size, normalisation statistics, input size and face settings,
all plain Python types, so loading needs neither Hydra nor unpickling of arbitrary objects."""

from pathlib import Path

import torch
from torch import nn

from fer.errors import FerError
from fer.models import build_net
from fer.runs.atomic import replace_atomically
from fer.runs.meta import stored_image_size

FORMAT = 1


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FerError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise FerError(f"cannot read {path}: permission denied") from None
    except Exception as e:  # torch's safe unpickler raises many kinds (IndexError on an empty file, KeyError on text...)
        if path.stat().st_size == 0:
            raise FerError(f"{path} is empty (0 bytes), not a checkpoint") from None
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise FerError(f"{path} is not a fer checkpoint (could not read it: {first})") from None
    if not isinstance(ckpt, dict) or "fer" not in ckpt or "state_dict" not in ckpt:
        raise FerError(f"{path} is not a fer checkpoint (no 'fer' entry); train one with `python train.py`")
    problem = _meta_problem(ckpt["fer"]) or (None if isinstance(ckpt["state_dict"], dict) else "its state_dict is not a mapping")
    if problem:
        raise FerError(f"{path} is not a usable fer checkpoint: {problem}")
    if ckpt["fer"].get("format", 0) > FORMAT:
        raise FerError(f"{path} was written by a newer fer (format {ckpt['fer']['format']}); upgrade fer")
    return ckpt


def _meta_problem(meta) -> str | None:
    """What is wrong with a checkpoint's "fer" entry for the code that reads it, or None."""
    if not isinstance(meta, dict):
        return f"its 'fer' entry is a {type(meta).__name__}, not a mapping"

    def number(x):
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    def pixels(x):
        return isinstance(x, int) and not isinstance(x, bool) and x > 0

    checks = {
        "format": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "net": lambda v: isinstance(v, dict) and isinstance(v.get("arch"), str),
        "class_names": lambda v: isinstance(v, list) and len(v) > 0 and all(isinstance(c, str) for c in v),
        "mean": number,
        "std": lambda v: number(v) and v > 0,
        "input_size": pixels,
    }
    # Older checkpoints lack image_size (48) and keep the face settings under "preprocess" (fer.runs.meta).
    optional = {"format", "face", "preprocess", "image_size", "history", "temperature"}
    checks.update(
        {
            "face": lambda v: v is None or isinstance(v, dict),
            "preprocess": lambda v: v is None or isinstance(v, dict),
            "image_size": pixels,
            "history": lambda v: isinstance(v, list),
            "temperature": lambda v: isinstance(v, dict) and all(number(t) and t > 0 for t in v.values()),
        }
    )
    for key, ok in checks.items():
        if key not in meta:
            if key not in optional:
                return f"its 'fer' entry lacks {key!r}"
        elif not ok(meta[key]):
            return f"its 'fer' entry has an invalid {key!r} ({str(meta[key])[:80]})"
    if meta["input_size"] > stored_image_size(meta):
        return f"its input_size {meta['input_size']} is larger than its image_size {stored_image_size(meta)}"
    return None


def net_weights(state_dict: dict) -> dict:
    # The LightningModule keeps the network under `net.`; slim checkpoints use the same keys.
    return {k[len("net.") :]: v.float() for k, v in state_dict.items() if k.startswith("net.")}


def load_network(path: str | Path) -> tuple[nn.Module, dict]:
    """path -> (the bare network in eval mode, meta: class_names, image_size, mean, std, input_size, face, net, ...);
    fer.runs.meta reads what older checkpoints lack."""
    ckpt = read_checkpoint(path)
    meta = ckpt["fer"]
    net = build_net(**meta["net"])
    try:
        net.load_state_dict(net_weights(ckpt["state_dict"]))
    except RuntimeError as e:
        raise FerError(
            f"{path}: weights do not fit the stored architecture {meta['net'].get('arch')!r} ({mismatch(e)})"
        ) from None
    return net.eval(), meta


def mismatch(e: RuntimeError) -> str:
    """load_state_dict's many-line complaint -> its first problem, one line."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return (lines[1] if len(lines) > 1 else lines[0] if lines else "size mismatch")[:200]


def _save_atomically(ckpt: dict, dst: Path):
    # An interrupted save never leaves half a checkpoint (fer.runs.atomic).
    replace_atomically(dst, lambda f: torch.save(ckpt, f))


def save_slim(src: str | Path, dst: str | Path, half: bool = True, meta_updates: dict | None = None) -> Path:
    """A small inference-only copy of a training checkpoint: weights (fp16 by default) and meta."""
    ckpt = read_checkpoint(src)
    weights = {
        k: (v.half() if half and v.is_floating_point() else v) for k, v in ckpt["state_dict"].items() if k.startswith("net.")
    }
    dst = Path(dst)
    _save_atomically({"fer": {**ckpt["fer"], **(meta_updates or {})}, "state_dict": weights}, dst)
    return dst


def update_meta(path: str | Path, **entries) -> None:
    """Add entries to a checkpoint's "fer" meta in place (the temperatures fitted after training)."""
    ckpt = read_checkpoint(path)
    ckpt["fer"].update(entries)
    _save_atomically(ckpt, Path(path))
