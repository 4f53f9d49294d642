"""After the test of a warm-started run (init_from=): the figure a fine-tuned model must beat, the
starting checkpoint's accuracy on the same test faces."""

import logging

from lightning.pytorch.callbacks import Callback

from fer.paths import in_project
from fer.train import warmstart

log = logging.getLogger(__name__)


class WarmStartComparison(Callback):
    def __init__(self, init_from: str | None = None, trained: bool = True):
        self.init_from = in_project(init_from) if init_from and trained else None  # the shipped model from any directory

    def on_test_end(self, trainer, pl_module):
        if not (self.init_from and trainer.is_global_zero):
            return
        images, labels = trainer.datamodule.evaluated_faces("test", trainer.limit_test_batches)
        acc = warmstart.test_accuracy(self.init_from, images, labels, pl_module.tta)
        pl_module.reports["init_from"] = {"checkpoint": str(self.init_from), "test_acc": acc, "test_faces": len(labels)}
        # On a small folder one face moves accuracy by whole points: say how many faces the figures stand on.
        n = len(labels)
        step = f"; on {n} faces one face is {100 / n:.1f} points" if 0 < n < 100 else ""
        log.info(
            "started from %s: test %.2f%% on the same %d faces (this run: %.2f%%%s)",
            self.init_from,
            100 * acc,
            n,
            100 * pl_module.test_results["test/acc"],
            step,
        )
