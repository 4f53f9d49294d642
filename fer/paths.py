"""Files the project ships (the model, the configs), found from any working directory."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def in_project(path: str | Path) -> Path:
    """`path` itself, or, when it is relative and the working directory lacks it but the project has
    it (conf/infer.yaml's and experiment=finetune's fer/weights/...), the project's file."""
    path = Path(str(path)).expanduser()
    if not path.is_absolute() and not path.exists() and (PROJECT_ROOT / path).exists():
        return PROJECT_ROOT / path
    return path
