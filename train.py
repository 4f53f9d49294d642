"""Train (or evaluate) an emotion classifier.

    python train.py                                    # the regularized model on FER2013
    python train.py model=baseline trainer.max_epochs=30
    python train.py -m model.dropout=0.2,0.35,0.5      # a sweep, one run dir each + summary table
    python train.py train=false ckpt_path=PATH         # test-split accuracy of a checkpoint
    python train.py ckpt_path=outputs/runs/.../checkpoints/last.ckpt   # resume that run

The same command as `python -m fer.train` and `fer-train` (fer/cli/train.py), which work from any directory.
"""

from fer.cli.train import main

if __name__ == "__main__":
    main()
