"""Face alignment (the paper's first step): rotate the face so the eyes are level, keep it centred,
and cut it out with a configurable margin around the detected box.

A detector that finds landmarks (RetinaFace) gives the eyes: the face is levelled by them and its
square is fitted to all five landmarks so it frames the face as FER2013's crops do (`place`).
Otherwise (Viola-Jones) the eyes come from OpenCV's eye cascade run inside the face box; when it
finds no plausible pair the face is cut out unrotated. The crop turns about the box's centre rather than being re-centred
on the eyes: Haar boxes frame a face the way FER2013's crops do (same size, centred), and on
FER2013 faces re-centring on the detected eyes moved crops further from the originals than the
box was (correlation 0.76 vs 0.93), because eye positions from the cascade are noisy.
"""

import math

import cv2
import numpy as np

from fer.errors import FerError
from fer.infer.detect import Box, Detection, load_cascade

# The eyes are searched for in a copy of the face's upper half scaled to this width: big enough for
# the eye cascade's 20 px window, small enough to cost well under a millisecond.
EYE_SEARCH_WIDTH = 100
# Faces are cut out at up to this size and then shrunk to the model's image size (FER2013: 48 px)
# with area averaging; a model of pictures larger than this would get enlarged crops.
CROP_PX = 96
# Where RetinaFace puts its five landmarks (eyes, nose tip, mouth corners) on a FER2013 face, as
# fractions of the crop: the medians over 546 training faces enlarged 4x, made left-right symmetric
# (spread: 0.07 of the crop). A face is cut out so its landmarks land here: FER2013's framing.
FER_LANDMARKS = np.array([[0.314, 0.40], [0.686, 0.40], [0.5, 0.59], [0.35, 0.75], [0.65, 0.75]])


class FaceAligner:
    def __init__(
        self,
        align: bool = True,
        margin: float = 0.0,
        eye_cascade: str = "haarcascade_eye.xml",
        min_tilt: float = 5.0,
        max_tilt: float = 30.0,
        eye_min_neighbors: int = 3,
    ):
        if not 0 <= margin <= 1:
            raise FerError(f"preprocess.margin is a fraction of the face box added on each side, 0..1, not {margin}")
        # Tilts under min_tilt degrees stay: the network was trained on faces with such tilts, and the
        # eye cascade's angle is only good to about 5 degrees. Over max_tilt the "eyes" are wrong.
        self.align, self.margin, self.min_tilt, self.max_tilt = align, margin, min_tilt, max_tilt
        self.eye_min_neighbors = eye_min_neighbors
        self.eyes = load_cascade(eye_cascade) if align else None

    def find_eyes(self, grey: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray] | None:
        """Centres (x, y) of the left and right eye in frame pixels, or None without a plausible pair."""
        x, y, w, h = box
        top, bottom = y + int(0.15 * h), y + int(0.6 * h)
        region = grey[max(0, top) : max(0, bottom), max(0, x) : max(0, x + w)]
        if region.shape[0] < 10 or region.shape[1] < 20:
            return None
        scale = EYE_SEARCH_WIDTH / region.shape[1]
        region = cv2.resize(region, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        smallest, largest = int(0.12 * EYE_SEARCH_WIDTH), int(0.4 * EYE_SEARCH_WIDTH)
        found = self.eyes.detectMultiScale(
            region, 1.1, self.eye_min_neighbors, minSize=(smallest, smallest), maxSize=(largest, largest)
        )
        centres = [(ex + ew / 2, ey + eh / 2, ew) for ex, ey, ew, eh in found]
        half = EYE_SEARCH_WIDTH / 2
        left = [c for c in centres if c[0] < half]  # the eye on the image's left
        right = [c for c in centres if c[0] >= half]
        if not left or not right:
            return None
        eye_l, eye_r = max(left, key=lambda c: c[2]), max(right, key=lambda c: c[2])  # the largest of each side
        dx, dy = eye_r[0] - eye_l[0], eye_r[1] - eye_l[1]
        if not 0.2 * EYE_SEARCH_WIDTH < dx < 0.7 * EYE_SEARCH_WIDTH or abs(math.degrees(math.atan2(dy, dx))) > self.max_tilt:
            return None  # too close, too far or too steep for a pair of eyes
        origin = np.array([max(0, x), max(0, top)], dtype=np.float64)
        return origin + np.array(eye_l[:2]) / scale, origin + np.array(eye_r[:2]) / scale

    def place(self, detection: Detection) -> tuple[Box, float | None]:
        """The square a detected face is cut from and its tilt (radians): from the landmarks where the
        detector gives them (levelled by the eyes, framed like FER2013); otherwise the detector's box
        and None (the tilt is measured with the eye cascade in `crop`)."""
        if detection.landmarks is None:
            return detection.box, None
        eyes = detection.landmarks[1] - detection.landmarks[0]
        angle = math.atan2(eyes[1], eyes[0]) if self.align else 0.0
        if abs(math.degrees(angle)) < self.min_tilt:
            angle = 0.0
        return landmark_square(detection.landmarks, angle), angle

    def crop(self, grey: np.ndarray, box: Box, angle: float | None = None) -> tuple[np.ndarray, float]:
        """The face on a 2-D uint8 frame -> (square grey crop of up to CROP_PX, the turn applied in radians).

        `angle` skips the eye search and turns by that much instead (a tracked face between detections)."""
        x, y, w, h = box
        side = max(w, h) * (1 + 2 * self.margin)
        centre = np.array([x + w / 2, y + h / 2])
        if angle is None:
            angle = self.measure_tilt(grey, box) if self.align else 0.0
        return cut_square(grey, centre, side, angle), angle

    def measure_tilt(self, grey: np.ndarray, box: Box) -> float:
        """The angle of the line through the eyes (radians); 0 without a plausible pair or under min_tilt."""
        eyes = self.find_eyes(grey, box)
        if eyes is None:
            return 0.0
        left, right = eyes
        angle = math.atan2(right[1] - left[1], right[0] - left[0])
        return angle if abs(math.degrees(angle)) >= self.min_tilt else 0.0


def landmark_square(landmarks: np.ndarray, angle: float) -> Box:
    """The square, turned by `angle`, whose FER_LANDMARKS best match (least squares) the (5, 2)
    landmarks found -> that square as a box (x, y, side, side) before the turn."""
    template = FER_LANDMARKS - 0.5  # about the crop's centre, in crop sides
    cos, sin = math.cos(angle), math.sin(angle)
    turned = template @ np.array([[cos, sin], [-sin, cos]])  # each point turned by angle
    t, q = turned - turned.mean(0), landmarks - landmarks.mean(0)
    side = max(float((t * q).sum() / (t * t).sum()), 1.0)  # the scale that best maps the template onto them
    centre = landmarks.mean(0) - side * turned.mean(0)
    return (int(round(centre[0] - side / 2)), int(round(centre[1] - side / 2)), int(round(side)), int(round(side)))


def cut_square(grey: np.ndarray, centre: np.ndarray, side: float, angle: float) -> np.ndarray:
    """The square of `side` pixels around `centre`, turned by `angle` radians so it comes out upright;
    out-of-frame parts repeat the border. Output side: min(side, CROP_PX)."""
    out = int(min(round(side), CROP_PX))
    scale = side / out  # source pixels per output pixel
    if scale > 1.5:
        # Shrink the neighbourhood first with area averaging, so the bilinear warp below does not alias.
        reach = int(side * 0.75) + 2  # half the diagonal, and a little more
        x0, y0 = int(centre[0]) - reach, int(centre[1]) - reach
        patch = _padded(grey, x0, y0, 2 * reach, 2 * reach)
        shrink = 1.0 / scale
        patch = cv2.resize(patch, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
        grey, centre, scale = patch, (centre - (x0, y0)) * shrink, 1.0
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    half = out / 2
    # Output pixel (u, v) -> source: centre + R(angle) * scale * (u - half, v - half).
    m = np.array([[cos, -sin, centre[0] - cos * half + sin * half], [sin, cos, centre[1] - sin * half - cos * half]])
    return cv2.warpAffine(grey, m, (out, out), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)


def _padded(grey: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """grey[y0:y0+h, x0:x0+w], repeating the border where the window leaves the frame."""
    H, W = grey.shape[:2]
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(W, x0 + w), min(H, y0 + h)
    if cx0 >= cx1 or cy0 >= cy1:
        return np.zeros((h, w), np.uint8)
    part = grey[cy0:cy1, cx0:cx1]
    if (cx0, cy0, cx1, cy1) == (x0, y0, x0 + w, y0 + h):
        return part
    return cv2.copyMakeBorder(part, cy0 - y0, y0 + h - cy1, cx0 - x0, x0 + w - cx1, cv2.BORDER_REPLICATE)
