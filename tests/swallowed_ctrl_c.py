"""A test-only callback that presses Ctrl-C where Python loses it: inside a finaliser (__del__), whose
exceptions Python prints as "Exception ignored in: ..." and drops, as it does in the weakref callbacks
the garbage collector runs at any moment. Added to a run from the command line:

    +callbacks.swallowed._target_=swallowed_ctrl_c.SwallowedCtrlC

with tests/ on PYTHONPATH. It presses once, at the end of the second training epoch."""

import os
import signal
import time

from lightning.pytorch.callbacks import Callback


class _PressesCtrlCWhenCollected:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.5)  # the handler runs here, inside __del__, and its KeyboardInterrupt goes nowhere


class SwallowedCtrlC(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            _PressesCtrlCWhenCollected()  # collected at once: the interrupt is raised and swallowed in __del__
