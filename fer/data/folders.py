"""Labelled pictures in class folders: FER2013's image release, a user's own faces, any other data set.

Two layouts:
  train/<class>/*.jpg, test/<class>/*.jpg   a data set's own split (for FER2013's images, file-name
                                            prefixes Training_, PublicTest_, PrivateTest_ give the
                                            split, when present)
  <class>/*.jpg                             your own faces: a seeded, stratified test_fraction is
                                            held out for testing and val_fraction of the rest validates
Class folders are named after the data config's class_names (any case; their order is the label
order). Pictures may be any size, colour or grey: image_size x image_size pictures are taken as face
crops already; any other picture goes through inference's face pipeline (detect, align, crop;
`faces=auto`), or is squeezed whole to image_size x image_size (`faces=whole`). A picture in which no
face is found is left out and named in the log, never dropped silently.
"""

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fer.data.faceset import BadRows, FerData, Reader, ReadSettings
from fer.errors import FerError
from fer.paths import listing, readable

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}
PREFIX_TO_SPLIT = {"training_": 0, "publictest_": 1, "privatetest_": 2}
FACE_MODES = ("auto", "detect", "whole")


class ClassFolders(Reader):
    """conf/data/folders.yaml's reader: any data set of pictures in class folders."""

    def locate(self, path: str) -> Path:
        found = super().locate(path)
        if not found.is_dir():
            raise FerError(f"{found} is a file; data=folders reads a folder of class folders (train/<class>/, test/<class>/)")
        return found

    def read(self, s: ReadSettings) -> FerData:
        root = self.locate(s.path)
        bad = BadRows(root, s.on_bad_row)
        data = read_folders(
            root, bad, s.val_fraction, s.seed, s.test_fraction, s.faces, class_names=s.class_names, image_size=s.image_size
        )
        bad.report()
        data.skipped = bad.count
        return data


def read_folders(
    root: Path,
    bad,
    val_fraction: float,
    seed: int,
    test_fraction: float = 0.2,
    faces: str = "auto",
    face_finder: Callable[[np.ndarray], np.ndarray | None] | None = None,
    *,
    class_names: Sequence[str],
    image_size: int,
) -> FerData:
    """class_names: the class folders' names, in label order. image_size: the side of the square grey
    faces returned. face_finder: a colour picture -> its largest face as an image_size x image_size uint8
    crop, or None (default: inference's face pipeline, built on first use)."""
    import cv2

    if faces not in FACE_MODES:
        raise FerError(
            f"data.faces={faces!r} is not known; use auto ({image_size}x{image_size} pictures whole, "
            "others through face detection), detect or whole"
        )
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise FerError(
            f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} "
            "must be in [0, 1) and leave faces to train on"
        )
    layout = _layout(root, class_names)
    finder = _Lazy(face_finder, image_size)
    images, labels, splits, names, no_face = [], [], [], [], []
    prefixed = False
    for class_dir, label, default_split in layout:
        for f in _pictures(class_dir):
            picture = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if picture is None:
                if not readable(f):
                    raise FerError(f"permission denied: {f}")
                bad(str(f.relative_to(root)), "not a readable image")
                continue
            face = _face_of(picture, faces, finder, image_size)
            if face is None:
                no_face.append(str(f.relative_to(root)))
                continue
            prefix = next((p for p in PREFIX_TO_SPLIT if f.name.lower().startswith(p)), None)
            prefixed |= prefix is not None
            images.append(face)
            labels.append(label)
            splits.append(PREFIX_TO_SPLIT[prefix] if prefix else default_split)
            names.append(f)
    if no_face:
        log.warning(
            "%d of %d pictures in %s show no face the detector finds, left out: %s%s (data.faces=whole takes pictures whole)",
            len(no_face),
            len(no_face) + len(images),
            root,
            ", ".join(no_face[:5]),
            " ..." if len(no_face) > 5 else "",
        )
    if not images:
        raise FerError(
            f"{root}: no usable face pictures ({len(no_face)} without a face; data.faces=whole takes "
            "pictures whole); see data/README.md for the layouts"
        )
    labels_a = np.asarray(labels, dtype=np.int64)
    splits_a = np.asarray(splits, dtype=np.int8)
    if not prefixed:
        if all(split == 0 for _, _, split in layout):  # <class>/ only: hold out a test split first
            splits_a = carve(labels_a, splits_a, test_fraction, seed, into=2, n_classes=len(class_names))
        splits_a = carve(labels_a, splits_a, val_fraction, seed, into=1, n_classes=len(class_names))
    return FerData(np.stack(images), labels_a, splits_a, no_face=no_face)


def _layout(root: Path, class_names: Sequence[str]) -> list[tuple[Path, int, int]]:
    """(class folder, label, default split) for every class folder under root."""
    class_index = {name.lower(): i for i, name in enumerate(class_names)}
    known = ", ".join(n.lower() for n in class_names)
    tops = {d.name.lower(): d for d in _folders(root)}
    if "train" in tops:
        parents = [(tops["train"], 0)] + ([(tops["test"], 2)] if "test" in tops else [])
    elif tops and all(name in class_index for name in tops):
        parents = [(root, 0)]
    else:
        raise FerError(
            f"{root}: expected train/<class>/ (and test/<class>/) folders, or <class>/ folders, "
            f"with classes named {known}; found {', '.join(sorted(tops)) or 'no folders'}"
        )
    layout, unknown = [], []
    for parent, split in parents:
        for class_dir in _folders(parent):
            label = class_index.get(class_dir.name.lower())
            if label is None:
                unknown.append(class_dir.relative_to(root).as_posix())
            layout.append((class_dir, label, split))
    if unknown:  # all of them in one message: a data set with other classes fails once, not folder by folder
        raise FerError(
            f"{root}: the class folders {', '.join(unknown)} are not in data.class_names ({known}); "
            "add their names to data.class_names=[...] (in label order) or remove the folders"
        )
    return layout


def _folders(parent: Path) -> list[Path]:
    return [Path(e.path) for e in listing(parent) if e.is_dir()]


def _pictures(class_dir: Path) -> list[Path]:
    return [Path(e.path) for e in listing(class_dir) if Path(e.name).suffix.lower() in IMAGE_SUFFIXES]


def _face_of(picture: np.ndarray, faces: str, finder: "_Lazy", size: int) -> np.ndarray | None:
    import cv2

    grey = cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)
    if faces == "whole" or (faces == "auto" and grey.shape == (size, size)):
        return grey if grey.shape == (size, size) else cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA)
    return finder()(picture)


class _Lazy:
    """The face finder, built on first use: a folder of face crops already at the image size never loads a detector."""

    def __init__(self, finder, size: int):
        self.finder, self.size = finder, size

    def __call__(self):
        if self.finder is None:
            from fer.infer.face_crops import LargestFace

            self.finder = LargestFace.from_infer_defaults(self.size)
        return self.finder


def carve(labels: np.ndarray, splits: np.ndarray, fraction: float, seed: int, into: int, n_classes: int) -> np.ndarray:
    """Move a fixed, seeded, stratified fraction of each class's training faces into split `into`: at least
    one face of a class (a folder of 5 faces a class still validates and tests every class), as long as one
    stays to train on."""
    splits = splits.copy()
    rng = np.random.default_rng(seed if into == 1 else [seed, into])  # validation: the seeding FER2013's folders always had
    for c in range(n_classes):
        idx = np.flatnonzero((labels == c) & (splits == 0))
        n = min(max(int(round(fraction * idx.size)), 1 if fraction > 0 else 0), idx.size - 1)
        splits[rng.permutation(idx)[: max(n, 0)]] = into
    return splits
