"""Hydra overrides read before Hydra runs: the command line's, and those a run dir recorded.

Parsed with Hydra's own parser, so quoting (`hydra.run.dir='a b'`) reads as Hydra will read it.
`refusal` says why a recorded override must not be applied again without the user asking: a run
folder is a file anyone can hand over, and an override can name code to run (a `_target_`) or
change Hydra itself (its callbacks, search path, config directory).
"""

import re

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override

from fer.errors import FerError
from fer.paths import CONF_DIR

# Hydra's flags that take their value as the next argument (the rest are key=value or bare flags).
_FLAGS_WITH_VALUE = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun")
# Hydra runs no job with these: it prints something and exits.
NO_JOB_FLAGS = ("--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc")
MULTIRUN_FLAGS = ("-m", "--multirun")
# ${name:...}: an interpolation that calls a resolver (oc.create, for one, builds a config, _target_ and all).
_RESOLVER = re.compile(r"\$\{\s*[\w.]+\s*:")
_OPTION_NAME = re.compile(r"[A-Za-z0-9_][\w-]*")


def parse(line: str) -> Override:
    try:
        return OverridesParser.create().parse_override(line)
    except Exception as e:  # HydraException with a lexer message
        raise FerError(f"{line!r} is not a Hydra override ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def command_line(args: list[str]) -> dict[str, Override]:
    """key -> override for the key=value arguments (the last one of a key wins); flags are skipped, and so is
    what Hydra itself will reject (it says why better)."""
    found, skip = {}, False
    for a in args:
        if skip or a.startswith("-"):
            skip = not skip and a in _FLAGS_WITH_VALUE
            continue
        try:
            o = OverridesParser.create().parse_override(a)
        except Exception:
            continue
        found[o.key_or_group] = o
    return found


def element(overrides: dict[str, Override], key: str):
    """The single value given for key, or None (absent, deleted, a sweep)."""
    o = overrides.get(key)
    if o is None or o.is_delete() or o.is_sweep_override():
        return None
    return o.value()


def refusal(o: Override) -> str | None:
    """Why a recorded override is not applied again by itself; None when it may be."""
    key = o.key_or_group
    if key == "hydra" or key.startswith(("hydra.", "hydra/")):
        return "a Hydra setting"
    if o.package is not None:
        return "a package override (@)"
    if any(len(part) > 2 and part.startswith("_") and part.endswith("_") for part in re.split(r"[./]", key)):
        return "an instantiation key such as _target_"
    if o.is_sweep_override():
        return "a sweep"
    value = None if o.is_delete() else o.value()
    if _names_reserved_key(value):
        return "a value with an instantiation key such as _target_"
    if _calls_resolver(value):
        return "an interpolation that calls a resolver"
    if _is_config_group(key) and value is not None and not (isinstance(value, str) and _OPTION_NAME.fullmatch(value)):
        return f"not an option of the {key} group"
    return None


def _is_config_group(key: str) -> bool:
    return "/" in key or (CONF_DIR / key).is_dir()


def _names_reserved_key(value) -> bool:
    if isinstance(value, dict):
        return any(str(k).startswith("_") and str(k).endswith("_") or _names_reserved_key(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_names_reserved_key(v) for v in value)
    return False


def _calls_resolver(value) -> bool:
    if isinstance(value, str):
        return bool(_RESOLVER.search(value))
    if isinstance(value, dict):
        return any(_calls_resolver(k) or _calls_resolver(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_calls_resolver(v) for v in value)
    return False


def apply_renames(argv: list[str]) -> list[str]:
    """STAND-IN (branch data, so infer.py runs here): H1's fer.overrides.apply_renames replaces it at merge."""
    return list(argv)
