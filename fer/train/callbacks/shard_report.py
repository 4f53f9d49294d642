"""Under DDP each rank says how much of each split it sees: the evidence that data is split, not repeated."""

import logging

from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


class ShardReport(Callback):
    def on_train_start(self, trainer, pl_module):
        if trainer.world_size == 1:
            return
        dm = trainer.datamodule
        train = trainer.train_dataloader.sampler  # Lightning's DistributedSampler: a new share each epoch
        parts = [f"{len(train)} of {len(dm.splits['train'])} {dm.split_names['train']} faces per epoch ({type(train).__name__})"]
        if trainer.val_dataloaders is not None:  # set up by the sanity check, when there is one
            val = trainer.val_dataloaders.sampler
            parts.append(f"{len(val)} of {len(dm.splits['val'])} {dm.split_names['val']} faces ({type(val).__name__})")
        log.info("rank %d of %d: %s", trainer.global_rank, trainer.world_size, ", ".join(parts))
