"""Hydra overrides read before Hydra runs: the command line's, and those a run dir recorded.

Parsed with Hydra's own parser, so quoting (`hydra.run.dir='a b'`) reads as Hydra will read it.
`refusal` says why a recorded override must not be applied again without the user asking: a run
folder is a file anyone can hand over, and an override can name code to run (a `_target_`) or
change Hydra itself (its callbacks, search path, config directory).
"""

import re
import sys

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


# Settings that moved (issue 16): the old spelling still works, rewritten with a note. A key equal to
# or under the old name, and the config group of that name (preprocess=default), are rewritten.
RENAMED = {"model.dropout": "model.net.dropout", "preprocess": "face"}
# Flat switches that became options of the callbacks group: old key -> (option, its setting or None).
RETIRED = {
    "ema_decay": ("ema", "callbacks.ema.decay"),
    "early_stopping_patience": ("early_stopping", "callbacks.early_stopping.patience"),
    "finetune.freeze": ("freeze_features", None),  # its one value, features
}
_KEY_PREFIX = re.compile(r"^[~+]*")  # ~ deletes, + and ++ add: the key follows


def apply_renames(argv: list[str]) -> list[str]:
    """argv with settings that moved in their new spelling, and ONE note on stderr saying what was rewritten
    ("model.dropout= is now model.net.dropout=")."""
    renamed, notes = rename_overrides(argv[1:])
    if notes:
        print("note: " + "; ".join(notes), file=sys.stderr, flush=True)
    return [*argv[:1], *renamed]


def rename_overrides(args: list[str]) -> tuple[list[str], list[str]]:
    """(args in the new spelling, one "old is now new" per rewrite). Flags and their values are left alone.
    Also what a resume re-applies from a run recorded before the rename (fer.resume)."""
    out, notes, options, skip = [], [], [], False
    for a in args:
        if skip or a.startswith("-"):
            skip = not skip and a in _FLAGS_WITH_VALUE
            out.append(a)
            continue
        prefix = _KEY_PREFIX.match(a).group(0)
        key, sep, value = a[len(prefix) :].partition("=")
        if key in RETIRED:
            option, setting = RETIRED[key]
            if value == "null" or prefix == "~":  # the default: switched off
                notes.append(f"{a} is now the default (no callbacks={option})")
                continue
            if setting is None and value != "features":
                raise FerError(f"{a}: the convolutional features are the one part that can be frozen: callbacks={option}")
            options.append(option)
            new = [f"callbacks={option}", *([f"{setting}={value}"] if setting else [])]
            notes.append(f"{a} is now {' '.join(new)}")
            out.extend(new[1:])
            continue
        new_key = _renamed(key)
        if new_key != key and f"{key}{sep} is now {new_key}{sep}" not in notes:
            notes.append(f"{key}{sep} is now {new_key}{sep}")
        out.append(f"{prefix}{new_key}{sep}{value}")
    if options:
        if any(a.partition("=")[0].lstrip("+") == "callbacks" for a in out):
            raise FerError(f"give callbacks= once: callbacks=[{','.join(options)},...] (replaces {', '.join(RETIRED)})")
        out.insert(0, f"callbacks={options[0]}" if len(options) == 1 else f"callbacks=[{','.join(options)}]")
    return out, notes


def _renamed(key: str) -> str:
    for old, new in RENAMED.items():
        if key == old or key.startswith(old + "."):
            return new + key[len(old) :]
    return key


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
    if _is_config_group(key) and value is not None and not _names_options(value):
        return f"not an option of the {key} group"
    return None


def _is_config_group(key: str) -> bool:
    return "/" in key or (CONF_DIR / key).is_dir()


def _names_options(value) -> bool:
    # One option (model=vgg) or several of a group that takes a list (callbacks=[ema,early_stopping]).
    options = value if isinstance(value, list) else [value]
    return bool(options) and all(isinstance(v, str) and _OPTION_NAME.fullmatch(v) for v in options)


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
