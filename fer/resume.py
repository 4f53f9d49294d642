"""`python train.py ckpt_path=RUN/checkpoints/last.ckpt` continues that run: in its own directory
(one TensorBoard run, one best checkpoint) and with its original overrides, so the user does not
have to repeat them. Later arguments on the command line still win.

Only overrides of the project's own settings come back by themselves (fer.overrides.refusal): a run
folder may come from anyone, and one whose overrides.yaml names code to run or changes Hydra itself
is refused, with what it asked for, before anything runs."""

import sys
from pathlib import Path

from omegaconf import OmegaConf

from fer import overrides
from fer.distributed import _quoted
from fer.errors import FerError

_NOT_CARRIED = ("ckpt_path", "hydra.run.dir")  # this resume's own: where from, where to


def resume_argv(argv: list[str]) -> list[str]:
    args = argv[1:]
    given = overrides.command_line(args)
    ckpt = overrides.element(given, "ckpt_path")
    if not ckpt or str(overrides.element(given, "train")).lower() == "false":
        return argv
    if any(a in overrides.MULTIRUN_FLAGS for a in args) or "hydra.run.dir" in given:
        return argv
    ckpt = Path(str(ckpt)).expanduser().resolve()
    run_dir = ckpt.parent.parent  # RUN/checkpoints/last.ckpt
    if ckpt.parent.name != "checkpoints":
        return argv  # not in a run dir: resume with the config as given, in a new dir
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    # The checkpoint's own record first: .hydra/overrides.yaml is rewritten by any later command run in this
    # dir (a resume that then failed, say); the file serves checkpoints written before the record existed.
    recorded, source = _checkpoint_record(ckpt), ckpt
    if recorded is None:
        if not overrides_file.is_file():
            return argv  # not one of our run dirs: resume with the config as given, in a new dir
        recorded, source = _recorded(overrides_file), overrides_file
    recorded, _ = overrides.rename_overrides(recorded)  # a run from before a setting moved: its new spelling
    kept, refused = [], []
    for line in recorded:
        try:
            o = overrides.parse(line)
        except FerError:
            refused.append(f"{line} (not an override Hydra can read)")
            continue
        if o.key_or_group in _NOT_CARRIED or o.key_or_group in given:
            continue
        why = overrides.refusal(o)
        if why:
            refused.append(f"{line} ({why})")
        else:
            kept.append(line)
    if refused:
        raise FerError(
            f"not resuming: {source} asks for what resume does not re-apply by itself: {'; '.join(refused)}. "
            "Nothing was run; if the run is yours and you trust them, give them on the command line yourself"
        )
    print(f"resuming {run_dir} with its overrides: {' '.join(kept) or '(none)'}", file=sys.stderr, flush=True)
    return [argv[0], *kept, *args, f"hydra.run.dir={_quoted(run_dir)}"]


def _checkpoint_record(ckpt: Path) -> list[str] | None:
    """The overrides fer.runs.saving.RunRecord stored in the checkpoint, or None (older, slim or unreadable:
    train.py says what is wrong with it once Hydra has started)."""
    import torch  # here: only a resume pays for it before Hydra starts

    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)["callbacks"]["RunRecord"]
    except Exception:  # not a zip-format Lightning checkpoint with a record
        return None
    overrides = state.get("overrides") if isinstance(state, dict) else None
    return overrides if isinstance(overrides, list) and all(isinstance(o, str) for o in overrides) else None


def _recorded(overrides_file: Path) -> list[str]:
    try:
        recorded = OmegaConf.to_container(OmegaConf.load(overrides_file))
    except Exception as e:  # not YAML, unreadable
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise FerError(f"not resuming: {overrides_file} cannot be read ({reason})") from None
    if recorded is None:
        return []
    if not isinstance(recorded, list) or not all(isinstance(o, str) for o in recorded):
        raise FerError(f"not resuming: {overrides_file} is not a list of overrides as Hydra writes it")
    return recorded
