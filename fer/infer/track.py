"""Faces followed from frame to frame: each keeps an id, its probabilities are averaged over the
last few frames so the label does not flicker, and between detections it is followed by matching
a small picture of it (a template) around its last position, which costs a few hundredths of a
millisecond where the cascade costs one or two."""

from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from fer.infer.detect import Box, iou, overlap_of_smaller

TEMPLATE_PX = 32  # a face is followed as a 32x32 picture: a few pixels' precision on a 200 px face
# A box lying this much (its area's share) on a face being tracked is that face framed differently
# (or a part of it), never a new face.
SAME_FACE = 0.5


@dataclass
class Track:
    id: int
    box: Box
    history: deque = field(default_factory=deque)  # the last `window` probability vectors
    missed: int = 0  # frames in a row on which the face was not found again
    angle: float | None = None  # its tilt from the eyes (radians), measured when it was detected
    template: np.ndarray | None = None  # (TEMPLATE_PX, TEMPLATE_PX) grey, from its last detection
    hits: int = 1  # detections it was found on


class FaceTracker:
    def __init__(
        self,
        smooth: int = 5,
        min_iou: float = 0.3,
        max_missed: int = 5,
        reach: float = 0.3,
        min_match: float = 0.6,
        confirm: int = 2,
    ):
        # smooth: frames averaged (1: no smoothing); min_iou: overlap that makes a box the same face;
        # max_missed: frames a face that was not found stays on screen at its last box;
        # reach: how far (fraction of its size) a face is looked for between detections;
        # min_match: the template correlation below which the face counts as not found;
        # confirm: detections in a row a new face needs before it is shown (1: at once).
        self.window, self.min_iou, self.max_missed = max(1, int(smooth)), min_iou, max_missed
        self.reach, self.min_match, self.confirm = reach, min_match, max(1, int(confirm))
        self.tracks: list[Track] = []
        self._next_id = 0

    def update(self, boxes: list[Box], angles: list[float | None] | None = None, detected: bool = True) -> list[Track]:
        """Match this frame's boxes to the tracks (greedy by overlap) -> the tracks on screen now.

        angles: each box's tilt, given to its track (None in the list: to be measured); None: the
        tracks keep theirs. detected: the boxes come from a detection (False: faces followed between
        detections), which is what confirms a new face."""
        pairs = sorted(((iou(t.box, b), ti, bi) for ti, t in enumerate(self.tracks) for bi, b in enumerate(boxes)), reverse=True)
        matched_tracks, matched_boxes = set(), set()
        for overlap, ti, bi in pairs:
            if overlap < self.min_iou:
                break
            if ti in matched_tracks or bi in matched_boxes:
                continue
            matched_tracks.add(ti)
            matched_boxes.add(bi)
            self._found(self.tracks[ti], boxes[bi], angles, bi, detected)
        # A box left over that lies mostly on a track's box is that face (grown, shrunk, moved fast)
        # when the track is unmatched, and a second box on a face already matched otherwise: it never
        # starts a new face.
        for bi, box in enumerate(boxes):
            if bi in matched_boxes:
                continue
            on = [ti for ti, t in enumerate(self.tracks) if overlap_of_smaller(t.box, box) >= SAME_FACE]
            free = [ti for ti in on if ti not in matched_tracks]
            if free:
                ti = max(free, key=lambda ti: overlap_of_smaller(self.tracks[ti].box, box))
                matched_tracks.add(ti)
                self._found(self.tracks[ti], box, angles, bi, detected)
            if on:
                matched_boxes.add(bi)
        for ti, track in enumerate(self.tracks):
            if ti not in matched_tracks:
                track.missed += 1
        # A face not yet confirmed goes as soon as a detection misses it: one box is not a face yet.
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed and (self.shown(t) or not (detected and t.missed))]
        for bi, box in enumerate(boxes):
            if bi not in matched_boxes:
                angle = None if angles is None else angles[bi]
                self.tracks.append(Track(-1, box, deque(maxlen=self.window), angle=angle))
        shown = [t for t in self.tracks if self.shown(t)]
        for track in shown:
            if track.id < 0:  # ids count the faces shown, not every box that was tried
                track.id, self._next_id = self._next_id, self._next_id + 1
        return shown

    def shown(self, track: Track) -> bool:
        return track.hits >= self.confirm

    def _found(self, track: Track, box: Box, angles: list[float | None] | None, index: int, detected: bool):
        track.box, track.missed = box, 0
        track.hits += detected
        if angles is not None:
            track.angle = angles[index]

    def smooth(self, track: Track, probs: np.ndarray) -> np.ndarray:
        track.history.append(probs)
        return np.mean(track.history, axis=0)

    def remember(self, grey: np.ndarray, track: Track):
        """Keep the face's look on this (detection) frame, to follow it on the next ones."""
        if track.missed == 0:
            track.template = _region(grey, track.box, 0.0, TEMPLATE_PX / max(track.box[2], 1))

    def follow(self, grey: np.ndarray, track: Track) -> Box | None:
        """Where the face is now: the best template match within `reach` of its last box; None when
        nothing there looks like it (it left, or turned away)."""
        if track.template is None:
            return None
        x, y, w, h = track.box
        scale = TEMPLATE_PX / max(w, 1)
        found = _region(grey, track.box, self.reach, scale, with_origin=True)
        if found is None:
            return None
        area, (x0, y0) = found
        if area.shape[0] < TEMPLATE_PX or area.shape[1] < TEMPLATE_PX:
            return None
        scores = cv2.matchTemplate(area, track.template, cv2.TM_CCOEFF_NORMED)
        _, best, _, (dx, dy) = cv2.minMaxLoc(scores)
        if best < self.min_match:
            return None
        return int(round(x0 + dx / scale)), int(round(y0 + dy / scale)), w, h


def _region(grey: np.ndarray, box: Box, reach: float, scale: float, with_origin: bool = False):
    """The box grown by `reach` of its size on each side (clipped to the frame), shrunk by `scale`."""
    x, y, w, h = box
    pad = int(reach * w)
    x0, y0 = max(0, x - pad), max(0, y - pad)
    x1, y1 = min(grey.shape[1], x + w + pad), min(grey.shape[0], y + h + pad)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    size = (max(1, int(round((x1 - x0) * scale))), max(1, int(round((y1 - y0) * scale))))
    if not with_origin:  # a template: exactly TEMPLATE_PX square
        size = (TEMPLATE_PX, TEMPLATE_PX)
    area = cv2.resize(grey[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA)
    return (area, (x0, y0)) if with_origin else area
