"""A test-only callback that lets a test see what each DDP process trained: every rank writes its
model's state dict when training starts and when it ends. Only rank 0 writes checkpoints, so without this a test could
not tell whether the other ranks hold the same weights. Added to a run from the command line:

    +callbacks.rank_weights._target_=rank_weights.RankWeights +callbacks.rank_weights.folder=DIR

with tests/ on PYTHONPATH (the DDP workers Lightning starts inherit the environment)."""

from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class RankWeights(Callback):
    def __init__(self, folder: str):
        self.folder = Path(folder)

    def on_train_start(self, trainer, pl_module):
        self._save(trainer, pl_module, "start")

    def on_train_end(self, trainer, pl_module):
        # After the last optimizer step, before the test loads the best checkpoint into the model.
        self._save(trainer, pl_module, "end")

    def _save(self, trainer, pl_module, when: str):
        self.folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        torch.save(state, self.folder / f"rank{trainer.global_rank}-{when}.pt")
