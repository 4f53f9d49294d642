"""After the test: the best model's accuracy on the Training split, measured the way test accuracy is
(un-augmented faces, eval mode), not the running figure from augmented batches. The paper reports it
(98% vs 92%): the gap to the test score is the overfitting regularisation is meant to close.

The split is the largest (FER2013: 28,709 faces), so it goes through the network in large batches, in
bfloat16 where the run computes in it on a CPU that has it natively (fer.train.precision): a few faces'
difference from fp32 in a figure given to a tenth of a percent, for half the time."""

import logging

from lightning.pytorch.callbacks import Callback

from fer.train import precision
from fer.train.calibration import split_logits

log = logging.getLogger(__name__)


class TrainSplitScore(Callback):
    def __init__(self, enabled: bool = True, trained: bool = True):
        # An evaluation-only run (train=false) has no training to measure: it pays for the test alone.
        self.active = bool(enabled and trained)

    def on_test_end(self, trainer, pl_module):
        if not (self.active and trainer.is_global_zero):
            return
        dm = trainer.datamodule
        images, labels = dm.evaluated_faces("train", trainer.limit_train_batches)
        log.info(
            "evaluating the %s split: %d faces, un-augmented (eval_train_split=false skips this)",
            dm.split_names["train"],
            len(labels),
        )
        bf16 = precision.reports_in_bfloat16(trainer.precision, pl_module.device)
        logits = split_logits(pl_module, images, dm.mean, dm.std, pl_module.input_size, "none", bf16)
        correct = int((logits.argmax(1) == labels).sum())
        pl_module.reports["train_split"] = {"acc": correct / max(len(labels), 1), "faces": len(labels)}
