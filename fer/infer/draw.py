"""What the user sees: a box per face in its emotion's colour, the emotion and its probability
("uncertain" below a threshold), optional per-class probability bars, and the frame rate."""

from collections.abc import Sequence

import cv2
import numpy as np

from fer.infer.faces import FaceResult
from fer.preprocess import to_uint8

# BGR, one per FER2013 emotion; names a checkpoint may add get PALETTE colours by position.
EMOTION_COLOURS = {
    "Angry": (40, 40, 230),
    "Disgust": (40, 150, 40),
    "Fear": (170, 40, 150),
    "Happy": (20, 210, 250),
    "Sad": (220, 110, 30),
    "Surprise": (20, 140, 255),
    "Neutral": (200, 200, 200),
}
PALETTE = [(80, 80, 220), (80, 180, 80), (200, 80, 160), (60, 200, 230), (220, 140, 60), (60, 150, 240), (190, 190, 190)]
UNCERTAIN_COLOUR = (128, 128, 128)
FONT = cv2.FONT_HERSHEY_SIMPLEX
Rect = tuple[int, int, int, int]  # x, y, width, height
SMALLEST_READABLE_SIDE = 360  # images smaller than this are enlarged before drawing (image outputs only)


def to_bgr8(image: np.ndarray) -> np.ndarray:
    """Any decoded frame (grey, BGR, BGRA; 8 or 16 bit; float) -> 8-bit BGR to draw on and write."""
    image = to_uint8(image)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def enlarge_small(image: np.ndarray) -> tuple[np.ndarray, float]:
    """A 48x48 crop annotated at its own size is unreadable: enlarge small images (for image outputs)."""
    side = min(image.shape[:2])
    if side >= SMALLEST_READABLE_SIDE:
        return image, 1.0
    factor = SMALLEST_READABLE_SIDE / side
    return cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC), factor


class Annotator:
    def __init__(
        self,
        class_names: Sequence[str],
        bars: bool = False,
        uncertain_below: float = 0.4,
        show_fps: bool = True,
        show_ids: bool = True,
    ):
        self.class_names = list(class_names)
        self.colours = [EMOTION_COLOURS.get(n, PALETTE[i % len(PALETTE)]) for i, n in enumerate(self.class_names)]
        self.bars, self.uncertain_below = bars, uncertain_below
        self.show_fps, self.show_ids = show_fps, show_ids

    def verdict(self, face: FaceResult) -> str:
        return "uncertain" if face.confidence < self.uncertain_below else self.class_names[face.label]

    def caption(self, face: FaceResult) -> tuple[str, tuple[int, int, int]]:
        prefix = f"#{face.id} " if self.show_ids else ""
        if face.confidence < self.uncertain_below:
            return f"{prefix}uncertain", UNCERTAIN_COLOUR
        shown = min(max(face.confidence, 0.0), 1.0)  # a probability; never "7600%", whatever a model returns
        return f"{prefix}{self.class_names[face.label]} {shown:.0%}", self.colours[face.label]

    def draw(self, image: np.ndarray, faces: Sequence[FaceResult], scale: float = 1.0) -> np.ndarray:
        """Draws the faces on `image` (8-bit BGR) in place; `scale` maps their boxes onto an enlarged image."""
        size = _Sizes(image.shape)
        for face, (box, label, panel) in zip(faces, self.layout(image.shape, faces, scale)):
            text, colour = self.caption(face)
            x, y, w, h = box
            cv2.rectangle(image, (x, y), (x + w, y + h), colour, size.line)
            _label(image, text, label, colour, size)
            if panel is not None:
                self._bars(image, face, panel, size)
        return image

    def layout(self, shape, faces: Sequence[FaceResult], scale: float = 1.0) -> list[tuple[Rect, Rect, Rect | None]]:
        """Where each face's box, label band and (with bars) probability panel go, as (x, y, w, h).

        Every box and label is placed first; then each panel takes the first place, of below the box,
        right of it, left of it and above its label, that stays in the frame and covers no box or
        label and no panel placed before it. Where none is free (a crowded frame), the
        panel goes inside the face's own box, over its lower part, so it still covers no one else."""
        size = _Sizes(shape)
        boxes = [tuple(int(round(v * scale)) for v in face.box) for face in faces]
        labels = [_label_rect(shape, self.caption(face)[0], (b[0], b[1]), size) for face, b in zip(faces, boxes)]
        panels: list[Rect | None] = []
        for i, box in enumerate(boxes):
            if not self.bars:
                panels.append(None)
                continue
            line = size.line  # a box's drawn lines reach this far beyond it
            drawn = [(x - line, y - line, w + 2 * line, h + 2 * line) for x, y, w, h in boxes]
            taken = [*drawn, *labels, *(p for p in panels if p)]  # its own box too: a panel beside the face, not on it
            panels.append(self._panel_place(shape, box, labels[i], taken, size))
        return list(zip(boxes, labels, panels))

    def _panel_size(self, box: Rect, size: "_Sizes") -> tuple[int, int]:
        name_w = max(cv2.getTextSize(n, FONT, size.small, 1)[0][0] for n in self.class_names)
        return max(box[2], name_w + int(60 * size.k)), (size.small_h + 6) * len(self.class_names) + 4

    def _panel_place(self, shape, box: Rect, label: Rect, taken: Sequence[Rect], size: "_Sizes") -> Rect:
        H, W = shape[:2]
        x, y, w, h = box
        pw, ph = self._panel_size(box, size)
        gap = size.line + 1
        candidates = [
            (x, y + h + gap),  # below the box
            (x + w + gap, y),  # right of it
            (x - pw - gap, y),  # left of it
            (x, label[1] - ph - gap),  # above its label
        ]
        for cx, cy in candidates:
            cx = min(max(0, cx), max(0, W - pw))  # slid sideways into the frame, as labels are
            rect = (cx, cy, pw, ph)
            if cy >= 0 and cy + ph <= H and cx + pw <= W and not any(_overlap(rect, r) for r in taken):
                return rect
        # Inside the face's own box, from its bottom up (clipped to the box and the frame).
        left, right = max(0, x), min(W, x + w)
        bottom = min(H, y + h)
        top = max(0, y, bottom - ph)
        return left, top, max(1, right - left), max(1, bottom - top)

    def draw_fps(self, image: np.ndarray, fps: float | None) -> np.ndarray:
        # The live view only: a frame rate burnt into a saved video would be noise.
        if self.show_fps and fps:
            size = _Sizes(image.shape)
            text = f"{fps:.1f} fps"
            _label(image, text, _label_rect(image.shape, text, (0, 0), size, below=True), (32, 32, 32), size)
        return image

    def _bars(self, image: np.ndarray, face: FaceResult, panel: Rect, size: "_Sizes"):
        # One row per class on a dark panel; bar length = probability. A panel squeezed into the
        # face's own box shows the rows that fit.
        left, top, panel_w, panel_h = panel
        name_w = max(cv2.getTextSize(n, FONT, size.small, 1)[0][0] for n in self.class_names)
        row, pad = size.small_h + 6, 4
        region = image[top : top + panel_h, left : left + panel_w]
        region[:] = (region * 0.3).astype(np.uint8)  # darken what is behind, so the names stay readable
        bar_w = max(1, panel_w - name_w - 3 * pad)
        for i, (name, p) in enumerate(zip(self.class_names, face.probs)):
            y0 = top + pad + i * row
            if y0 + row - 3 > top + panel_h:
                break
            cv2.putText(image, name, (left + pad, y0 + size.small_h), FONT, size.small, (255, 255, 255), 1, cv2.LINE_AA)
            x0 = left + 2 * pad + name_w
            p = min(max(float(p), 0.0), 1.0)
            cv2.rectangle(image, (x0, y0 + 1), (x0 + max(1, int(bar_w * p)), y0 + row - 3), self.colours[i], -1)


def _overlap(a: Rect, b: Rect) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


class _Sizes:
    """Line widths and font sizes that stay readable from 240p to 4K."""

    def __init__(self, shape):
        self.k = max(0.5, min(shape[:2]) / 600)
        self.line = max(1, int(round(2 * self.k)))
        self.font = 0.6 * self.k
        self.thick = max(1, int(round(1.5 * self.k)))
        self.small = 0.4 * self.k
        self.small_h = cv2.getTextSize("Ag", FONT, self.small, 1)[0][1]


def _label_rect(shape, text: str, corner: tuple[int, int], size: _Sizes, below: bool = False) -> Rect:
    """The band a label takes: above the corner (inside the frame when there is no room), or below it."""
    (tw, th), base = cv2.getTextSize(text, FONT, size.font, size.thick)
    x, y = corner
    pad = max(2, th // 4)
    top = y if below or y - th - base - 2 * pad < 0 else y - th - base - 2 * pad
    x = min(max(0, x), max(0, shape[1] - tw - 2 * pad))
    return x, top, tw + 2 * pad, th + base + 2 * pad


def _label(image: np.ndarray, text: str, rect: Rect, colour, size: _Sizes):
    """Text on a filled band in `colour`."""
    th = cv2.getTextSize(text, FONT, size.font, size.thick)[0][1]
    x, top, w, h = rect
    pad = max(2, th // 4)
    cv2.rectangle(image, (x, top), (x + w - 1, top + h - 1), colour, -1)
    ink = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)  # dark text on light bands
    cv2.putText(image, text, (x + pad, top + pad + th), FONT, size.font, ink, size.thick, cv2.LINE_AA)
