"""Replacing a file so that a reader (or a resume after a kill) sees the old file or the new one, never half of one.

The new content goes into a temporary file in the target's own directory, is flushed to disk, and is
renamed over the target. A temporary file elsewhere (tempfile's default, $TMPDIR) is no good: when
it lies on another file system the "rename" is a copy, and a kill during the copy leaves the target
truncated (what fsspec, and so Lightning's own checkpoint writer, does).
"""

import os
import re
import signal
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

# .NAME.PID.part: the writer's pid tells a dead writer's leftovers from a live writer's file.
_PART = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.part$")


def replace_atomically(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """write(file) fills a temporary file beside path, which then replaces path in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stray_parts(path)
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with _ctrl_c_after_the_write():
            with open(part, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())  # the data is on disk before the name points at it
            os.replace(part, path)
            _fsync_dir(path.parent)  # and the rename itself survives a crash
    finally:
        part.unlink(missing_ok=True)
    return path


@contextmanager
def _ctrl_c_after_the_write():
    """Holds a Ctrl-C back until the file is written and renamed, then raises it. Arriving inside
    torch.save it would surface from the C++ writer as a RuntimeError ("unexpected pos"), a traceback
    and exit 1 instead of "interrupted" and 130. Signals reach only the main thread: elsewhere, nothing to do."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held and callable(previous):
        previous(signal.SIGINT, held[0])  # Python's own handler raises KeyboardInterrupt
    elif held and previous == signal.SIG_DFL:
        os.kill(os.getpid(), signal.SIGINT)


def remove_stray_parts(path: str | Path):
    """The temporary files that killed writers left beside path (a live writer's are left alone)."""
    try:
        entries = list(Path(path).parent.iterdir())
    except OSError:
        return
    for entry in entries:
        m = _PART.match(entry.name)
        if m and not _alive(int(m["pid"])):
            entry.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process writes one file at a time: an old part of ours is a leftover
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but belongs to someone else
        return True
    return True


def _fsync_dir(directory: Path):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows, where directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
