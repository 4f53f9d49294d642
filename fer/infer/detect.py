"""Face detection: what every detector gives the pipeline (a `Detector` returns `Detection`s), and
Viola-Jones (OpenCV's Haar cascades), the paper's choice for speed (`detector=haar`). The default,
RetinaFace, is in fer/infer/retinaface.py; a new detector is one class with `detect` and one YAML
in conf/detector/.

Viola-Jones:

Frames are shrunk first so the smallest face we look for is `work_px` pixels: the cascade's cost
then depends on how small a face may be relative to the frame, not on the camera's resolution, and
OpenCV scans its finer scales with a 2-pixel stride (measured on a 640x480 frame with one FER2013
face: 26 ms of CPU unshrunk, 16 ms at 32 px, 13 ms at 24 px). 32 px keeps faces near the smallest
size findable: of FER2013 faces 1.33x the minimum, 77% were found at 32 px, 60% at 24 px.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from fer.errors import FerError

Box = tuple[int, int, int, int]  # x, y, width, height in frame pixels
# A tracked face is looked for again at this size: finer than a full detection's work_px, because
# it is the face itself, not the smallest face possible (FER2013 faces that a full detection found:
# 99% found again near their last box at 48 px, 95% at 40 px, 79% at 32 px).
NEAR_PX = 48


@dataclass(frozen=True)
class Detection:
    box: Box  # in full-frame pixels
    score: float  # the detector's confidence (a cascade's: 1)
    # (5, 2) x, y in frame pixels: the eye on the image's left, the other eye, the nose tip, the mouth
    # corner on the image's left, the other corner. None: the detector finds no landmarks.
    landmarks: np.ndarray | None = None


class Detector(Protocol):
    colour: bool  # True: detect() wants the BGR frame; False: the grey one is enough

    def detect(self, frame: np.ndarray, known: Sequence[Box] = ()) -> list[Detection]:
        """Every face on the frame, left to right. known: boxes of faces being tracked, which a
        detector may look for more cheaply near where they were (or ignore)."""
        ...


def load_cascade(name_or_path: str) -> cv2.CascadeClassifier:
    """A cascade shipped with OpenCV (cv2.data.haarcascades) by file name, or any cascade file by path."""
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        path = Path(cv2.data.haarcascades) / name_or_path
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise FerError(
            f"could not load the Haar cascade {name_or_path!r} (looked in {cv2.data.haarcascades}); "
            "use a file name from there or a path to a cascade .xml (opencv-python 5.x ships none: use 4.x)"
        )
    return cascade


def iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def overlap_of_smaller(a: Box, b: Box) -> float:
    """Intersection over the smaller box's area: 1 when one box lies inside the other."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    smaller = min(a[2] * a[3], b[2] * b[3])
    return ix * iy / smaller if smaller > 0 else 0.0


class FaceDetector:
    def __init__(
        self,
        cascade: str = "haarcascade_frontalface_default.xml",
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_face: float = 0.1,
        work_px: int = 32,
        equalize: bool = False,
        near_min_neighbors: int = 3,
    ):
        if not 0 < min_face <= 1:
            raise FerError(f"detector.min_face must be a fraction of the frame's shorter side in (0, 1], not {min_face}")
        if scale_factor <= 1:
            raise FerError(f"detector.scale_factor must be above 1 (1.1 is usual), not {scale_factor}")
        self.cascade = load_cascade(cascade)
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors
        self.min_face, self.work_px = min_face, max(24, work_px)  # 24: the frontal cascades' window
        self.equalize = equalize
        # Near a face's last box a weaker vote is enough: the search is small and the face was there.
        self.near_min_neighbors = near_min_neighbors

    def _shrink(self, grey: np.ndarray, smallest_face: float, work_px: float) -> tuple[np.ndarray, float]:
        scale = min(1.0, work_px / max(smallest_face, 1.0))
        if scale < 1.0:
            grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        if self.equalize:
            grey = cv2.equalizeHist(grey)
        return grey, scale

    def _run(self, grey: np.ndarray, min_px: float, max_px: float = 0, min_neighbors: int | None = None) -> np.ndarray:
        """(N, 4) float boxes, strongest first; of boxes nested in one another only the strongest stays."""
        boxes, votes = self.cascade.detectMultiScale2(
            grey,
            self.scale_factor,
            self.min_neighbors if min_neighbors is None else min_neighbors,
            minSize=(int(min_px), int(min_px)),
            maxSize=(int(max_px), int(max_px)),  # (0, 0): no limit
        )
        kept: list[tuple] = []
        for i in np.argsort(-np.asarray(votes).ravel(), kind="stable"):
            box = tuple(float(v) for v in boxes[i])
            if all(overlap_of_smaller(box, k) < 0.5 for k in kept):
                kept.append(box)
        return np.asarray(kept, dtype=np.float64).reshape(-1, 4)

    def detect(self, grey: np.ndarray, known: Sequence[Box] = ()) -> list[Box]:
        """Every face on a 2-D uint8 frame at least min_face of its shorter side, left to right.

        known: faces already found on this frame (tracked ones); they are blanked out first, because
        the cascade spends most of its time on faces (a frame with two costs twice one with one)."""
        smallest = self.min_face * min(grey.shape[:2])
        small, scale = self._shrink(grey, smallest, self.work_px)
        if len(known):
            small = small.copy() if small is grey else small
            for x, y, w, h in known:  # with a fifth of the box around it: hair and chin cost as much
                x0, y0 = int((x - w / 5) * scale), int((y - h / 5) * scale)
                x1, y1 = int((x + w * 6 / 5) * scale) + 1, int((y + h * 6 / 5) * scale) + 1
                small[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = 128
        boxes = [tuple(int(round(v)) for v in b) for b in self._run(small, max(24, smallest * scale)) / scale]
        # A box mostly on a known face is that face again (framed wider or narrower), not a new one.
        boxes = [b for b in boxes if all(overlap_of_smaller(b, k) < 0.5 for k in known)]
        return sorted(boxes, key=lambda b: b[0])

    def find_near(self, grey: np.ndarray, box: Box, reach: float = 0.3, size_change: float = 1.3) -> Box | None:
        """The face that was at `box` on a previous frame, re-detected in a small region around it
        (a tenth of a full detection's cost). None when it is not there.

        reach: how far it may have moved, as a fraction of its size; size_change: how much it may have
        grown or shrunk."""
        x, y, w, h = box
        pad = int(reach * max(w, h))
        x0, y0 = max(0, x - pad), max(0, y - pad)
        x1, y1 = min(grey.shape[1], x + w + pad), min(grey.shape[0], y + h + pad)
        if x1 - x0 < 24 or y1 - y0 < 24:
            return None
        small, scale = self._shrink(grey[y0:y1, x0:x1], w / size_change, NEAR_PX)
        side = w * scale
        found = self._run(small, max(24, side / size_change), side * size_change, self.near_min_neighbors)
        if not len(found):
            return None
        found = found / scale + (x0, y0, 0, 0)
        best = max(found, key=lambda b: iou(tuple(b), box))
        return tuple(int(round(v)) for v in best)


class HaarDetector:
    """Viola-Jones behind the `Detector` interface (detector=haar): faces being tracked are re-detected
    near their last box (cheap), the rest of the frame is searched with them blanked out."""

    colour = False

    def __init__(self, reach: float = 0.3, **cascade):
        # reach: how far (fraction of its size) a tracked face is looked for around its last box.
        self.cascade, self.reach = FaceDetector(**cascade), reach

    def detect(self, frame: np.ndarray, known: Sequence[Box] = ()) -> list[Detection]:
        near = (self.cascade.find_near(frame, box, self.reach) for box in known)
        found = [b for b in near if b is not None]
        boxes = found + self.cascade.detect(frame, known=found)
        return [Detection(b, 1.0) for b in sorted(boxes, key=lambda b: b[0])]
