"""What a small folder of one's own faces supports, said before training: a class with few faces, or a
single class, trains to numbers that mean little, and the user should know before reading them."""

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fer.errors import FerError

log = logging.getLogger(__name__)

FEW = 20  # training faces a class below which a run warns (docs/training.md, "Fine-tuning on few faces")
GUIDE = "docs/training.md, 'Fine-tuning on few faces'"


def warn_if_few(train_labels: np.ndarray, class_names: Sequence[str], where: str) -> None:
    counts = np.bincount(train_labels, minlength=len(class_names))
    present = np.flatnonzero(counts)
    if len(present) == 1:
        only = class_names[present[0]]
        log.warning(
            "%s: only %s has faces to train on: the model learns to answer %s for every face, and its accuracy "
            "(on %s faces alone) says nothing; add folders of other classes",
            where,
            only,
            only,
            only,
        )
    few = [f"{class_names[c]} {counts[c]}" for c in present if counts[c] < FEW]
    if few:
        log.warning(
            "%s: few faces to train on (%s; under %d a class): expect validation and test accuracy to move by "
            "whole faces, so the best epoch is the one of least validation loss on small validation sets (%s)",
            where,
            ", ".join(few),
            FEW,
            GUIDE,
        )


def refuse_empty_split(where: Path, split: str, labels: np.ndarray, class_names: Sequence[str]) -> None:
    """A folder too small to hold out a split: what it has and what it needs, in the folder's terms."""
    counts = np.bincount(labels, minlength=len(class_names))
    has = ", ".join(f"{class_names[c]} {counts[c]}" for c in np.flatnonzero(counts)) or "none"
    raise FerError(
        f"{where}: too few faces to hold out a {split} split (faces a class: {has}); give a class folder "
        f"3 pictures or more (one trains, one validates, one tests; 5 or more to learn anything: {GUIDE})"
    )
