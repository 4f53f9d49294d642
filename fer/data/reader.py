"""FER2013 in the forms users get it -> uint8 images, labels and a split id per row.

Supported: `fer2013.csv`, `fer2013.csv.gz`, the challenge archive `fer2013.tar.gz` (a csv inside),
and labelled pictures in class folders (`train/<class>/*.jpg`, `test/<class>/*.jpg`, or a user's own
`<class>/*.jpg`: fer.data.folders).
"""

import csv
import gzip
import io
import logging
import os
import tarfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fer.data.faceset import BadRows, FerData, Reader, ReadSettings
from fer.data.folders import read_folders
from fer.data.labels import EMOTIONS, NUM_CLASSES
from fer.errors import FerError

log = logging.getLogger(__name__)

USAGE_TO_SPLIT = {"Training": 0, "PublicTest": 1, "PrivateTest": 2}
PIXELS = 48 * 48
HOW_TO_GET = (
    "FER2013 comes from the Kaggle challenge 'Challenges in Representation Learning: Facial Expression "
    "Recognition' (fer2013.csv or fer2013.tar.gz); put it at data/fer2013.csv, or point data.path= "
    "(or the FER2013_PATH environment variable) at your copy. See data/README.md."
)


VARIANTS = ("fer2013.csv", "fer2013.csv.gz", "fer2013.tar.gz", "fer2013")
DEFAULT_PATH = "data/fer2013.csv"  # data.path's default (conf/data/fer2013.yaml), when FER2013_PATH is unset


def default_data_path(root: Path = Path(".")) -> Path:
    """Where train.py, the tests and the benchmarks all look for FER2013 when given no path:
    $FER2013_PATH, else data/fer2013.csv under `root` (or the one other form lying beside it)."""
    given = os.environ.get("FER2013_PATH")
    return resolve_data_path(given if given else root / DEFAULT_PATH)


def resolve_data_path(path: str | Path) -> Path:
    """The path itself, or, when it names a FER2013 file that is not there, the one other form of
    FER2013 lying beside it (data/fer2013.tar.gz for data/fer2013.csv). Otherwise a clear error."""
    path = Path(path).expanduser()
    if path.exists():
        return path
    if path.name in VARIANTS:
        found = [path.parent / v for v in VARIANTS if (path.parent / v).exists()]
        if len(found) == 1:
            log.info("%s not found; using %s", path, found[0])
            return found[0]
    raise FerError(f"FER2013 not found at {path} (absolute: {path.absolute()}). {HOW_TO_GET}")


def read_fer2013(
    path: str | Path,
    on_bad_row: str = "error",
    val_fraction: float = 0.1,
    seed: int = 0,
    test_fraction: float = 0.2,
    faces: str = "auto",
    class_names: Sequence[str] = EMOTIONS,
    image_size: int = 48,
) -> FerData:
    """Read FER2013 from a csv / csv.gz / tar.gz file, or faces from class folders (fer.data.folders;
    test_fraction, faces and any class_names and image_size apply only there: a FER2013 file holds
    48x48 faces labelled 0..6)."""
    path = resolve_data_path(path)
    bad = BadRows(path, on_bad_row)
    if path.is_dir():
        data = read_folders(path, bad, val_fraction, seed, test_fraction, faces, class_names=class_names, image_size=image_size)
    else:
        _check_fer2013_file_settings(path, class_names, image_size)
        name = path.name.lower()
        if name.endswith((".tar.gz", ".tgz", ".tar")):
            data = _read_tar(path, bad)
        elif name.endswith(".gz"):
            data = _read_csv_stream(lambda: gzip.open(path, "rt", newline="", encoding="ascii", errors="replace"), bad)
        elif name.endswith(".csv"):
            data = _read_csv_stream(lambda: open(path, newline="", encoding="ascii", errors="replace"), bad)
        else:
            raise FerError(f"{path}: unsupported data file; expected .csv, .csv.gz, .tar.gz or an image folder")
    bad.report()
    data.skipped = bad.count
    return data


class Fer2013(Reader):
    """conf/data/fer2013.yaml's reader: fer2013.csv, .csv.gz, the challenge's .tar.gz, or its image
    release in class folders (read_fer2013)."""

    def locate(self, path: str) -> Path:
        return resolve_data_path(path)

    def depends_on(self, settings: ReadSettings, path: Path) -> dict:
        # A FER2013 file's split is its Usage column, its classes and size fixed: only on_bad_row changes
        # the parse (`seed=43` reuses seed 42's); its image release in folders depends on everything.
        return super().depends_on(settings, path) if path.is_dir() else {"on_bad_row": settings.on_bad_row}

    def read(self, s: ReadSettings) -> FerData:
        return read_fer2013(s.path, s.on_bad_row, s.val_fraction, s.seed, s.test_fraction, s.faces, s.class_names, s.image_size)


def fer2013_settings(path: str | Path, **settings) -> ReadSettings:
    """The settings of a FER2013 read (its classes and 48 px faces) with any others given: ReadSettings."""
    return ReadSettings(path=str(path), class_names=EMOTIONS, image_size=48, **settings)


def _check_fer2013_file_settings(path: Path, class_names: Sequence[str], image_size: int):
    if len(class_names) != NUM_CLASSES:
        raise FerError(
            f"{path} is FER2013, labelled 0..{NUM_CLASSES - 1}: data.class_names must name {NUM_CLASSES} classes, "
            f"not {len(class_names)} ({', '.join(class_names)}); another data set in class folders is data=folders"
        )
    if image_size != 48:
        raise FerError(f"{path} is FER2013, whose faces are 48x48: data.image_size must be 48, not {image_size}")


def _read_tar(path: Path, bad: BadRows) -> FerData:
    try:
        tar = tarfile.open(path)
        member = next((m for m in tar.getmembers() if m.isfile() and m.name.endswith(".csv") and "fer2013" in m.name), None)
        member = member or next((m for m in tar.getmembers() if m.isfile() and m.name.endswith(".csv")), None)
    except PermissionError:
        raise FerError(f"{path}: permission denied; make the file readable for this user") from None
    except (tarfile.TarError, EOFError, OSError) as e:
        raise FerError(f"{path}: not a readable tar archive ({e})") from None
    if member is None:
        raise FerError(f"{path}: the archive holds no .csv file (expected fer2013/fer2013.csv)")
    return _read_csv_stream(
        lambda: io.TextIOWrapper(tar.extractfile(member), encoding="ascii", errors="replace", newline=""), bad
    )


def _read_csv_stream(open_text, bad: BadRows) -> FerData:
    labels, splits, pixels = [], [], []
    line = 1
    try:
        with open_text() as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            try:
                i_label, i_pixels, i_usage = (header.index(c) for c in ("emotion", "pixels", "Usage"))
            except ValueError:
                raise FerError(f"{bad.source}: header is {header}, expected the columns emotion,pixels,Usage") from None
            for line, row in enumerate(reader, start=2):
                if len(row) <= 1 and not "".join(row).strip():  # a blank line (often the last): no row, no error
                    continue
                if len(row) != len(header):
                    bad(f"line {line}", f"{len(row)} columns, expected {len(header)}")
                    continue
                label, usage, pix = row[i_label].strip(), row[i_usage].strip(), row[i_pixels].strip()
                if not label.isdigit() or int(label) >= NUM_CLASSES:
                    bad(f"line {line}", f"label {label!r} is not one of 0..{NUM_CLASSES - 1}")
                    continue
                if usage not in USAGE_TO_SPLIT:
                    bad(f"line {line}", f"Usage {usage!r} is not one of {', '.join(USAGE_TO_SPLIT)}")
                    continue
                if pix.count(" ") != PIXELS - 1:  # the cheap test; _pixel_problem names the exact problem
                    problem = _pixel_problem(pix)
                    if problem:
                        bad(f"line {line}", problem)
                        continue
                    pix = " ".join(pix.split())
                labels.append(int(label))
                splits.append(USAGE_TO_SPLIT[usage])
                pixels.append((line, pix))
    except PermissionError:  # an OSError too, but nothing is wrong with the file itself
        raise FerError(f"{bad.source}: permission denied; make the file readable for this user") from None
    except (EOFError, gzip.BadGzipFile, OSError, csv.Error) as e:
        # A truncated or corrupt file: with skip, keep what was read before the damage.
        if not bad.skip or isinstance(e, gzip.BadGzipFile):
            raise FerError(f"{bad.source}: file is truncated or corrupt after line {line} ({e})") from None
        bad(f"after line {line}", f"file truncated or corrupt ({e}); the rest is skipped")
        if pixels:  # the last row read may be cut short
            labels.pop(), splits.pop(), pixels.pop()

    images = _parse_pixels(pixels, bad)
    keep = images[1]
    return FerData(
        images=images[0],
        labels=np.asarray(labels, dtype=np.int64)[keep],
        splits=np.asarray(splits, dtype=np.int8)[keep],
    )


def _pixel_problem(pix: str) -> str | None:
    tokens = pix.split()
    if len(tokens) != PIXELS:
        return f"{len(tokens)} pixel values, expected {PIXELS}"
    for t in tokens:
        if not t.isdigit() or int(t) > 255:
            return f"pixel value {t!r} is not an integer in 0..255"
    return None


def _parse_pixels(pixels: list[tuple[int, str]], bad: BadRows) -> tuple[np.ndarray, np.ndarray]:
    # One join and one C-level parse for the whole file (~3 s for FER2013); only when that finds a
    # problem do we go row by row to name it.
    keep = np.ones(len(pixels), dtype=bool)
    if not pixels:
        return np.zeros((0, 48, 48), np.uint8), keep
    text = " ".join(p for _, p in pixels)
    if text.encode("ascii", "replace").translate(None, b"0123456789 "):
        return _parse_rows_one_by_one(pixels, bad)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        values = np.fromstring(text, dtype=np.int32, sep=" ")
    if values.size != len(pixels) * PIXELS or values.max(initial=0) > 255:
        return _parse_rows_one_by_one(pixels, bad)
    return values.astype(np.uint8).reshape(-1, 48, 48), keep


def _parse_rows_one_by_one(pixels, bad: BadRows) -> tuple[np.ndarray, np.ndarray]:
    keep = np.ones(len(pixels), dtype=bool)
    images = np.zeros((len(pixels), 48, 48), np.uint8)
    for i, (line, pix) in enumerate(pixels):
        problem = _pixel_problem(pix)
        if problem:
            bad(f"line {line}", problem)
            keep[i] = False
        else:
            images[i] = np.asarray(pix.split(), dtype=np.uint8).reshape(48, 48)
    return images[keep], keep
