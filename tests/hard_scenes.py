"""Hard scenes for face detectors, built from real FER2013 faces (test-only; the speed benchmark reuses
them): faces of 60-300 px on 640x480 frames, turned up to +-30 degrees, some with a hand-sized patch
over the mouth, one to three a frame. Each planted face is known by its upright square (the box a
detector should report, before the turn) and by what was done to it."""

import math
from dataclasses import dataclass

import cv2
import numpy as np

from fer.infer.detect import Box, iou

from scenes import background

SIZE = (640, 480)


@dataclass
class Planted:
    box: Box  # the face's square before it was turned: x, y, side, side
    angle: float  # degrees, clockwise on screen
    covered: bool  # a patch over the mouth


@dataclass
class Scene:
    frame: np.ndarray  # (480, 640, 3) BGR
    faces: list[Planted]


def cover_mouth(face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A hand-sized patch (half the face wide, a third high) of flat, slightly shaded skin over the mouth."""
    side = face.shape[0]
    w, h = int(0.55 * side), int(0.32 * side)
    x0, y0 = (side - w) // 2, int(0.62 * side)
    tone = float(np.clip(np.median(face) + rng.uniform(-10, 30), 40, 230))
    shade = np.linspace(tone - 12, tone + 12, w, dtype=np.float32)[None, :].repeat(h, 0)
    covered = face.copy()
    covered[y0 : y0 + h, x0 : x0 + w] = np.clip(shade, 0, 255).astype(np.uint8)
    return covered


def plant(frame: np.ndarray, face: np.ndarray, centre: tuple[float, float], side: int, angle: float) -> Box:
    """The face enlarged to `side` px, turned `angle` degrees clockwise about its centre, drawn on frame."""
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    reach = int(math.ceil(side * math.sqrt(2) / 2)) + 2
    out = 2 * reach
    turn = cv2.getRotationMatrix2D((side / 2, side / 2), -angle, 1.0)
    turn[:, 2] += reach - side / 2  # the face's centre lands in the middle of the output
    turned = cv2.warpAffine(big, turn, (out, out), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(np.full((side, side), 255, np.uint8), turn, (out, out), flags=cv2.INTER_LINEAR)
    cx, cy = int(round(centre[0])), int(round(centre[1]))
    x0, y0 = cx - reach, cy - reach
    region = frame[y0 : y0 + out, x0 : x0 + out]
    alpha = (mask.astype(np.float32) / 255)[:, :, None]
    region[:] = (alpha * turned[:, :, None] + (1 - alpha) * region).astype(np.uint8)
    return cx - side // 2, cy - side // 2, side, side


def hard_scene(
    faces: list[np.ndarray],
    rng: np.random.Generator,
    sizes=(60, 300),
    max_angle: float = 30.0,
    cover: float = 0.3,
    tries: int = 200,
) -> Scene:
    """The faces placed at random sizes and turns without overlapping (fewer if they do not fit)."""
    frame = background(SIZE)
    planted: list[Planted] = []
    spots: list[tuple[float, float, float]] = []  # centre x, y and reach of each face placed
    biggest = sizes[1] if len(faces) == 1 else min(sizes[1], 440 // len(faces))  # two or three must fit side by side
    for face in faces:
        for _ in range(tries):
            side = int(rng.uniform(sizes[0], biggest))
            reach = side * math.sqrt(2) / 2 + 3
            cx, cy = rng.uniform(reach, SIZE[0] - reach), rng.uniform(reach, SIZE[1] - reach)
            if all(math.hypot(cx - x, cy - y) > reach + r for x, y, r in spots):
                break
        else:
            continue
        angle = float(rng.uniform(-max_angle, max_angle))
        covered = bool(rng.random() < cover)
        box = plant(frame, cover_mouth(face, rng) if covered else face, (cx, cy), side, angle)
        spots.append((cx, cy, reach))
        planted.append(Planted(box, angle, covered))
    return Scene(frame, planted)


def hard_scenes(images: np.ndarray, n: int, seed: int = 0) -> list[Scene]:
    """n scenes with 1, 2 or 3 faces (in turn), each face a different FER2013 image."""
    rng = np.random.default_rng(seed)
    picks = iter(rng.permutation(len(images)))
    return [hard_scene([images[next(picks)] for _ in range(1 + i % 3)], rng) for i in range(n)]


def matches(planted: list[Planted], boxes: list[Box], min_iou: float = 0.5) -> list[Box | None]:
    """For each planted face, the box found on it (the best overlap of at least min_iou), or None."""
    found = []
    for face in planted:
        best = max(boxes, key=lambda b: iou(b, face.box), default=None)
        found.append(best if best is not None and iou(best, face.box) >= min_iou else None)
    return found


def moving_faces(
    faces: list[np.ndarray], side: int, n_frames: int, seed: int = 0, speed: float = 2.0, max_angle: float = 30.0
) -> tuple[list[np.ndarray], list[list[Box]]]:
    """Frames on which the faces (`side` px, one or two) wander about their own part of the frame (the
    left and right halves for two), bouncing off its edges at `speed` px a frame, and turn back and
    forth up to +-max_angle degrees (a period of 60 frames). -> (BGR frames, each frame's upright squares)."""
    rng = np.random.default_rng(seed)
    reach = side * math.sqrt(2) / 2 + 3  # a turned face's corners stay on the frame
    lanes = [(i * SIZE[0] / len(faces), (i + 1) * SIZE[0] / len(faces)) for i in range(len(faces))]
    spans = [((min(a + reach, b - reach), max(a + reach, b - reach)), (reach, SIZE[1] - reach)) for a, b in lanes]
    centres = [np.array([rng.uniform(*sx), rng.uniform(*sy)]) for sx, sy in spans]
    heading = [rng.uniform(0, 2 * math.pi) for _ in faces]
    steps = [speed * np.array([math.cos(h), math.sin(h)]) for h in heading]
    phases = rng.uniform(0, 2 * math.pi, len(faces))
    frames, truth = [], []
    for t in range(n_frames):
        frame, boxes = background(SIZE), []
        for i, face in enumerate(faces):
            for axis, (lo, hi) in enumerate(spans[i]):
                if not lo <= centres[i][axis] + steps[i][axis] <= hi:
                    steps[i][axis] *= -1  # bounce
                centres[i][axis] = min(max(centres[i][axis] + steps[i][axis], lo), hi)
            angle = max_angle * math.sin(2 * math.pi * t / 60 + phases[i])
            boxes.append(plant(frame, face, tuple(centres[i]), side, angle))
        frames.append(frame)
        truth.append(boxes)
    return frames, truth
