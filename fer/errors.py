import sys
from contextlib import contextmanager


class FerError(Exception):
    """A problem the user can fix (bad path, bad data, bad checkpoint). Printed as one line, no traceback."""


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
