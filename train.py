"""Train (or evaluate) an emotion classifier.

    python train.py                                    # the regularized model on FER2013
    python train.py model=baseline trainer.max_epochs=30
    python train.py -m model.net.dropout=0.2,0.35,0.5  # a sweep, one run dir each + summary table
    python train.py train=false ckpt_path=PATH         # test-split accuracy of a checkpoint
    python train.py ckpt_path=outputs/runs/.../checkpoints/last.ckpt   # resume that run
"""

import sys

import hydra
from omegaconf import DictConfig

from fer.distributed import worker_argv
from fer.errors import exit_on_user_error
from fer.overrides import apply_renames
from fer.resume import resume_argv
from fer.rundir import refuse_occupied_run_dir
from fer.sweep import require_plugins


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig):
    from fer.sweep import run_job  # heavy imports after Hydra has parsed the command line

    return run_job(cfg)


if __name__ == "__main__":
    with exit_on_user_error():
        sys.argv = apply_renames(sys.argv)  # settings that moved keep their old spelling (model.dropout=, preprocess.*)
        require_plugins(sys.argv)
        sys.argv = resume_argv(worker_argv(sys.argv))  # a DDP worker rejoins rank 0's job, see fer/distributed.py
        refuse_occupied_run_dir(sys.argv)  # before Hydra writes .hydra/ into it
        main()
