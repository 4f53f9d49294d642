"""One frame at a time: grey -> faces (detect, or track between detections) -> aligned square crops
at the model's image size (FER2013: 48x48) -> one network batch -> smoothed per-face probabilities
-> drawing -> every sink -> the window.

Any `Detector` (fer/infer/detect.py) serves: RetinaFace (the default) or Viola-Jones (detector=haar)."""

import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fer.infer.align import FaceAligner
from fer.infer.classify import FaceClassifier
from fer.infer.detect import Box, Detection, Detector
from fer.infer.draw import Annotator, enlarge_small, to_bgr8
from fer.infer.faces import FaceResult
from fer.infer.track import FaceTracker
from fer.preprocess import square_grey_face, to_grey

STAGES = ("decode", "detect", "align", "network", "track", "draw", "write", "display")


class Stopwatch:
    """Seconds spent in each stage: `lap(stage)` charges the time since the previous lap to it."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self._last = time.perf_counter()

    def lap(self, stage: str):
        now = time.perf_counter()
        self.seconds[stage] += now - self._last
        self._last = now


@dataclass
class RunSummary:
    frames: int = 0
    frames_without_faces: int = 0
    faces: int = 0
    labels: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    stages: dict = field(default_factory=dict)
    stopped_early: str = ""  # why the run ended before the source did, if it did

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class Pipeline:
    def __init__(
        self,
        classifier: FaceClassifier,
        annotator: Annotator,
        aligner: FaceAligner | None = None,
        detector: Detector | None = None,  # None: every image is one whole face (pre-cropped faces)
        gamma: float | str | None = "auto",
        tracker: FaceTracker | None = None,  # None: every frame stands alone (images)
        detect_every: int = 1,
        sinks: Sequence = (),
        window=None,
        max_frames: int | None = None,
        enlarge_small_images: bool = False,
        print_faces: bool = False,
    ):
        self.classifier, self.annotator, self.aligner, self.detector = classifier, annotator, aligner, detector
        self.gamma, self.tracker, self.detect_every = gamma, tracker, max(1, int(detect_every))
        self.sinks, self.window, self.max_frames = list(sinks), window, max_frames
        self.enlarge_small_images, self.print_faces = enlarge_small_images, print_faces
        self.watch = Stopwatch()
        self._count = 0

    # --- one frame ------------------------------------------------------------------------------
    def detection_due(self) -> bool:
        # A face found once is confirmed (or dropped) by a detection on the very next frame, not N frames later.
        pending = self.tracker is not None and any(not self.tracker.shown(t) for t in self.tracker.tracks)
        return pending or self._count % self.detect_every == 0

    def find_faces(self, grey: np.ndarray, image: np.ndarray | None = None) -> list[Detection]:
        """The faces on a frame: detected (on `image`, the frame as decoded, for a detector that wants
        colour), or on frames between detections followed from where they were."""
        if self.detector is None:
            return [Detection((0, 0, grey.shape[1], grey.shape[0]), 1.0)]
        frame = image if self.detector.colour and image is not None else grey
        if self.tracker is None:
            return self.detector.detect(frame)
        if not self.detection_due():  # between detections: follow each face by its look
            followed = (self.tracker.follow(grey, t) for t in self.tracker.tracks)
            return [Detection(b, 1.0) for b in followed if b is not None]
        return self.detector.detect(frame, known=[t.box for t in self.tracker.tracks])

    def place(self, faces: Sequence[Detection]) -> tuple[list[Box], list[float | None]]:
        """Each face's square and tilt: from its landmarks where it has them (None: measure the tilt)."""
        if self.aligner is None or self.detector is None:
            return [f.box for f in faces], [None] * len(faces)
        placed = [self.aligner.place(f) for f in faces]
        return [p[0] for p in placed], [p[1] for p in placed]

    def square_faces(
        self, grey: np.ndarray, boxes: Sequence[Box], angles: Sequence[float | None]
    ) -> tuple[np.ndarray, list[float]]:
        """(B, S, S) uint8 at the classifier's image size S, the format training sees, and the turn applied to each face.

        angles: a known tilt per face (None: measure it from the eyes)."""
        crops, turns, size = [], [], self.classifier.image_size
        for box, angle in zip(boxes, angles):
            if self.detector is None or self.aligner is None:  # the whole image is the face
                crop, angle = grey[box[1] : box[1] + box[3], box[0] : box[0] + box[2]], 0.0
            else:
                crop, angle = self.aligner.crop(grey, box, angle)
            crops.append(square_grey_face(crop, size, self.gamma))
            turns.append(angle)
        return (np.stack(crops) if crops else np.zeros((0, size, size), np.uint8)), turns

    def analyse(self, image: np.ndarray) -> list[FaceResult]:
        """Every face on one frame (any depth and channel count), with its (smoothed) probabilities."""
        watch = self.watch
        grey = to_grey(image)
        detected = self.tracker is None or self.detection_due()
        found = self.find_faces(grey, image)
        boxes, angles = self.place(found)
        watch.lap("detect")
        if self.tracker is None:
            faces, _ = self.square_faces(grey, boxes, angles)
            watch.lap("align")
            probs = self.classifier(faces)
            watch.lap("network")
            results = [FaceResult(i, box, p, f.landmarks) for i, (box, p, f) in enumerate(zip(boxes, probs, found))]
        else:
            # Faces not found on this frame stay a moment at their last box. A detection frame brings
            # each face's tilt (None: look for its eyes); the frames between reuse the tilts.
            tracks = self.tracker.update(boxes, angles if detected else None, detected)
            faces, turns = self.square_faces(grey, [t.box for t in tracks], [t.angle for t in tracks])
            watch.lap("align")
            probs = self.classifier(faces)
            watch.lap("network")
            results = []
            for track, p, angle in zip(tracks, probs, turns):
                track.angle = angle
                results.append(FaceResult(track.id, track.box, self.tracker.smooth(track, p)))
            if detected:  # every face found, shown or not yet confirmed, is followed to the next detection
                for track in self.tracker.tracks:
                    self.tracker.remember(grey, track)
            watch.lap("track")
        self._count += 1
        return results

    def annotate(self, image: np.ndarray, faces: Sequence[FaceResult]) -> np.ndarray:
        canvas, scale = to_bgr8(image), 1.0
        if self.enlarge_small_images:
            canvas, scale = enlarge_small(canvas)
        return self.annotator.draw(canvas, faces, scale)

    # --- the whole source -----------------------------------------------------------------------
    def run(self, source) -> RunSummary:
        summary, fps = RunSummary(), None
        still = source.kind in ("image", "folder")  # a still image stays on screen until a key is pressed
        # A video file on screen plays at its own rate rather than as fast as it can be processed.
        pace = 1.0 / source.fps if self.window is not None and source.kind == "video" and source.fps > 0 else 0.0
        self.watch = Stopwatch()
        start = previous = time.perf_counter()
        try:
            for frame in source.frames():
                self.watch.lap("decode")
                faces = self.analyse(frame.image)
                image = self.annotate(frame.image, faces)
                self.watch.lap("draw")
                for sink in self.sinks:
                    sink.write(image, frame, faces)
                self.watch.lap("write")
                self._tally(summary, faces)
                if self.print_faces:
                    print(describe(frame.name or f"frame {frame.index}", faces, self.annotator), flush=True)
                if self.window is not None:
                    wait_ms = None if still else max(1, int(1000 * (start + summary.frames * pace - time.perf_counter())))
                    if not self.window.show(self.annotator.draw_fps(image, fps), wait_ms):
                        summary.stopped_early = "closed by the user"
                        break
                self.watch.lap("display")
                now = time.perf_counter()
                rate = 1.0 / max(now - previous, 1e-6)
                fps, previous = (rate if fps is None else 0.9 * fps + 0.1 * rate), now
                if self.max_frames and summary.frames >= self.max_frames:
                    summary.stopped_early = f"max_frames={self.max_frames} reached"
                    break
        except KeyboardInterrupt:  # Ctrl-C ends a camera run cleanly: the outputs are closed and valid
            summary.stopped_early = "interrupted"
        finally:
            self.close(source)
        summary.seconds = time.perf_counter() - start
        summary.stages = {s: self.watch.seconds.get(s, 0.0) for s in STAGES}
        return summary

    def _tally(self, summary: RunSummary, faces: Sequence[FaceResult]):
        summary.frames += 1
        summary.faces += len(faces)
        summary.frames_without_faces += not faces
        summary.labels.update(self.annotator.verdict(f) for f in faces)

    def close(self, source):
        for closing in (*self.sinks, self.window, source):
            if closing is not None:
                closing.close()


def describe(name: str, faces: Sequence[FaceResult], annotator: Annotator) -> str:
    if not faces:
        return f"{name}: no face found"
    parts = []
    for f in faces:
        text, _ = annotator.caption(f)
        parts.append(f"{text} at x={f.box[0]} y={f.box[1]} w={f.box[2]} h={f.box[3]}")
    return f"{name}: " + "; ".join(parts)
