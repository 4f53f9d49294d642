"""Emotion recognition on a camera, a video, an image or a folder: `python infer.py`, `python -m fer.infer`, `fer-infer`."""

import sys

import hydra
from omegaconf import DictConfig

from fer.errors import FerError, exit_on_user_error, task_exits_on_user_error
from fer.overrides import apply_renames
from fer.paths import CONF_DIR


@hydra.main(config_path=str(CONF_DIR), config_name="infer", version_base="1.3")
@task_exits_on_user_error
def task(cfg: DictConfig):
    from hydra.core.hydra_config import HydraConfig

    from fer.infer.app import given_face_keys, run  # heavy imports after Hydra has parsed the command line

    run(cfg, given_face_keys(HydraConfig.get().overrides.task))


def require_known_detector(argv: list[str]):
    """detector=NAME must name a file in conf/detector/; checked before Hydra, whose own message is a page."""
    known = sorted(p.stem for p in (CONF_DIR / "detector").glob("*.yaml"))
    for arg in argv[1:]:
        if arg.startswith("detector=") and arg.split("=", 1)[1] not in known:
            raise FerError(f"{arg}: no such detector; choose one of {', '.join(known)} (conf/detector/)")


def main():
    with exit_on_user_error():
        sys.argv = apply_renames(sys.argv)  # model.dropout=, preprocess.* still work (fer.overrides)
        require_known_detector(sys.argv)
        task()
