"""Train (or evaluate) an emotion classifier: `python train.py`, `python -m fer.train`, `fer-train`."""

import sys

import hydra
from omegaconf import DictConfig

from fer.distributed import worker_argv
from fer.errors import exit_on_user_error, task_exits_on_user_error
from fer.overrides import apply_renames
from fer.paths import CONF_DIR
from fer.resume import resume_argv
from fer.rundir import refuse_occupied_run_dir
from fer.train.sweep import require_plugins


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
@task_exits_on_user_error
def task(cfg: DictConfig):
    from fer.train.sweep import run_job  # heavy imports after Hydra has parsed the command line

    return run_job(cfg)


def main():
    with exit_on_user_error():
        sys.argv = apply_renames(sys.argv)  # settings that moved keep their old spelling (model.dropout=, preprocess.*)
        require_plugins(sys.argv)
        sys.argv = resume_argv(worker_argv(sys.argv))  # a DDP worker rejoins rank 0's job, see fer/distributed.py
        refuse_occupied_run_dir(sys.argv)  # before Hydra writes .hydra/ into it
        task()
