"""A picture -> its largest face as a square grey crop of the data set's image size (FER2013: 48x48),
prepared exactly as infer.py prepares faces.

Used to turn a folder of one's own photos into training faces (fer.data.folders): the crops a
model is fine-tuned on must look like the crops it later classifies, or it learns the wrong thing.
"""

import numpy as np
from omegaconf import OmegaConf

from fer.infer.align import FaceAligner
from fer.infer.detect import Detector
from fer.paths import CONF_DIR
from fer.preprocess import square_grey_face, to_grey

CONF = CONF_DIR


class LargestFace:
    def __init__(self, detector: Detector, aligner: FaceAligner, size: int, gamma="auto"):
        self.detector, self.aligner, self.size, self.gamma = detector, aligner, size, gamma

    @classmethod
    def from_infer_defaults(cls, size: int) -> "LargestFace":
        """infer.py's default detector and face settings (conf/infer.yaml and the groups it names)."""
        from fer.infer.app import make_detector  # the detector's one-line refusals

        infer = OmegaConf.load(CONF / "infer.yaml")
        groups = {k: v for d in infer.defaults if isinstance(d, dict) or OmegaConf.is_dict(d) for k, v in d.items()}
        face = OmegaConf.load(CONF / "preprocess" / f"{groups['preprocess']}.yaml")
        # the detector's file interpolates infer.yaml's top-level keys (threads)
        setup = OmegaConf.merge(infer, {"detector": OmegaConf.load(CONF / "detector" / f"{groups['detector']}.yaml")})
        aligner = FaceAligner(face.align, face.margin, eye_cascade=setup.eye_cascade)
        return cls(make_detector(setup.detector, still=True), aligner, size, face.gamma)

    def __call__(self, picture: np.ndarray) -> np.ndarray | None:
        grey = to_grey(picture)
        faces = self.detector.detect(picture if self.detector.colour and picture.ndim == 3 else grey)
        if not faces:
            return None
        face = max(faces, key=lambda f: f.box[2] * f.box[3])  # a labelled photo is about its main face
        box, angle = self.aligner.place(face)
        crop, _ = self.aligner.crop(grey, box, angle)
        return square_grey_face(crop, self.size, self.gamma)
