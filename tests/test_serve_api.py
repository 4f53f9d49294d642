"""The HTTP API through FastAPI's test client (in process): answers, the same pipeline as infer.py, bad input,
the size limit. tests/test_serve_live.py does the same through a real server process, and the page in Chromium."""

import json

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hydra import compose, initialize_config_dir

from fer.infer.detect import iou
from fer.infer.retinaface import ANCHOR_SIZES_KEPT, RetinaFaceDetector
from fer.paths import CONF_DIR
from fer.serve.images import BadImage, decode, header_size

from conftest import run_cli
from serve_inputs import bad_inputs, jpeg, planted_face, png_bomb

pytestmark = pytest.mark.xdist_group("serve_api")  # one client (and one model) for the module


def serve_config(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("serve", overrides=list(overrides))


@pytest.fixture(scope="module")
def scene(real_faces, fer2013):
    images, _ = fer2013.split("test")
    return planted_face(images)


@pytest.fixture(scope="module")
def client():
    from fer.cli.serve import app_for

    with TestClient(app_for(serve_config("max_upload_mb=2"), []), raise_server_exceptions=False) as c:
        yield c


def post_image(client, data: bytes, kind="image/jpeg", **params):
    return client.post("/predict", content=data, headers={"Content-Type": kind}, params=params)


def test_predict_finds_the_planted_face(client, scene):
    frame, box = scene
    r = post_image(client, jpeg(frame))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["width"], answer["height"]) == (640, 480)
    (face,) = answer["faces"]
    assert iou(tuple(face["box"]), box) > 0.4
    assert list(face["probabilities"]) == ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]
    assert sum(face["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    assert face["label"] == max(face["probabilities"], key=face["probabilities"].get)
    assert face["score"] == face["probabilities"][face["label"]]
    assert np.array(face["landmarks"]).shape == (5, 2)  # RetinaFace's eyes, nose, mouth corners
    assert "analyse;dur=" in r.headers["server-timing"]


def test_the_answer_is_infer_pys(client, scene, tmp_path):
    """The same image through infer.py: the same box and probabilities (one pipeline, not a copy)."""
    frame, _ = scene
    cv2.imwrite(str(tmp_path / "face.png"), frame)
    r = run_cli(["infer.py", "source=face.png", "predictions=p.jsonl"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (row,) = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    (face,) = post_image(client, (tmp_path / "face.png").read_bytes(), "image/png").json()["faces"]
    assert face["box"] == row["box"]
    for name, p in row["probs"].items():
        assert face["probabilities"][name] == pytest.approx(p, abs=2e-4)


def test_multipart_and_raw_body_give_the_same_answer(client, scene):
    data = jpeg(scene[0])
    raw = post_image(client, data).json()
    form = client.post("/predict", files={"file": ("face.jpg", data, "image/jpeg")})
    assert form.status_code == 200 and form.json() == raw
    octets = post_image(client, data, "application/octet-stream")
    assert octets.json() == raw


def test_detect_false_takes_the_image_as_one_face(client, real_faces):
    crop = real_faces[0][3]  # a 48x48 FER2013 face (Happy)
    r = post_image(client, cv2.imencode(".png", crop)[1].tobytes(), "image/png", detect="false")
    (face,) = r.json()["faces"]
    assert face["box"] == [0, 0, 48, 48] and face["landmarks"] is None
    blank = np.full((480, 640, 3), 128, np.uint8)
    assert post_image(client, jpeg(blank)).json()["faces"] == []  # no face on a grey frame: an empty list, not an error


@pytest.mark.parametrize("detect", ["true", "false"])
def test_odd_but_valid_images_are_answered(client, detect):
    odd = {
        "1x1": np.zeros((1, 1, 3), np.uint8),
        "3x1000 grey": np.full((3, 1000), 90, np.uint8),
        "16-bit grey": np.full((64, 64), 30000, np.uint16),
        "with alpha": np.full((100, 120, 4), 200, np.uint8),
    }
    for name, image in odd.items():
        r = post_image(client, cv2.imencode(".png", image)[1].tobytes(), "image/png", detect=detect)
        assert r.status_code == 200, (name, r.text)
        assert len(r.json()["faces"]) == (detect == "false"), name


@pytest.mark.parametrize("name", list(bad_inputs(b"\xff\xd8placeholder")))
def test_bad_input_is_a_4xx_with_one_line_and_the_next_request_is_served(client, scene, name):
    good = jpeg(scene[0])
    request, status = bad_inputs(good)[name]
    r = client.post("/predict", **request)
    assert r.status_code == status, r.text
    assert list(r.json()) == ["error"] and "\n" not in r.json()["error"] and r.json()["error"]
    assert post_image(client, good).status_code == 200


def test_a_body_over_the_limit_is_refused(client):
    r = post_image(client, bytes(3 * 2**20))  # the client's limit: max_upload_mb=2
    assert r.status_code == 413 and "max_upload_mb" in r.json()["error"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(3):
            yield bytes(2**20)

    r = client.post("/predict", content=chunks(), headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 413 and "max_upload_mb" in r.json()["error"]


def test_health_info_docs_and_the_page(client):
    assert client.get("/health").json() == {"status": "ready"}
    info = client.get("/info").json()
    assert info["classes"][3] == "Happy" and info["colours"]["Happy"] == "#fad214"  # infer.py's BGR (20, 210, 250)
    assert info["validation_accuracy"] == pytest.approx(0.6835, abs=1e-4) and info["detector"] == "RetinaFaceDetector"
    assert "/predict" in client.get("/openapi.json").json()["paths"] and client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and '<script src="/static/app.js">' in page.text and "//" not in page.text.split("<body")[0]
    assert "getUserMedia" in client.get("/static/app.js").text
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and list(missing.json()) == ["error"]


def test_header_sizes_are_read_without_decoding():
    image = np.zeros((37, 53, 3), np.uint8)
    for ext in (".png", ".jpg", ".bmp", ".webp"):
        assert header_size(cv2.imencode(ext, image)[1].tobytes()) == (53, 37), ext
    assert header_size(b"GIF89a" + (53).to_bytes(2, "little") + (37).to_bytes(2, "little")) == (53, 37)
    assert header_size(png_bomb(3000)) == (3000, 3000)
    with pytest.raises(BadImage, match="30000x30000"):
        decode(png_bomb(), max_pixels=40_000_000)


def test_retinaface_keeps_the_anchors_of_a_few_sizes_only():
    detector = RetinaFaceDetector(scale=1.0)
    for w in range(64, 64 + 4 * (ANCHOR_SIZES_KEPT + 4), 4):
        detector.detect(np.zeros((64, w, 3), np.uint8))
    assert len(detector._anchors) == ANCHOR_SIZES_KEPT  # a server sees every size: memory must not grow with them


def test_haar_detection_from_many_threads_at_once(scene):
    """detector=haar: OpenCV's cascades are not thread-safe, so each analysing thread has its own."""
    from concurrent.futures import ThreadPoolExecutor

    from fer.cli.serve import app_for

    data = jpeg(scene[0])
    with TestClient(app_for(serve_config("detector=haar", "concurrency=3"), [])) as haar:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: post_image(haar, data).json(), range(24)))
        assert haar.get("/info").json()["detector"] == "HaarDetector"
    assert all(a == answers[0] for a in answers)  # the same image, the same answer, whatever the thread
    assert answers[0]["faces"] and answers[0]["faces"][0]["landmarks"] is None  # Viola-Jones finds no landmarks
