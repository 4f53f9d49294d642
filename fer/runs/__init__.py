"""Run directories and checkpoints: what a checkpoint holds and how it is read (checkpoint.py, meta.py),
how a run writes its checkpoints safely (saving.py, atomic.py), and what a run records about itself (runinfo.py).
Torch-free at import, so the ONNX backend can read metadata through meta.py."""
