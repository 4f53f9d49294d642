"""Emotion recognition on a camera, a video, an image or a folder: `python infer.py`, `python -m fer.infer`, `fer-infer`."""

import hydra
from omegaconf import DictConfig

from fer.errors import exit_on_user_error, hydra_errors_raise, task_exits_on_user_error
from fer.paths import CONF_DIR


@hydra.main(config_path=str(CONF_DIR), config_name="infer", version_base="1.3")
@task_exits_on_user_error
def task(cfg: DictConfig):
    from hydra.core.hydra_config import HydraConfig

    from fer.config import check_infer
    from fer.infer.app import given_face_keys, run  # heavy imports after Hydra has parsed the command line

    check_infer(cfg, HydraConfig.get().runtime.choices)
    run(cfg, given_face_keys(HydraConfig.get().overrides.task))


def main():
    with exit_on_user_error(), hydra_errors_raise():
        task()
