"""What every data format reads into (FerData), the settings a read takes (ReadSettings: one typed
object the datamodule passes whole, and the cache keys on), and what a format's reader is (Reader).

A data config names its reader by `_target_` (`data.reader`, conf/data/*.yaml): FER2013's files and its
image release (fer.data.reader.Fer2013), class folders (fer.data.folders.ClassFolders), or a new format:
a subclass of Reader with a `read(settings)` in one file of fer/data/ (docs/extending.md)."""

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fer.errors import FerError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class FerData:
    images: np.ndarray  # (N, S, S) uint8; S = 48 for FER2013
    labels: np.ndarray  # (N,) int64, index into the data set's class names (FER2013: EMOTIONS)
    splits: np.ndarray  # (N,) int8: 0 train, 1 val (PublicTest), 2 test (PrivateTest)
    skipped: int = 0  # bad rows skipped with on_bad_row=skip
    no_face: list[str] = field(default_factory=list)  # class-folder pictures left out: no face found in them

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        mask = self.splits == SPLITS.index(name)
        return self.images[mask], self.labels[mask]


@dataclass(frozen=True)
class ReadSettings:
    """What a reader is told (the data config's keys of the same names)."""

    path: str
    class_names: tuple[str, ...]  # in label order
    image_size: int  # the side of the square grey faces returned
    on_bad_row: str = "error"  # or skip: drop malformed rows (or unreadable pictures) and report how many
    val_fraction: float = 0.1  # where the data set does not say which faces validate
    test_fraction: float = 0.2  # where the data set has no test split of its own
    seed: int = 0  # for those two draws
    faces: str = "auto"  # pictures of other sizes: auto, detect (face detection and alignment) or whole


class Reader:
    """A data format. Subclasses give `read`; `locate` and `depends_on` have defaults that suit a file or folder."""

    def locate(self, path: str) -> Path:
        """The data set's file or folder, checked before any model is built."""
        found = Path(path).expanduser()
        if not found.exists():
            raise FerError(f"data not found at {found} (absolute: {found.absolute()}); set data.path=")
        return found

    def depends_on(self, settings: ReadSettings, path: Path) -> dict:
        """The settings a parse depends on besides the file itself: the cache keeps a parse per value."""
        return {k: v for k, v in dataclasses.asdict(settings).items() if k != "path"}

    def read(self, settings: ReadSettings) -> FerData:
        raise NotImplementedError


class BadRows:
    """Collects bad rows: raises at the first one (on_bad_row=error) or counts them (skip)."""

    def __init__(self, source: Path, on_bad_row: str):
        if on_bad_row not in ("error", "skip"):
            raise FerError(f"data.on_bad_row must be 'error' or 'skip', not {on_bad_row!r}")
        self.source, self.skip, self.count, self.first = source, on_bad_row == "skip", 0, None

    def __call__(self, where: str, problem: str):
        if not self.skip:
            raise FerError(f"{self.source}: {where}: {problem} (data.on_bad_row=skip skips bad rows)")
        self.count += 1
        self.first = self.first or f"{where}: {problem}"

    def report(self):
        if self.count:
            log.warning("skipped %d bad rows in %s (first: %s)", self.count, self.source, self.first)
