"""A Ctrl-C that training cannot lose.

Python raises KeyboardInterrupt wherever the main thread is when SIGINT arrives. Inside a weakref
callback or a __del__, which the garbage collector runs between any two bytecodes, the exception is
printed as "Exception ignored in: ..." and dropped, and the run trained on as if nothing had been
pressed. So the handler also remembers the request, and this callback raises it again at the next
batch boundary, where Lightning's own interrupt handling (shut down, then fer's "interrupted", exit 130)
takes it."""

import signal
import threading

from lightning.pytorch.callbacks import Callback


class CtrlCIsNeverLost(Callback):
    def __init__(self):
        self.requested = False
        self._previous = None

    def _on_sigint(self, signum, frame):
        self.requested = True
        raise KeyboardInterrupt

    def setup(self, trainer, pl_module, stage):
        # Signal handlers belong to the main thread; a run driven from another thread keeps Python's.
        main = threading.current_thread() is threading.main_thread()
        if main and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def teardown(self, trainer, pl_module, stage):
        # Lightning ignores further Ctrl-Cs while it shuts down after one: only our own handler is undone.
        if self._previous is not None and signal.getsignal(signal.SIGINT) == self._on_sigint:
            signal.signal(signal.SIGINT, self._previous)
        self._previous = None

    def _raise_if_requested(self, *args):
        if self.requested:
            self.requested = False
            raise KeyboardInterrupt

    on_train_batch_end = on_validation_batch_end = on_test_batch_end = _raise_if_requested
    on_train_epoch_end = on_validation_epoch_end = _raise_if_requested
