"""The inference pipeline's parts, one at a time, on scenes built from real FER2013 faces."""

import math

import cv2
import numpy as np
import pytest
import torch

from fer.data.labels import EMOTIONS
from fer.infer.align import FaceAligner, cut_square
from fer.infer.classify import FaceClassifier
from fer.infer.detect import FaceDetector, HaarDetector, iou
from fer.infer.draw import EMOTION_COLOURS, UNCERTAIN_COLOUR, Annotator, to_bgr8
from fer.infer.faces import FaceResult
from fer.infer.pipeline import Pipeline
from fer.infer.sources import open_source
from fer.infer.track import FaceTracker
from fer.preprocess import square_grey_face, to_grey

from scenes import FACE_SCALE, detectable, place_faces


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


@pytest.fixture(scope="module")
def faces(fer2013, detector):
    """Real FER2013 test faces that the frontal cascade finds when enlarged 4x (about 2 in 3 are)."""
    images, _ = fer2013.split("test")
    found = detectable(images[:200], detector, 6)
    assert len(found) == 6
    return found


@pytest.fixture(scope="module")
def classifier(random_checkpoint):
    return FaceClassifier.from_checkpoint(random_checkpoint)  # threads left alone: this is the test process


def grey_of(frame):
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


# --- the one preprocessing path ---------------------------------------------------------------
def test_inference_gives_the_training_tensor_for_the_same_face(fer2013, classifier, tmp_path):
    from fer.data.datamodule import FaceDataModule

    images, labels = fer2013.split("test")
    images, labels = images[:32], labels[:32]
    dm = FaceDataModule(
        path="unused",
        class_names=classifier.class_names,
        image_size=classifier.image_size,
        input_size=classifier.input_size,
        augment=None,
    )
    dm.pin_preprocessing(classifier.mean, classifier.std, classifier.input_size)
    train_x, _ = dm.on_after_batch_transfer((torch.from_numpy(images), torch.from_numpy(labels)), 0)  # eval path

    # Inference path: the faces as image files, read by the folder source and prepared by the
    # pipeline as for detect=false with gamma off, then the classifier's own network input.
    for i, face in enumerate(images):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), face)
    pipeline = Pipeline(classifier, Annotator(EMOTIONS), detector=None, gamma=None)
    faces_48 = []
    for frame in open_source(tmp_path).frames():
        grey = to_grey(frame.image)
        batch, _ = pipeline.square_faces(grey, [f.box for f in pipeline.find_faces(grey)], [None])
        faces_48.append(batch[0])
    infer_x = classifier.network_input(np.stack(faces_48))

    # Both are whole normalised 48 px faces; fer.tta.eval_logits takes the same views of either.
    assert train_x.shape == infer_x.shape == (32, 1, 48, 48)
    assert torch.equal(train_x, infer_x)


def test_an_enlarged_face_comes_back_close_to_the_original(faces):
    face = faces[0]
    big = cv2.resize(face, (192, 192), interpolation=cv2.INTER_CUBIC)
    back = square_grey_face(big, 48)
    assert back.shape == (48, 48) and back.dtype == np.uint8
    assert np.abs(back.astype(int) - face).mean() < 8  # out of 255: resampling blurs a little
    assert np.corrcoef(back.ravel(), face.ravel())[0, 1] > 0.97


# --- detection ----------------------------------------------------------------------------------
def test_detector_finds_faces_where_they_were_placed(faces, detector):
    frame, placed = place_faces(faces[:3], [(10, 40), (220, 260), (430, 20)], size=(640, 480), scale=3.5)
    found = detector.detect(grey_of(frame))
    assert len(found) == 3
    for box in placed:
        assert max(iou(box, f) for f in found) > 0.6


def test_detector_sees_no_face_on_an_empty_frame(detector):
    from scenes import background

    assert detector.detect(grey_of(background((640, 480)))) == []


def test_detector_works_on_a_large_frame_by_shrinking_it(faces, detector):
    frame, placed = place_faces(faces[:1], [(900, 500)], size=(2560, 1440), scale=12)
    found = detector.detect(grey_of(frame))
    assert len(found) == 1 and iou(found[0], placed[0]) > 0.6


def test_min_face_leaves_out_smaller_faces(faces):
    frame, _ = place_faces(faces[:1], [(100, 100)], size=(640, 480), scale=FACE_SCALE)  # 192 px: 40% of 480
    assert len(FaceDetector(min_face=0.2).detect(grey_of(frame))) == 1
    assert FaceDetector(min_face=0.6).detect(grey_of(frame)) == []


def test_find_near_follows_a_face_that_moved(faces, detector):
    frame, placed = place_faces(faces[:1], [(230, 150)])
    last = (placed[0][0] - 12, placed[0][1] + 8, placed[0][2], placed[0][3])  # where it was a frame ago
    found = detector.find_near(grey_of(frame), last)
    assert found is not None and iou(found, placed[0]) > 0.6
    assert detector.find_near(grey_of(frame), (20, 20, 100, 100)) is None  # nothing there


# --- alignment ----------------------------------------------------------------------------------
def rotated_scene(face, degrees):
    frame, placed = place_faces([face], [(224, 144)])
    x, y, w, h = placed[0]
    turn = cv2.getRotationMatrix2D((x + w / 2, y + h / 2), -degrees, 1.0)  # clockwise on screen
    return cv2.warpAffine(grey_of(frame), turn, (640, 480), borderMode=cv2.BORDER_REPLICATE), placed[0]


def test_aligner_measures_the_tilt_of_the_eyes(faces):
    aligner = FaceAligner()
    tilts = []
    for face in faces:
        grey, box = rotated_scene(face, 15)
        tilts.append(math.degrees(aligner.measure_tilt(grey, box)))
    measured = [t for t in tilts if t != 0]  # no eye pair found: no turn
    assert len(measured) >= 2
    assert abs(np.median(measured) - 15) < 6


def test_aligned_crop_is_closer_to_the_upright_face(faces):
    aligner, unaligned = FaceAligner(), FaceAligner(align=False)
    gains = []
    for face in faces:
        grey, box = rotated_scene(face, 15)
        crop, angle = aligner.crop(grey, box)
        if angle == 0:
            continue
        plain, _ = unaligned.crop(grey, box)
        corr = [
            np.corrcoef(square_grey_face(c, 48).ravel().astype(float), face.ravel().astype(float))[0, 1] for c in (crop, plain)
        ]
        gains.append(corr[0] - corr[1])
    assert gains and np.mean(gains) > 0.05


def test_aligner_falls_back_to_the_plain_crop_without_eyes():
    grey = np.full((240, 320), 120, np.uint8)
    crop, angle = FaceAligner().crop(grey, (100, 50, 90, 90))
    assert angle == 0.0 and crop.shape == (90, 90)


def test_margin_widens_the_crop_and_borders_are_repeated():
    grey = np.zeros((200, 200), np.uint8)
    grey[50:150, 50:150] = 200  # a bright square on black
    tight = cut_square(grey, np.array([100.0, 100.0]), 100, 0.0)
    assert tight.shape == (96, 96) and tight.mean() > 190
    wide, _ = FaceAligner(align=False, margin=0.5).crop(grey, (50, 50, 100, 100))
    assert wide.mean() < 0.5 * tight.mean()  # the black around the square is in the crop now
    corner = cut_square(grey, np.array([0.0, 0.0]), 60, 0.0)  # three quarters outside the frame
    assert corner.shape == (60, 60)


# --- tracking -----------------------------------------------------------------------------------
def test_tracker_keeps_ids_and_smooths():
    tracker = FaceTracker(smooth=3, max_missed=1, confirm=1)  # every box shown at once
    a, b = (10, 10, 100, 100), (300, 10, 100, 100)
    first = tracker.update([a, b])
    assert [t.id for t in first] == [0, 1]
    moved = tracker.update([(306, 14, 100, 100), (14, 12, 100, 100)])  # both moved a little, order swapped
    assert {t.id: t.box for t in moved} == {0: (14, 12, 100, 100), 1: (306, 14, 100, 100)}
    track = moved[0]
    for p in ([1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]):
        smoothed = tracker.smooth(track, np.array(p))
    assert smoothed.tolist() == [0.0, 1.0]  # only the last 3 count
    assert [t.id for t in tracker.update([(14, 12, 100, 100)])] == [0, 1]  # 1 missed once: still shown
    assert [t.id for t in tracker.update([(14, 12, 100, 100)])] == [0]  # missed twice: gone
    assert [t.id for t in tracker.update([(14, 12, 100, 100), (500, 300, 80, 80)])] == [0, 2]  # a new face, a new id


# --- drawing ------------------------------------------------------------------------------------
def face_result(label, p, box=(100, 100, 120, 120)):
    probs = np.full(7, (1 - p) / 6)
    probs[label] = p
    return FaceResult(0, box, probs)


def test_box_is_drawn_in_the_emotion_colour_with_its_label():
    image = np.zeros((480, 640, 3), np.uint8)
    annotator = Annotator(EMOTIONS)
    annotator.draw(image, [face_result(EMOTIONS.index("Happy"), 0.9)])
    colour = np.array(EMOTION_COLOURS["Happy"])
    assert (image[100:221, 100] == colour).all(1).sum() > 100  # the box's left edge
    assert (image[80:100, 100:200] == colour).all(2).sum() > 100  # the label band above the box
    assert not image[5:20, 5:60].any()
    annotator.draw_fps(image, 30.0)
    assert image[5:20, 5:60].any()  # the frame rate, for the live view


def test_low_confidence_reads_uncertain_in_grey():
    annotator = Annotator(EMOTIONS, uncertain_below=0.5)
    face = face_result(0, 0.3)
    assert annotator.verdict(face) == "uncertain"
    image = annotator.draw(np.zeros((480, 640, 3), np.uint8), [face])
    assert (image[100:221, 100] == np.array(UNCERTAIN_COLOUR)).all(1).sum() > 100


def test_a_probability_is_never_shown_above_100_percent():
    annotator = Annotator(EMOTIONS)
    face = FaceResult(0, (100, 100, 120, 120), np.array([0, 0, 0, 0, 0, 76.0, 0]))  # a model that returns logits
    assert annotator.caption(face)[0].endswith("Surprise 100%")


def test_probability_bars_are_drawn_under_the_box():
    image = np.zeros((480, 640, 3), np.uint8)
    Annotator(EMOTIONS, bars=True).draw(image, [face_result(3, 0.9)])
    below = image[225:340, 100:220]
    assert (below == np.array(EMOTION_COLOURS["Happy"])).all(2).sum() > 200  # Happy's long bar


@pytest.mark.parametrize(
    "boxes",
    [
        [(200, 60, 120, 120), (210, 220, 120, 120)],  # one face above the other: the bars once covered the lower label
        [(40, 40, 200, 200), (250, 40, 200, 200), (40, 270, 200, 200), (250, 270, 200, 200)],  # a crowded 480x480 frame
    ],
)
def test_probability_bars_cover_no_other_face(boxes):
    size = (480, 640, 3) if len(boxes) == 2 else (480, 480, 3)
    faces = [FaceResult(i, box, face_result(i % 7, 0.8).probs) for i, box in enumerate(boxes)]
    annotator = Annotator(EMOTIONS, bars=True)
    layout = annotator.layout(size, faces)

    def overlap(a, b):
        return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]

    for i, (_, _, panel) in enumerate(layout):
        assert 0 <= panel[0] and panel[0] + panel[2] <= size[1] and 0 <= panel[1] and panel[1] + panel[3] <= size[0]
        for j, (box, label, other_panel) in enumerate(layout):
            if j != i:
                assert not overlap(panel, box) and not overlap(panel, label) and not overlap(panel, other_panel), (i, j)
    # In pixels: every face's label band reads exactly as it does with no bars drawn at all.
    with_bars = annotator.draw(np.zeros(size, np.uint8), faces)
    without = Annotator(EMOTIONS).draw(np.zeros(size, np.uint8), faces)
    for _, (x, y, w, h), _ in layout:
        assert np.array_equal(with_bars[y : y + h, x : x + w], without[y : y + h, x : x + w])


def test_any_image_becomes_8bit_bgr_to_draw_on():
    grey16 = np.full((10, 10), 65535, np.uint16)
    bgra = np.zeros((10, 10, 4), np.uint8)
    for image in (grey16, bgra, np.zeros((10, 10), np.uint8), np.zeros((10, 10, 1), np.uint8), np.ones((10, 10, 3), np.float32)):
        out = to_bgr8(image)
        assert out.shape == (10, 10, 3) and out.dtype == np.uint8
    assert to_bgr8(grey16).max() == 255


# --- images of every kind -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["grey", "16bit", "bgra", "huge"])
def test_every_kind_of_image_is_analysed(kind, faces, classifier, tmp_path):
    frame, placed = place_faces(faces[:1], [(224, 144)])
    if kind == "grey":
        frame = grey_of(frame)
    elif kind == "16bit":
        frame = frame.astype(np.uint16) * 257
    elif kind == "bgra":
        frame = cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)
    elif kind == "huge":  # 7680x5760, 44 megapixels
        frame = cv2.resize(frame, None, fx=12, fy=12, interpolation=cv2.INTER_NEAREST)
        placed = [tuple(12 * v for v in placed[0])]
    path = tmp_path / f"{kind}.png"
    cv2.imwrite(str(path), frame)
    source = open_source(path)
    image = next(source.frames()).image
    assert image.shape[:2] == frame.shape[:2] and image.dtype == frame.dtype
    pipeline = Pipeline(classifier, Annotator(EMOTIONS), FaceAligner(), HaarDetector())
    results = pipeline.analyse(image)
    assert len(results) == 1 and iou(results[0].box, placed[0]) > 0.6
    assert np.isclose(results[0].probs.sum(), 1, atol=1e-4)
    drawn = pipeline.annotate(image, results)
    assert drawn.dtype == np.uint8 and drawn.shape == frame.shape[:2] + (3,)


# --- stopping: the window's q / Esc, and Ctrl-C ---------------------------------------------------
def test_window_quits_on_q_or_esc(monkeypatch):
    from fer.infer import sinks

    keys = iter([-1, ord("x"), ord("q"), 27])
    monkeypatch.setattr(sinks.cv2, "namedWindow", lambda *a: None)
    monkeypatch.setattr(sinks.cv2, "imshow", lambda *a: None)
    monkeypatch.setattr(sinks.cv2, "waitKey", lambda ms: next(keys))
    monkeypatch.setattr(sinks.cv2, "getWindowProperty", lambda *a: 1.0)
    window = sinks.Window()
    image = np.zeros((4, 4, 3), np.uint8)
    assert window.show(image) is True  # no key: go on
    assert window.show(image) is True  # another key: go on
    assert window.show(image) is False  # q
    assert window.show(image) is False  # Esc


def test_display_choice(monkeypatch):
    from fer.errors import FerError
    from fer.infer.sinks import wants_window

    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert wants_window("auto") is False and wants_window(False) is False
    with pytest.raises(FerError, match="no display"):
        wants_window(True)
    monkeypatch.setenv("DISPLAY", ":0")
    assert wants_window("auto") is True and wants_window(True) is True


def test_ctrl_c_stops_cleanly_and_the_video_is_playable(faces, classifier, tmp_path):
    from fer.infer.sinks import VideoFileSink
    from fer.infer.sources import Frame

    class InterruptedCamera:  # three frames, then the user presses Ctrl-C
        kind, fps, skipped = "camera", 25.0, 0

        def frames(self):
            for i in range(3):
                yield Frame(place_faces(faces[:1], [(200, 100)])[0], i, i / 25)
            raise KeyboardInterrupt

        def close(self):
            pass

    out = tmp_path / "live.mp4"
    pipeline = Pipeline(
        classifier,
        Annotator(EMOTIONS),
        FaceAligner(),
        HaarDetector(),
        tracker=FaceTracker(),
        sinks=[VideoFileSink(out, 25.0, (640, 480))],
    )
    summary = pipeline.run(InterruptedCamera())
    assert summary.stopped_early == "interrupted" and summary.frames == 3
    capture = cv2.VideoCapture(str(out))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
