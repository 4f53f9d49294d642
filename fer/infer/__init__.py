"""Real-time emotion recognition: source -> detector -> aligner -> classifier -> tracker -> drawing -> sinks.

Each arrow is one module here; `pipeline.py` wires them and `app.py` builds them from the config.
"""
