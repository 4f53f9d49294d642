import sys
from contextlib import contextmanager


class FerError(Exception):
    """A problem the user can fix (bad path, bad data, bad checkpoint). Printed as one line, no traceback."""


def user_error(e: BaseException) -> FerError | None:
    """The FerError behind `e`: `e` itself, or the cause hydra.utils.instantiate wrapped in its
    InstantiationException ("Error in call to target ...") when a constructor refused a value."""
    while e is not None:
        if isinstance(e, FerError):
            return e
        e = e.__cause__
    return None


def first_line(text: str, limit: int = 300) -> str:
    """Another library's message, made fit to quote inside one of ours: its first line, and where that
    runs past `limit`, cut at a word boundary and marked as cut (never silently mid-word)."""
    line = (str(text).strip().splitlines() or [""])[0].strip()
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0].rstrip(" ,;:") + " ..."


@contextmanager
def exit_on_user_error():
    # The entry points wrap their work in this so a FerError becomes one message and exit code 2.
    try:
        yield
    except FerError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
