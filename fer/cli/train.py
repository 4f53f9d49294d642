"""Train (or evaluate) an emotion classifier: `python train.py`, `python -m fer.train`, `fer-train`."""

import sys

import hydra
from omegaconf import DictConfig

from fer.errors import exit_on_user_error, hydra_errors_raise, task_exits_on_user_error
from fer.paths import CONF_DIR
from fer.train.distributed import worker_argv
from fer.train.sweep import require_plugins


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
@task_exits_on_user_error
def task(cfg: DictConfig):
    from fer.train.sweep import run_job  # heavy imports after Hydra has parsed the command line

    return run_job(cfg)


def main():
    with exit_on_user_error(), hydra_errors_raise():
        require_plugins(sys.argv)
        sys.argv = worker_argv(sys.argv)  # a DDP worker Lightning started rejoins rank 0's job (fer/train/distributed.py)
        task()
