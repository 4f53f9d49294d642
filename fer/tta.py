"""Evaluation views of a face: the centre crop alone, or test-time augmentation (TTA).

Training sees random `input_size` crops of the face (image_size px; FER2013: 48), flipped half the
time; at test time the network can look at several such views and average its logits:

    none      the centre crop (what validation always uses: cheap every epoch)
    flip      the centre crop and its mirror image (2 views)
    ten_crop  the four corner crops and the centre crop, each also mirrored (10 views)

Training's test step, the calibration report and infer.py all call `eval_logits`, so a mode means
the same everywhere. Averaging logits (not probabilities) keeps temperature scaling a single
division afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fer.errors import FerError
from fer.preprocess import center_crop

if TYPE_CHECKING:  # torch is imported where tensors are made: infer.py backend=onnx runs without it
    import torch

TTA_MODES = ("none", "flip", "ten_crop")
VIEWS_PER_FACE = {"none": 1, "flip": 2, "ten_crop": 10}  # len(views(x, size, mode))


def check_mode(mode: str | None) -> str:
    mode = "none" if mode in (None, False) else str(mode)
    if mode not in TTA_MODES:
        raise FerError(f"tta={mode} is not a test-time augmentation; choose one of {', '.join(TTA_MODES)}")
    return mode


def _crops(x: torch.Tensor, size: int, mode: str) -> list[torch.Tensor]:
    if mode != "ten_crop":
        return [center_crop(x, size)]
    h, w = x.shape[-2:]
    corners = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size)]
    return [x[..., top : top + size, left : left + size] for top, left in corners] + [center_crop(x, size)]


def views(x: torch.Tensor, input_size: int, mode: str) -> list[torch.Tensor]:
    """(B, 1, S, S) normalised faces -> the list of (B, 1, input_size, input_size) views to average."""
    mode = check_mode(mode)
    crops = _crops(x, input_size, mode)
    if mode == "none":
        return crops
    return crops + [c.flip(-1) for c in crops]


def widest(modes) -> str:
    """The mode whose views include those of all the others."""
    return "ten_crop" if "ten_crop" in modes else "flip" if "flip" in modes else "none"


MAX_BATCH = 1024  # images per forward pass when views are stacked


def eval_logits(
    forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, input_size: int, mode: str = "none"
) -> torch.Tensor:
    """(B, 1, S, S) normalised faces -> (B, classes) logits, averaged over the mode's views.

    A few faces' views go through the network as one batch (fewer, larger matrix products are faster
    on a CPU), but never more than MAX_BATCH images at once: ten views of a 512-face evaluation
    batch would need gigabytes of activations.
    """
    import torch

    vs = views(x, input_size, mode)
    per_pass = max(1, MAX_BATCH // max(len(x), 1))
    total = None
    for i in range(0, len(vs), per_pass):
        group = vs[i : i + per_pass]
        logits = forward(torch.cat(group) if len(group) > 1 else group[0]).view(len(group), len(x), -1).sum(0)
        total = logits if total is None else total + logits
    return total / len(vs)


def every_mode_logits(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    input_size: int,
    modes=TTA_MODES,
    centre: torch.Tensor | None = None,
    max_batch: int = MAX_BATCH,
) -> dict[str, torch.Tensor]:
    """(B, 1, S, S) normalised faces -> {mode: (B, classes) logits} for every mode asked, from one set of
    forward passes: ten_crop's views include the centre crop and its mirror image, which are all that
    `none` and `flip` look at, so the three modes cost ten views a face, not thirteen.

    centre: the centre crop's (B, classes) logits when they are known already (a test at tta=none has
    them), which then go through the network no second time. At most max_batch images a forward pass."""
    import torch

    modes = [check_mode(m) for m in modes]
    vs = views(x, input_size, widest(modes))
    # views(): the crops, then their mirror images; the centre crop is the last crop.
    centre_at, mirrored = len(vs) // 2 - 1 if len(vs) > 1 else 0, len(vs) - 1
    todo = [i for i in range(len(vs)) if centre is None or i != centre_at]
    per_pass = max(1, max_batch // max(len(x), 1))
    per_view = {}
    for start in range(0, len(todo), per_pass):
        group = todo[start : start + per_pass]
        logits = forward(torch.cat([vs[i] for i in group])).view(len(group), len(x), -1)
        per_view.update(zip(group, logits))
    if centre is not None:
        per_view[centre_at] = centre
    out = {}
    for mode in modes:
        if mode == "none":
            out[mode] = per_view[centre_at]
        elif mode == "flip":
            out[mode] = (per_view[centre_at] + per_view[mirrored]) / 2
        else:
            out[mode] = torch.stack([per_view[i] for i in range(len(vs))]).mean(0)
    return out
