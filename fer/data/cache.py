"""A parsed FER2013 kept in the user's cache dir (never the repo): a second run loads in well under
a second instead of re-parsing ~300 MB of text. Keyed on the source's path, size and mtime."""

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fer.data.labels import EMOTIONS
from fer.data.reader import FerData, read_fer2013, resolve_data_path
from fer.runs.atomic import replace_atomically

log = logging.getLogger(__name__)
FORMAT = 2  # bump when the reader's output changes


def cache_dir() -> Path:
    if os.environ.get("FER_CACHE_DIR"):
        return Path(os.environ["FER_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fer"


def _fingerprint(path: Path) -> str:
    if path.is_dir():  # a folder of images: its file count and newest change
        stats = [e.stat() for e in path.rglob("*") if e.is_file()]
        size, mtime = len(stats), max((s.st_mtime_ns for s in stats), default=0)
    else:
        st = path.stat()
        size, mtime = st.st_size, st.st_mtime_ns
    return f"{path.resolve()}|{size}|{mtime}"


def load_fer2013(
    path: str | Path,
    on_bad_row: str = "error",
    val_fraction: float = 0.1,
    seed: int = 0,
    use_cache: bool = True,
    test_fraction: float = 0.2,
    faces: str = "auto",
    class_names: Sequence[str] = EMOTIONS,
    image_size: int = 48,
) -> FerData:
    """read_fer2013 with a cache in front of it (class folders of any data set included)."""
    path = resolve_data_path(path)
    read = (path, on_bad_row, val_fraction, seed, test_fraction, faces, tuple(class_names), image_size)
    if not use_cache:
        return read_fer2013(*read)
    # A folder's split depends on the seed and fractions, its labels and sizes on the class names and image
    # size; a FER2013 file's on none of them (its Usage column is the split): `seed=43` reuses seed 42's parse.
    folder_settings = f"|{val_fraction}|{seed}|{test_fraction}|{faces}|{','.join(class_names).lower()}|{image_size}"
    settings = on_bad_row + (folder_settings if path.is_dir() else "")
    key = hashlib.sha1(f"{FORMAT}|{_fingerprint(path)}|{settings}".encode()).hexdigest()[:16]
    file = cache_dir() / f"fer2013-{key}.npz"
    if file.exists():
        try:
            with np.load(file) as z:
                data = FerData(z["images"], z["labels"], z["splits"], int(z["skipped"]), [str(n) for n in z["no_face"]])
            if data.skipped:
                log.warning("skipped %d bad rows in %s (cached)", data.skipped, path)
            if data.no_face:
                log.warning(
                    "%d pictures in %s show no face the detector finds and are left out (cached): %s",
                    len(data.no_face),
                    path,
                    ", ".join(data.no_face[:5]),
                )
            return data
        except (OSError, ValueError, KeyError):
            log.warning("cache file %s is unreadable; parsing %s again", file, path)
    t0 = time.perf_counter()
    log.info("parsing %s (once; later runs load it from %s)", path, cache_dir())
    data = read_fer2013(*read)
    log.info("parsed %d faces in %.1f s", len(data.labels), time.perf_counter() - t0)
    try:
        # atomic (fer.runs.atomic): a parallel run never sees half a file
        arrays = {
            "images": data.images,
            "labels": data.labels,
            "splits": data.splits,
            "skipped": data.skipped,
            "no_face": np.asarray(data.no_face, dtype=str),
        }
        replace_atomically(file, lambda f: np.savez(f, **arrays))
    except OSError as e:
        log.warning("could not write the cache %s (%s); the next run parses again", file, e)
    return data
