"""infer.py end to end, as a user runs it: generated videos, images and folders built from real
FER2013 faces; every output checked; every bad input ends in one clear line, no traceback."""

import csv
import json
import logging
import os

import cv2
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from fer.data.labels import EMOTIONS
from fer.errors import FerError
from fer.infer.app import face_settings, given_face_keys, run
from fer.infer.classify import FaceClassifier
from fer.infer.detect import FaceDetector, iou
from fer.infer.draw import EMOTION_COLOURS, SMALLEST_READABLE_SIDE
from fer.infer.retinaface import RetinaFaceDetector

from conftest import ROOT, run_cli
from scenes import background, detectable, drifting_faces, place_faces, write_video

BLANK = 6  # the clip opens with this many frames without a face (a detection frame follows: detect_every=3)
FACE_FRAMES = 24
SHOWN = FACE_FRAMES - 1  # faces are shown from the frame after they are first found (its detection confirms them)


@pytest.fixture(scope="module")
def faces(fer2013):
    images, _ = fer2013.split("test")
    # Faces both detectors find: Viola-Jones, and the default RetinaFace with a margin over its threshold.
    return detectable(detectable(images[:200], FaceDetector(), 12), RetinaFaceDetector(threshold=0.8), 4)


@pytest.fixture(scope="module")
def clip(faces, tmp_path_factory):
    """640x480 at 25 fps: BLANK empty frames, then two real faces drifting right. -> (path, boxes per frame)."""
    frames, boxes = drifting_faces(faces[:2], FACE_FRAMES, step=3)
    empty = background((640, 480))
    path = write_video(tmp_path_factory.mktemp("clip") / "clip.avi", [empty] * BLANK + frames, fps=25)
    return path, [[]] * BLANK + boxes


def infer(**overrides):
    """One in-process run with the real config and no window."""
    args = [f"{k}={v}" for k, v in overrides.items()]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("infer", overrides=["display=false", *args])
    threads = torch.get_num_threads()  # infer sets one thread; the tests after this one get theirs back
    try:
        return run(cfg, given_face_keys(args))
    finally:
        torch.set_num_threads(threads)


def read_video(path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return frames, fps


# --- videos -------------------------------------------------------------------------------------
def test_video_faces_are_found_tracked_drawn_and_written(clip, random_checkpoint, tmp_path):
    path, truth = clip
    out, preds = tmp_path / "annotated.avi", tmp_path / "preds.csv"
    summary = infer(source=path, ckpt_path=random_checkpoint, output=out, predictions=preds, **{"draw.uncertain_below": 0})

    assert summary.frames == BLANK + FACE_FRAMES
    assert summary.frames_without_faces == BLANK + 1
    frames, fps = read_video(out)
    source_frames, _ = read_video(path)
    assert len(frames) == BLANK + FACE_FRAMES and fps == pytest.approx(25)
    assert frames[0].shape == (480, 640, 3)
    for i in range(BLANK):  # frames without faces are written as they came
        assert np.abs(frames[i].astype(int) - source_frames[i]).max() < 40  # MJPG's own noise only

    with open(preds, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["frame", "timestamp", "face_id", "x", "y", "w", "h", "label", *EMOTIONS]
    assert len(rows) == 2 * SHOWN  # one row per face per frame
    ids = {}
    for row in rows:
        frame = int(row["frame"])
        box = tuple(int(row[k]) for k in "xywh")
        placed = max(range(2), key=lambda i: iou(box, truth[frame][i]))
        assert iou(box, truth[frame][placed]) > 0.5  # found where it was put
        ids.setdefault(placed, set()).add(row["face_id"])
        assert float(row["timestamp"]) == pytest.approx(frame / 25, abs=1e-3)
        probs = [float(row[e]) for e in EMOTIONS]
        assert sum(probs) == pytest.approx(1, abs=1e-3) and row["label"] == EMOTIONS[int(np.argmax(probs))]
    assert ids[0] != ids[1] and all(len(v) == 1 for v in ids.values())  # each face keeps one id

    # The box is drawn in its label's colour on the output (MJPG shifts colours a little).
    last = rows[-1]
    x, y, w, h = (int(last[k]) for k in "xywh")
    edge = frames[int(last["frame"])][y + h, x + 10 : x + w - 10].astype(int)
    assert np.abs(edge - EMOTION_COLOURS[last["label"]]).mean() < 40


def test_a_stream_url_is_read_like_a_video(clip, random_checkpoint, tmp_path):
    path, _ = clip
    summary = infer(source=f"file://{path}", ckpt_path=random_checkpoint, output=tmp_path / "out.avi")
    assert summary.frames == BLANK + FACE_FRAMES and summary.faces == 2 * SHOWN
    assert len(read_video(tmp_path / "out.avi")[0]) == BLANK + FACE_FRAMES


def test_corrupt_frames_are_skipped_and_the_output_stays_valid(random_checkpoint, tmp_path, caplog):
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) for _ in range(30)]  # big frames: easy to hit one
    path = write_video(tmp_path / "clip.mp4", noise, fps=25)
    data = bytearray(path.read_bytes())
    for where in (0.3, 0.5, 0.7):  # zero a few kB inside the stream: one frame's header is lost
        start = int(len(data) * where)
        data[start : start + 3000] = bytes(3000)
    path.write_bytes(bytes(data))

    out = tmp_path / "out.mp4"
    caplog.set_level(logging.INFO, logger="fer.infer")
    summary = infer(source=path, ckpt_path=random_checkpoint, output=out)
    assert summary.frames == 29 and "skipped 1 corrupt frame" in caplog.text
    assert len(read_video(out)[0]) == 29  # every frame that decoded, in a file that plays


def test_video_source_counts_failed_reads_and_keeps_frame_numbers():
    from fer.infer.sources import VideoSource

    class Capture:  # frames 0..9, where reads 3 and 4 fail (corrupt) and the end fails for good
        def __init__(self):
            self.reads = 0

        def read(self):
            self.reads += 1
            n = self.reads  # read 0 happened when the source was opened
            ok = n < 10 and n not in (3, 4)
            return ok, (np.full((4, 4, 3), n, np.uint8) if ok else None)

        def get(self, prop):
            return 10.0 if prop == cv2.CAP_PROP_FPS else 0.0

        def release(self):
            pass

    source = VideoSource(Capture(), "fake", "video", np.zeros((4, 4, 3), np.uint8))
    frames = list(source.frames())
    assert [f.index for f in frames] == [0, 1, 2, 5, 6, 7, 8, 9]
    assert [int(f.image[0, 0, 0]) for f in frames] == [0, 1, 2, 5, 6, 7, 8, 9]
    assert frames[3].timestamp == pytest.approx(0.5)
    assert source.skipped == 2


def test_existing_outputs_are_refused_unless_overwrite(clip, random_checkpoint, tmp_path):
    path, _ = clip
    out = tmp_path / "mine.mp4"
    out.write_bytes(b"the user's own video")
    with pytest.raises(FerError, match="already exists.*overwrite=true"):
        infer(source=path, ckpt_path=random_checkpoint, output=out)
    assert out.read_bytes() == b"the user's own video"
    preds = tmp_path / "preds.jsonl"
    with pytest.raises(FerError, match="already exists"):  # the prediction file was checked too; no output left behind
        preds.write_text("keep me\n")
        infer(source=path, ckpt_path=random_checkpoint, output=tmp_path / "new.mp4", predictions=preds)
    assert not (tmp_path / "new.mp4").exists() and preds.read_text() == "keep me\n"
    infer(source=path, ckpt_path=random_checkpoint, output=out, overwrite=True, max_frames=5)
    assert len(read_video(out)[0]) == 5


# --- images and folders -------------------------------------------------------------------------
def test_image_is_annotated_and_its_faces_printed(faces, random_checkpoint, tmp_path, capsys):
    frame, placed = place_faces(faces[:2], [(40, 100), (380, 120)])
    cv2.imwrite(str(tmp_path / "photo.jpg"), frame)
    summary = infer(source=tmp_path / "photo.jpg", ckpt_path=random_checkpoint, output=tmp_path / "out" / "photo.png")
    assert summary.faces == 2
    drawn = cv2.imread(str(tmp_path / "out" / "photo.png"))
    assert drawn.shape == frame.shape and np.abs(drawn.astype(int) - frame).max() > 100
    printed = capsys.readouterr().out
    assert printed.count(" at x=") == 2 and "photo.jpg" in printed


def test_folder_of_crops_with_detect_false(fer2013, random_checkpoint, tmp_path):
    images, _ = fer2013.split("test")
    crops = tmp_path / "crops"
    (crops / "more").mkdir(parents=True)
    names = [f"{i}.png" for i in range(5)] + ["more/5.png"]
    for name, face in zip(names, images):
        cv2.imwrite(str(crops / name), face)
    (crops / "notes.txt").write_text("not an image, not looked at")

    preds, out = tmp_path / "preds.jsonl", tmp_path / "annotated"
    gamma_off = {"preprocess.gamma": "null"}
    summary = infer(source=crops, ckpt_path=random_checkpoint, detect=False, output=out, predictions=preds, **gamma_off)
    assert summary.frames == summary.faces == 6

    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert sorted(r["file"] for r in rows) == sorted(names)
    assert all(r["box"] == [0, 0, 48, 48] and r["face_id"] == 0 for r in rows)
    # Whole-image faces, gamma off: exactly what the network gives for FER2013's own pixels.
    expected = FaceClassifier.from_checkpoint(random_checkpoint)(images[:6])
    for r in rows:
        i = names.index(r["file"])
        assert [r["probs"][e] for e in EMOTIONS] == pytest.approx(expected[i].tolist(), abs=1e-4)
    # tta=flip: the same faces, each averaged with its mirror image.
    flipped = infer(
        source=crops, ckpt_path=random_checkpoint, detect=False, predictions=tmp_path / "flip.jsonl", tta="flip", **gamma_off
    )
    assert flipped.faces == 6
    expected_flip = FaceClassifier.from_checkpoint(random_checkpoint, tta="flip")(images[:6])
    for line in (tmp_path / "flip.jsonl").read_text().splitlines():
        r = json.loads(line)
        assert [r["probs"][e] for e in EMOTIONS] == pytest.approx(expected_flip[names.index(r["file"])].tolist(), abs=1e-4)
    for name in names:  # small crops are enlarged so their labels can be read
        assert cv2.imread(str(out / name)).shape[:2] == (SMALLEST_READABLE_SIDE, SMALLEST_READABLE_SIDE)


def test_unreadable_files_in_a_folder_are_skipped(fer2013, random_checkpoint, tmp_path, caplog):
    images, _ = fer2013.split("test")
    cv2.imwrite(str(tmp_path / "a.png"), images[0])
    (tmp_path / "b.png").write_text("not really a png")
    caplog.set_level(logging.INFO, logger="fer.infer")
    summary = infer(source=tmp_path, ckpt_path=random_checkpoint, detect=False)
    assert summary.frames == 1
    assert "skipped 1 unreadable file" in caplog.text


@pytest.mark.parametrize("overwrite", [False, True])
def test_outputs_never_replace_inputs(fer2013, random_checkpoint, tmp_path, overwrite):
    # output= inside the source folder: photos/a.png would become photos/ann/a.png, which is itself
    # a source image (an earlier run's output, say). Refused whatever overwrite says, nothing written.
    images, _ = fer2013.split("test")
    photos = tmp_path / "photos"
    (photos / "ann").mkdir(parents=True)
    for name, face in zip(["a.png", "b.png", "ann/a.png"], images):
        cv2.imwrite(str(photos / name), face)
    before = {p: p.read_bytes() for p in photos.rglob("*.png")}
    with pytest.raises(FerError, match="outputs never replace inputs"):
        infer(source=photos, ckpt_path=random_checkpoint, detect=False, output=photos / "ann", overwrite=overwrite)
    assert {p: p.read_bytes() for p in photos.rglob("*.png")} == before
    # The same file under another name (a hard link) is the same input.
    video = write_video(tmp_path / "clip.avi", [background((64, 48))] * 3, fps=5)
    os.link(video, tmp_path / "same.avi")
    with pytest.raises(FerError, match="outputs never replace inputs"):
        infer(source=video, ckpt_path=random_checkpoint, output=tmp_path / "same.avi", overwrite=overwrite)
    with pytest.raises(FerError, match="is the source itself|outputs never replace inputs"):
        infer(source=video, ckpt_path=random_checkpoint, output=video, overwrite=overwrite)
    assert len(read_video(video)[0]) == 3


def test_video_source_counts_frames_lost_at_the_end():
    from fer.infer.sources import VideoSource

    class Capture:  # a file of 10 frames whose last one (read 9) cannot be decoded
        reads = 0

        def read(self):
            self.reads += 1
            ok = self.reads < 9
            return ok, (np.zeros((4, 4, 3), np.uint8) if ok else None)

        def get(self, prop):
            return {cv2.CAP_PROP_FPS: 10.0, cv2.CAP_PROP_FRAME_COUNT: 10.0}.get(prop, 0.0)

        def release(self):
            pass

    source = VideoSource(Capture(), "fake", "video", np.zeros((4, 4, 3), np.uint8))
    assert [f.index for f in source.frames()] == list(range(9)) and source.skipped == 1


def test_checkpoint_face_settings_win_unless_given():
    stored = {"image_size": 48, "align": False, "margin": 0.1, "gamma": 1.5}
    configured = {"image_size": 48, "align": True, "margin": 0.0, "gamma": "auto"}
    assert face_settings(stored, configured, set()) == stored
    assert face_settings(stored, configured, given_face_keys(["preprocess.gamma=auto", "source=x"]))["gamma"] == "auto"
    assert face_settings(None, configured, set()) == configured


# --- as a user runs it ----------------------------------------------------------------------------
def test_cli_video_run(clip, random_checkpoint, tmp_path):
    import shutil

    shutil.copy(clip[0], tmp_path / "clip.avi")
    args = ["source=clip.avi", f"ckpt_path={random_checkpoint}", "output=annotated.mp4", "predictions=preds.jsonl"]
    done = run_cli([str(ROOT / "infer.py"), *args], cwd=tmp_path)  # relative paths, from the user's own folder
    assert done.returncode == 0, done.stderr
    assert f"{BLANK + FACE_FRAMES} frames" in done.stdout and "Traceback" not in done.stderr
    assert len(read_video(tmp_path / "annotated.mp4")[0]) == BLANK + FACE_FRAMES
    assert len((tmp_path / "preds.jsonl").read_text().splitlines()) == 2 * SHOWN
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotated.mp4", "clip.avi", "preds.jsonl"]  # no run folders, no logs


def bad_inputs(tmp_path, ckpt, clip_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    (tmp_path / "empty").mkdir()
    taken = tmp_path / "taken.mp4"
    taken.write_bytes(b"x")
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), background((64, 48)))
    truncated = tmp_path / "truncated.jpg"  # the first 300 bytes of a JPEG: OpenCV decodes none of it
    truncated.write_bytes(cv2.imencode(".jpg", background((640, 480)))[1].tobytes()[:300])
    return {
        "no checkpoint": (["source=x.jpg", "ckpt_path=null"], "pass ckpt_path="),
        "missing checkpoint": ([f"ckpt_path={tmp_path / 'nope.ckpt'}"], "checkpoint not found"),
        "not our checkpoint": ([f"ckpt_path={text}"], "is not a checkpoint this project wrote"),
        "missing source": ([f"ckpt_path={ckpt}", f"source={tmp_path / 'nope.mp4'}"], "source not found"),
        "not an image or video": ([f"ckpt_path={ckpt}", f"source={text}"], "is not an image or video"),
        "empty folder": ([f"ckpt_path={ckpt}", f"source={tmp_path / 'empty'}"], "no images in the folder"),
        "camera": ([f"ckpt_path={ckpt}", "source=7"], "no camera 7"),
        "negative camera": ([f"ckpt_path={ckpt}", "source=-1"], "camera indexes start at 0"),
        "truncated jpeg": (
            [f"ckpt_path={ckpt}", f"source={truncated}", f"output={tmp_path / 'out.jpg'}"],
            "damaged or truncated",
        ),
        "output exists": ([f"ckpt_path={ckpt}", f"source={clip_path}", f"output={taken}"], "already exists"),
        "video to an image": ([f"ckpt_path={ckpt}", f"source={clip_path}", f"output={tmp_path / 'x.jpg'}"], "writes a video"),
        "image to a video": (
            [f"ckpt_path={ckpt}", f"source={photo}", f"output={tmp_path / 'x.mp4'}"],
            "an image source writes an image",
        ),
        "predictions format": ([f"ckpt_path={ckpt}", f"source={clip_path}", f"predictions={tmp_path / 'p.txt'}"], "extension"),
        "display without one": ([f"ckpt_path={ckpt}", f"source={clip_path}", "display=true"], "there is no display"),
        "display value": (
            [f"ckpt_path={ckpt}", f"source={clip_path}", "display=maybe"],
            "display=maybe: must be true or false, or auto",
        ),
        "tta mode": (
            [f"ckpt_path={ckpt}", f"source={clip_path}", "tta=five_crop"],
            "tta=five_crop: must be one of none, flip, ten_crop",
        ),
        "tta on onnx": (
            [f"ckpt_path={ckpt.with_suffix('.onnx')}", "backend=onnx", f"source={clip_path}", "tta=flip"],
            "tta=flip runs with backend=torch",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "no checkpoint",
        "missing checkpoint",
        "not our checkpoint",
        "missing source",
        "not an image or video",
        "empty folder",
        "camera",
        "negative camera",
        "truncated jpeg",
        "output exists",
        "video to an image",
        "image to a video",
        "predictions format",
        "display without one",
        "display value",
        "tta mode",
        "tta on onnx",
    ],
)
def test_cli_bad_input_is_one_clear_line(case, clip, random_checkpoint, tmp_path):
    args, message = bad_inputs(tmp_path, random_checkpoint, clip[0])[case]
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    done = run_cli(["infer.py", *args], env={**env, "DISPLAY": "", "WAYLAND_DISPLAY": ""})
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr
