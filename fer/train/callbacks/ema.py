"""An exponential moving average (EMA) of the weights, as a Lightning callback:
`callbacks=ema callbacks.ema.decay=0.999` (conf/callbacks/ema.yaml).

Validation, the checkpoints (best and last) and the test all use the averaged weights; the raw
ones are kept beside them in the checkpoint so a resumed run continues both. Built on Lightning's
WeightAveraging, with two corrections for this project:
- its averaged copy is made before the LightningModule's setup() fills in the training split's
  normalisation statistics and class weights; they are copied in when training starts, so the
  average does not drift towards them from the defaults;
- testing a best checkpoint restores callbacks too, and WeightAveraging would then put the raw
  weights back into the model: outside fitting, the checkpoint's (averaged) weights stay.
"""

import torch
from lightning.pytorch.callbacks import WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn

from fer.errors import FerError

CONSTANT_BUFFERS = ("pixel_mean", "pixel_std", "class_weight")


class EMAWeights(WeightAveraging):
    def __init__(self, decay: float = 0.999):
        if not 0.0 < decay < 1.0:
            raise FerError(f"callbacks.ema.decay must lie between 0 and 1 (0.999 averages over about 1,000 steps), not {decay}")
        super().__init__(multi_avg_fn=get_ema_multi_avg_fn(decay))
        self.decay = decay

    def on_train_start(self, trainer, pl_module):
        with torch.no_grad():
            for name in CONSTANT_BUFFERS:
                getattr(self._average_model.module, name).copy_(getattr(pl_module, name))

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        if trainer.state.fn == "fit":
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
