"""After the test: the run's figures, curves.png (accuracy and loss per epoch) and confusion_test.png."""

from pathlib import Path

from lightning.pytorch.callbacks import Callback

from fer.train import plots


class Figures(Callback):
    def __init__(self, run_dir: str):
        self.run_dir = Path(run_dir)

    def on_test_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        arch = pl_module.net_spec["arch"]
        if pl_module.history:
            plots.save(
                plots.curves_figure(pl_module.history, f"{arch}: accuracy and loss per epoch"), self.run_dir / "curves.png"
            )
        test = pl_module.test_results
        title = f"{arch}, {trainer.datamodule.describe('test')} accuracy {test['test/acc']:.1%}"
        plots.save(plots.confusion_figure(test["confmat"], pl_module.class_names, title), self.run_dir / "confusion_test.png")
