"""The commands: one module each, a `main()` that runs the checks Hydra cannot make well, then the
Hydra task. Reached four ways, all the same function: `python train.py` (the top-level shims),
`python -m fer.train`, the console script `fer-train`, and a DDP worker re-launching any of them.

Hydra names the job after the task's module (train, infer, export): hence the log file train.log.
"""
