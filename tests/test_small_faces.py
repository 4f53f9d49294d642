"""Video finds small faces by default, and shows no extra boxes: the whole frame at full size, each
followed face re-detected enlarged near its box, weak boxes given a second look, boxes inside a face
dropped, and a face shown only once a second detection confirms it (a few frames each)."""

import numpy as np
import pytest

from fer.errors import FerError
from fer.infer.align import FaceAligner
from fer.infer.detect import Detection
from fer.infer.draw import Annotator
from fer.infer.pipeline import Pipeline
from fer.infer.retinaface import RetinaFaceDetector, distinct
from fer.infer.track import FaceTracker

from hard_scenes import SIZE, moving_faces, plant
from scenes import background


class FixedClassifier:  # where faces are found does not depend on the network
    class_names = ["a", "b"]
    image_size = 48

    def __call__(self, faces):
        return np.tile([0.6, 0.4], (len(faces), 1))


def pipeline(detector, **tracker) -> Pipeline:
    return Pipeline(
        FixedClassifier(), Annotator(["a", "b"]), FaceAligner(), detector, tracker=FaceTracker(**tracker), detect_every=3
    )


@pytest.fixture(scope="module")
def small_face(fer2013):
    """The first FER2013 test face that RetinaFace at full size (the photo path) finds upright at 40 px."""
    finder = RetinaFaceDetector(scale=1.0)
    for face in fer2013.split("test")[0][:300]:
        frame = background(SIZE)
        plant(frame, face, (SIZE[0] / 2, SIZE[1] / 2), 40, 0.0)
        if len(finder.detect(frame)) == 1:
            return face
    pytest.fail("no FER2013 test face found at 40 px")


def shown(p: Pipeline, frames) -> list[int]:
    return [len(p.analyse(frame)) for frame in frames]


def test_a_40_px_face_moving_and_turning_is_found_by_default_and_not_at_half_size(small_face):
    frames, _ = moving_faces([small_face], 40, 12, seed=3, max_angle=10)
    counts = shown(pipeline(RetinaFaceDetector()), frames)  # conf/detector/retinaface.yaml's defaults
    assert counts[0] == 0 and counts[1:] == [1] * 11  # confirmed by the next frame's detection, then kept
    old = shown(pipeline(RetinaFaceDetector(scale=0.5, roi_px=0), confirm=1), frames)  # the old video default
    assert old == [0] * 12


def test_followed_faces_are_re_detected_near_their_box_and_the_whole_frame_searched_every_nth_time(small_face):
    frames, truth = moving_faces([small_face], 40, 25, seed=3, max_angle=10)
    detector = RetinaFaceDetector(search_every=4)
    whole = []
    search = detector.search
    detector.search = lambda bgr, scale, *a, **k: (whole.append(bgr.shape[:2] == (480, 640)), search(bgr, scale, *a, **k))[1]
    p = pipeline(detector)
    for frame in frames:
        p.analyse(frame)
    # Detections on frames 0, 1 (confirming), 3, 6, ... 24: the whole frame on the first and every 4th after.
    assert sum(whole) == 3
    near = [d.box for d in (detector.near(frames[-1], box) for box in truth[-1]) if d is not None]
    assert len(near) == 1  # found again near its true box, enlarged to roi_px


def test_a_box_inside_a_stronger_one_is_dropped():
    face = Detection((100, 100, 80, 80), 0.9)
    chin = Detection((120, 150, 30, 30), 0.6)  # IoU 0.14, all of it inside the face: NMS keeps it, this does not
    other = Detection((300, 100, 80, 80), 0.8)
    assert distinct([chin, face, other], nms=0.4) == [face, other]


def test_a_box_found_once_is_never_shown_and_a_box_on_a_face_starts_no_second_one():
    tracker = FaceTracker(confirm=2)
    assert tracker.update([(100, 100, 80, 80), (400, 50, 60, 60)]) == []  # found once: not shown yet
    shown = tracker.update([(102, 100, 80, 80)])  # the first confirmed; the second, missed, goes
    assert [t.box for t in shown] == [(102, 100, 80, 80)] and len(tracker.tracks) == 1 and shown[0].id == 0
    # A second box lying on the face (framed wider: IoU 0.25, below min_iou) is that face, not a new one.
    shown = tracker.update([(104, 100, 80, 80), (90, 90, 160, 160)])
    assert len(shown) == 1 and len(tracker.tracks) == 1
    # Unmatched, a wider box on the face is the face moved and grown, not a new one beside the old.
    shown = tracker.update([(90, 90, 160, 160)])
    assert [t.box for t in shown] == [(90, 90, 160, 160)] and len(tracker.tracks) == 1


def test_two_turned_faces_side_by_side_get_two_boxes_on_every_frame(fer2013):
    images = fer2013.split("test")[0]
    frames, _ = moving_faces([images[1], images[4]], 150, 12, seed=1)
    counts = shown(pipeline(RetinaFaceDetector()), frames)
    assert max(counts) == 2 and counts[1:] == [2] * 11


def test_after_a_face_is_lost_the_whole_frame_is_searched_on_the_next_few_detections(fer2013):
    from fer.infer.retinaface import HUNT

    frame = moving_faces([fer2013.split("test")[0][1]], 150, 1, seed=0, max_angle=0)[0][0]
    detector = RetinaFaceDetector()
    face = detector.detect(frame)[0].box
    whole = []
    search = detector.search
    detector.search = lambda bgr, scale, *a, **k: (whole.append(bgr.shape[:2] == (480, 640)), search(bgr, scale, *a, **k))[1]
    gone = (20, 20, 60, 60)  # a face followed there a moment ago: nothing there now
    assert len(detector.detect(frame, known=[face, gone])) == 1 and sum(whole) == 1
    for _ in range(HUNT + 2):  # the face that is still there alone is followed now
        assert len(detector.detect(frame, known=[face])) == 1
    assert HUNT > 0 and sum(whole) == 1 + HUNT


@pytest.mark.parametrize("bad", [{"search_every": 0}, {"roi_px": -1}, {"roi_reach": -0.1}])
def test_bad_cadence_and_region_settings_are_refused_in_one_line(bad):
    with pytest.raises(FerError, match=f"detector.{next(iter(bad))}"):
        RetinaFaceDetector(**bad)
