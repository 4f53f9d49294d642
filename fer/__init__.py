"""Facial emotion recognition on FER2013: Hydra configs, Lightning training, real-time inference."""

__version__ = "0.1.0"
