"""`python train.py ckpt_path=RUN/checkpoints/last.ckpt` continues that run: in its own directory
(one TensorBoard run, one best checkpoint) and with its original overrides, so the user does not
have to repeat them. Later arguments on the command line still win."""

import sys
from pathlib import Path

from omegaconf import OmegaConf


def _value(argv: list[str], key: str) -> str | None:
    for a in argv:
        if a.startswith(key + "="):
            return a.split("=", 1)[1]
    return None


def resume_argv(argv: list[str]) -> list[str]:
    args = argv[1:]
    ckpt = _value(args, "ckpt_path")
    if not ckpt or ckpt == "null" or (_value(args, "train") or "true").lower() == "false":
        return argv
    if any(a in ("-m", "--multirun") for a in args) or _value(args, "hydra.run.dir"):
        return argv
    run_dir = Path(ckpt).expanduser().resolve().parent.parent  # RUN/checkpoints/last.ckpt
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        return argv  # not one of our run dirs: resume with the config as given, in a new dir
    original = [o for o in OmegaConf.load(overrides_file) if not o.split("=", 1)[0].lstrip("+~") in ("ckpt_path", "hydra.run.dir")]
    given_keys = {a.split("=", 1)[0] for a in args}
    kept = [o for o in original if o.split("=", 1)[0] not in given_keys]
    print(f"resuming {run_dir} with its overrides: {' '.join(kept) or '(none)'}", file=sys.stderr, flush=True)
    return [argv[0], *kept, *args, f"hydra.run.dir={run_dir}"]
