"""Training: the LightningModule (module.py), the run that composes data, model, callbacks, loggers and
trainer (run.py), the callbacks that report after fitting (callbacks/), and sweeps (sweep.py).
`python -m fer.train` is the same command as `python train.py`."""
