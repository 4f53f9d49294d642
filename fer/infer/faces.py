from dataclasses import dataclass

import numpy as np

from fer.infer.detect import Box


@dataclass
class FaceResult:
    """One face on one frame, as drawn and written."""

    id: int  # stable across a video's frames (tracking); the face's order on an image
    box: Box  # x, y, width, height in the frame's pixels
    probs: np.ndarray  # (classes,) probabilities, smoothed over the track's last frames
    landmarks: np.ndarray | None = None  # (5, 2) the detector's landmarks (images only; None: none found or tracked)

    @property
    def label(self) -> int:
        return int(np.argmax(self.probs))

    @property
    def confidence(self) -> float:
        return float(np.max(self.probs))
