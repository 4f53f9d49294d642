"""Files the project ships (the model, the configs), found from any working directory.

Found through importlib.resources, so the same code serves a source checkout (also `pip install -e .`),
where the configs are the top-level conf/ beside fer/, and an installed package (`pip install .`, a
wheel), which carries them as fer/conf (pyproject.toml maps the package `fer.conf` to conf/).
Also: listing a user's folder, where a refusal to read is one line (training's class folders, inference's sources).
"""

import os
from importlib.resources import files
from pathlib import Path

from fer.errors import FerError

PACKAGE_DIR = Path(str(files("fer")))  # fer/ itself (an installed package is never zipped: pip unpacks wheels)
# Where relative paths in the configs (fer/weights/...) start: the checkout, or site-packages when installed.
PROJECT_ROOT = PACKAGE_DIR.parent
CONF_DIR = PACKAGE_DIR / "conf" if (PACKAGE_DIR / "conf").is_dir() else PROJECT_ROOT / "conf"


def in_project(path: str | Path) -> Path:
    """`path` itself, or, when it is relative and the working directory lacks it but the project has
    it (conf/infer.yaml's and experiment=finetune's fer/weights/...), the project's file."""
    path = Path(str(path)).expanduser()
    if not path.is_absolute() and not path.exists() and (PROJECT_ROOT / path).exists():
        return PROJECT_ROOT / path
    return path


def listing(folder: Path) -> list[os.DirEntry]:
    """A folder's entries, sorted by name; a folder that cannot be listed is the user's one-line error
    (not a PermissionError traceback, nor an empty folder)."""
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda e: e.name)
    except PermissionError:
        raise FerError(f"permission denied: {folder}") from None


def readable(path: Path) -> bool:
    """False when reading the file is refused (a picture OpenCV returns nothing for may just be unreadable)."""
    try:
        with open(path, "rb"):
            return True
    except PermissionError:
        return False
