import functools
import os
import sys
from contextlib import contextmanager


class FerError(Exception):
    """A problem the user can fix (bad path, bad data, bad checkpoint). Printed as one line, no traceback."""


def user_error(e: BaseException) -> FerError | None:
    """The FerError behind `e`: `e` itself, or the cause hydra.utils.instantiate wrapped in its
    InstantiationException ("Error in call to target ...") when a constructor refused a value."""
    first = e
    while e is not None:
        if isinstance(e, FerError):
            return e
        e = e.__cause__
    return _config_error(first)


def _config_error(e: BaseException) -> FerError | None:
    """Hydra's refusal of a command line (an unknown key or option, a value of the wrong type) as one line."""
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(e, MissingConfigException) and e.options:
        group, _, name = str(e.missing_cfg_file).rpartition("/")
        if group:  # an option that is no file of its group (detector=foo)
            return FerError(f"{group}={name}: no such {group}; choose one of {', '.join(e.options)} (conf/{group}/)")
        return FerError(f"{first_line(e)}; choose one of {', '.join(e.options)}")
    if not isinstance(e, (HydraException, OmegaConfBaseException)) or type(e).__name__ == "InstantiationException":
        return None
    lines = [first_line(e)]
    cause = e.__cause__
    if isinstance(cause, OmegaConfBaseException):
        lines.append(first_line(cause))
    hint = next((line.strip() for line in str(e).splitlines() if line.strip().startswith("To append")), "")
    return FerError(" ".join(line.rstrip(".") + "." for line in lines if line) + (f" {hint}" if hint else ""))


@contextmanager
def hydra_errors_raise():
    """Hydra prints its own refusals (a page with a traceback hint) and exits 1; with HYDRA_FULL_ERROR it raises
    them instead, for exit_on_user_error to say in one line."""
    saved = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved


def first_line(text: str, limit: int = 300) -> str:
    """Another library's message, made fit to quote inside one of ours: its first line, and where that
    runs past `limit`, cut at a word boundary and marked as cut (never silently mid-word)."""
    line = (str(text).strip().splitlines() or [""])[0].strip()
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0].rstrip(" ,;:") + " ..."


@contextmanager
def exit_on_user_error():
    """Every entry point's one way out for a problem the user can fix: the FerError (or the one behind
    a Hydra instantiation error, see user_error) as one line on stderr and exit code 2; Ctrl-C as
    "interrupted" and 130. Anything else is a bug and keeps its traceback.

    Wraps the part before Hydra; the Hydra task, task_exits_on_user_error."""
    try:
        yield
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
    except Exception as e:
        user = user_error(e)
        if user is None:
            raise
        print(f"error: {user}", file=sys.stderr, flush=True)
        sys.exit(2)


def task_exits_on_user_error(task):
    """exit_on_user_error around a Hydra task function (under @hydra.main), which Hydra would otherwise
    print with a traceback. A plain function, unlike contextlib's decorator form, which holds a live
    generator: joblib and submitit launchers pickle the task."""

    @functools.wraps(task)
    def run(*args, **kwargs):
        with exit_on_user_error():
            return task(*args, **kwargs)

    return run
