"""Synthetic scenes built from real 48x48 faces, for the tests and the speed benchmark: faces
enlarged and placed on a larger frame (no camera needed), with the boxes where they were put."""

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from fer.infer.detect import Box

FACE_SCALE = 4  # 48 -> 192 px on a 640x480 frame: the frontal cascade finds most FER2013 faces this size


def background(size: tuple[int, int]) -> np.ndarray:
    """A soft grey gradient (w, h) -> (h, w, 3) uint8: plain enough that the cascade sees no faces in it."""
    w, h = size
    ramp = np.linspace(90, 170, w, dtype=np.float32)[None, :] * np.linspace(0.9, 1.1, h, dtype=np.float32)[:, None]
    return cv2.cvtColor(ramp.astype(np.uint8), cv2.COLOR_GRAY2BGR)


def place_faces(
    faces: Sequence[np.ndarray], corners: Sequence[tuple[int, int]], size=(640, 480), scale: float = FACE_SCALE
) -> tuple[np.ndarray, list[Box]]:
    """Faces (48x48 uint8) enlarged `scale` times with their top-left corners at `corners` -> (BGR frame, boxes)."""
    frame = background(size)
    boxes = []
    for face, (x, y) in zip(faces, corners):
        side = int(round(face.shape[0] * scale))
        big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
        frame[y : y + side, x : x + side] = big[:, :, None]
        boxes.append((x, y, side, side))
    return frame, boxes


def write_video(path: Path, frames: Sequence[np.ndarray], fps: float = 25.0) -> Path:
    codec = {".avi": "MJPG"}.get(Path(path).suffix.lower(), "mp4v")
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (w, h))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return Path(path)


def drifting_faces(
    faces: Sequence[np.ndarray], n_frames: int, size=(640, 480), scale: float = FACE_SCALE, step: int = 2
) -> tuple[list[np.ndarray], list[list[Box]]]:
    """Frames on which the faces (side by side) drift right by `step` px a frame: something to track."""
    side = int(round(48 * scale))
    gap = (size[0] - len(faces) * side) // (len(faces) + 1)
    starts = [(gap + i * (side + gap) - step * n_frames // 2, (size[1] - side) // 2) for i in range(len(faces))]
    frames, boxes = [], []
    for t in range(n_frames):
        corners = [(max(0, min(size[0] - side, x + step * t)), y) for x, y in starts]
        frame, placed = place_faces(faces, corners, size, scale)
        frames.append(frame)
        boxes.append(placed)
    return frames, boxes


def detectable(faces: Sequence[np.ndarray], detector, n: int, size=(640, 480), scale: float = FACE_SCALE) -> list[np.ndarray]:
    """The first n faces that `detector` finds when one is placed alone in the middle of a frame.

    FER2013's faces are tight crops, and the frontal cascade finds about two in three of them."""
    found = []
    side = int(round(48 * scale))
    corner = ((size[0] - side) // 2, (size[1] - side) // 2)
    for face in faces:
        frame, _ = place_faces([face], [corner], size, scale)
        if len(detector.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))) == 1:
            found.append(face)
            if len(found) == n:
                break
    return found
