"""After the test: a temperature per TTA mode fitted on the validation split, and the test split's
accuracy, macro-F1 and ECE before and after, for every mode (fer.train.calibration). The temperatures
go into the checkpoint that was tested; an evaluated checkpoint is left as it is, and a calibrated slim
copy is written in the run dir instead.

What it costs: one batched pass over each split's ten views (every mode comes from them), in bfloat16 where
the run computes in it on a CPU that has it natively (fer.train.precision), and on the test split without the
centre crops a test at tta=none has just computed: those logits are taken as they are."""

import logging
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from fer.runs.checkpoint import save_slim, update_meta
from fer.train import calibration, plots, precision

log = logging.getLogger(__name__)


class Calibrate(Callback):
    def __init__(
        self,
        run_dir: str,
        enabled: bool = True,
        trained: bool = True,
        after_evaluation: bool = False,
        ckpt_path=None,
        min_val_faces: int = 50,
    ):
        # After training it is on (calibrate=true); a checkpoint evaluated with train=false is calibrated
        # only when asked (callbacks=calibrate): that costs minutes a test alone does not.
        self.active = bool(enabled and (trained or after_evaluation))
        self.run_dir, self.trained, self.ckpt_path = Path(run_dir), trained, ckpt_path
        # One temperature fitted on a few validation faces follows their noise: on a folder with 5 validation
        # faces it made the test split's ECE worse (30.4 -> 39.3). Below this, the probabilities stay as they are.
        self.min_val_faces = min_val_faces

    def on_test_end(self, trainer, pl_module):
        if not (self.active and trainer.is_global_zero):
            return
        dm = trainer.datamodule
        val = dm.evaluated_faces("val", trainer.limit_val_batches)
        test = dm.evaluated_faces("test", trainer.limit_test_batches)
        if len(val[1]) < self.min_val_faces:
            skipped = (
                f"not calibrated: {len(val[1])} {dm.split_names['val']} faces are too few to fit a temperature on "
                f"(callbacks.calibration.min_val_faces={self.min_val_faces}); the checkpoint keeps its probabilities"
            )
            log.warning(skipped)
            pl_module.reports["calibration"] = {"skipped": skipped}
            return
        log.info(
            "calibrating: a temperature per TTA mode (%s) fitted on %d %s faces, judged on %d %s faces, "
            "one pass over each (calibrate=false skips this)",
            ", ".join(calibration.TTA_MODES),
            len(val[1]),
            dm.split_names["val"],
            len(test[1]),
            dm.split_names["test"],
        )
        report = calibration.report(
            pl_module,
            val,
            test,
            dm.mean,
            dm.std,
            pl_module.input_size,
            bf16=precision.reports_in_bfloat16(trainer.precision, pl_module.device),
            test_centre=_test_centre(trainer, pl_module, len(test[1])),
        )
        pl_module.temperatures = {mode: r["temperature"] for mode, r in report.items()}
        r = report[pl_module.tta]
        title = (
            f"{pl_module.net_spec['arch']}, {dm.split_names['test']}, tta={pl_module.tta}: "
            f"temperature {r['temperature']:.2f} fitted on {dm.split_names['val']}"
        )
        plots.save(
            plots.reliability_figure(r["reliability"], r["reliability_calibrated"], title), self.run_dir / "reliability.png"
        )
        tested = trainer.ckpt_path  # the best checkpoint the test loaded; None when it tested the weights in memory
        if tested:
            update_meta(tested, temperature=pl_module.temperatures)
            report["stored_in"] = str(tested)
        elif self.ckpt_path and not self.trained:
            copy = save_slim(
                self.ckpt_path,
                self.run_dir / "checkpoints" / "calibrated.ckpt",
                meta_updates={"temperature": pl_module.temperatures},
            )
            report["stored_in"] = str(copy)
            log.info("calibrated copy of %s: %s", self.ckpt_path, copy)
        pl_module.reports["calibration"] = report


def _test_centre(trainer, pl_module, faces: int) -> torch.Tensor | None:
    """The centre-crop logits the test step computed for these test faces (tta=none, one process that
    saw them all), which calibration then takes as they are; None when it has to compute them."""
    if pl_module.tta != "none" or trainer.world_size != 1 or not pl_module.test_logits:
        return None
    logits = torch.cat(pl_module.test_logits)
    return logits if len(logits) == faces else None
