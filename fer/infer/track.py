"""Faces followed from frame to frame: each keeps an id, and its probabilities are averaged over the
last few frames so the label does not flicker when one frame's face looks a little different."""

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from fer.infer.detect import Box, iou


@dataclass
class Track:
    id: int
    box: Box
    history: deque = field(default_factory=deque)  # the last `window` probability vectors
    missed: int = 0  # frames in a row on which the face was not found again
    angle: float | None = None  # its tilt from the eyes (radians), measured on full-detection frames


class FaceTracker:
    def __init__(self, smooth: int = 5, min_iou: float = 0.3, max_missed: int = 5):
        # smooth: frames averaged (1: no smoothing); min_iou: overlap that makes a box the same face;
        # max_missed: frames a face that was not found stays on screen at its last box.
        self.window, self.min_iou, self.max_missed = max(1, int(smooth)), min_iou, max_missed
        self.tracks: list[Track] = []
        self._next_id = 0

    def update(self, boxes: list[Box]) -> list[Track]:
        """Match this frame's boxes to the tracks (greedy by overlap) -> the tracks on screen now."""
        pairs = sorted(((iou(t.box, b), ti, bi) for ti, t in enumerate(self.tracks) for bi, b in enumerate(boxes)), reverse=True)
        matched_tracks, matched_boxes = set(), set()
        for overlap, ti, bi in pairs:
            if overlap < self.min_iou:
                break
            if ti in matched_tracks or bi in matched_boxes:
                continue
            matched_tracks.add(ti)
            matched_boxes.add(bi)
            self.tracks[ti].box, self.tracks[ti].missed = boxes[bi], 0
        for ti, track in enumerate(self.tracks):
            if ti not in matched_tracks:
                track.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        for bi, box in enumerate(boxes):
            if bi not in matched_boxes:
                self.tracks.append(Track(self._next_id, box, deque(maxlen=self.window)))
                self._next_id += 1
        return list(self.tracks)

    def smooth(self, track: Track, probs: np.ndarray) -> np.ndarray:
        track.history.append(probs)
        return np.mean(track.history, axis=0)
