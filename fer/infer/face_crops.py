"""A picture -> its largest face as a 48x48 crop, prepared exactly as infer.py prepares faces.

Used to turn a folder of one's own photos into training faces (fer.data.folders): the crops a
model is fine-tuned on must look like the crops it later classifies, or it learns the wrong thing.
"""

from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fer.infer.align import FaceAligner
from fer.preprocess import face_to_48, to_grey

CONF = Path(__file__).resolve().parents[2] / "conf"


class LargestFace:
    def __init__(self, detector, aligner: FaceAligner, gamma="auto"):
        self.detector, self.aligner, self.gamma = detector, aligner, gamma

    @classmethod
    def from_infer_defaults(cls) -> "LargestFace":
        """infer.py's default detector and face settings (conf/infer.yaml, conf/preprocess/default.yaml)."""
        infer = OmegaConf.load(CONF / "infer.yaml")
        face = OmegaConf.load(CONF / "preprocess" / "default.yaml")
        aligner = FaceAligner(face.align, face.margin, eye_cascade=infer.eye_cascade)
        return cls(instantiate(infer.detector), aligner, face.gamma)

    def __call__(self, picture: np.ndarray) -> np.ndarray | None:
        grey = to_grey(picture)
        boxes = self.detector.detect(grey)
        if not boxes:
            return None
        box = max(boxes, key=lambda b: b[2] * b[3])  # a labelled photo is about its main face
        crop, _ = self.aligner.crop(grey, box)
        return face_to_48(crop, self.gamma)
