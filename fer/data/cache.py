"""A parsed data set kept in the user's cache dir (never the repo): a second run loads FER2013 in well
under a second instead of re-parsing ~300 MB of text. Keyed on the reader, the source's path, size and
mtime (a folder: every file's path, size and mtime), and the settings the parse depends on."""

import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from fer.data.faceset import FerData, Reader, ReadSettings
from fer.paths import listing
from fer.runs.atomic import replace_atomically

log = logging.getLogger(__name__)
FORMAT = 3  # bump when the reader's output changes


def cache_dir() -> Path:
    if os.environ.get("FER_CACHE_DIR"):
        return Path(os.environ["FER_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fer"


def _fingerprint(path: Path) -> str:
    if path.is_dir():  # a folder of images: every picture's place (its class) and content, as stat sees them
        files = "\n".join(f"{rel}|{st.st_size}|{st.st_mtime_ns}" for rel, st in _files(path, path, depth=3))
        return f"{path.resolve()}|{hashlib.sha1(files.encode()).hexdigest()}"
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def _files(root: Path, folder: Path, depth: int):
    """(relative path, stat) of the files under folder, sorted, down to `depth` levels: DIR/train/<class>/picture
    at most. Symlinked folders are followed (a class folder may live elsewhere); the depth ends any loop."""
    for entry in listing(folder):
        if entry.is_dir():
            if depth > 1:
                yield from _files(root, Path(entry.path), depth - 1)
        elif entry.is_file():
            yield Path(entry.path).relative_to(root).as_posix(), entry.stat()


def load(settings: ReadSettings, reader: Reader, use_cache: bool = True) -> FerData:
    """reader.read(settings) with a cache in front of it, keyed on the reader, the source file or folder
    (path, size, mtime; in a folder, every file's) and the settings the reader's parse depends on (Reader.depends_on)."""
    path = reader.locate(settings.path)
    settings = dataclasses.replace(settings, path=str(path))
    if not use_cache:
        return reader.read(settings)
    kind = f"{type(reader).__module__}.{type(reader).__qualname__}"
    depends = json.dumps(reader.depends_on(settings, path), sort_keys=True, default=list)
    key = hashlib.sha1(f"{FORMAT}|{kind}|{_fingerprint(path)}|{depends}".encode()).hexdigest()[:16]
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
    data = reader.read(settings)
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
