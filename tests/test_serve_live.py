"""A real `python serve.py` process on 127.0.0.1 (a free port): concurrent requests, bad input, uploads over
the limit refused before they are read whole, a bad config's one-line error; and the webcam page in a real
headless Chromium (Debian's `chromium`, driven by Playwright) whose fake camera plays a generated face video."""

import concurrent.futures
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import httpx2 as httpx
import numpy as np
import pytest

from fer.infer.detect import iou

from conftest import ROOT, run_cli
from serve_inputs import bad_inputs, jpeg, planted_face

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("serve_live")]  # one server process for the module
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LIMIT_MB = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def scene(fer2013):
    return planted_face(fer2013.split("test")[0])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The URL of a running `python serve.py`, once /health says it is ready (at most 3 minutes)."""
    work = tmp_path_factory.mktemp("serve")
    port = free_port()
    log = open(work / "server.log", "w")
    args = [sys.executable, str(ROOT / "serve.py"), f"port={port}", f"max_upload_mb={LIMIT_MB}"]
    process = subprocess.Popen(args, cwd=work, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, f"serve.py exited: {(work / 'server.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "serve.py was not ready within 3 minutes"
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as r:
                    if json.load(r) == {"status": "ready"}:
                        break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def healthy(url: str, face: bytes):
    with httpx.Client(base_url=url, timeout=60) as client:
        assert client.get("/health").json() == {"status": "ready"}
        r = client.post("/predict", content=face, headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 200 and len(r.json()["faces"]) == 1


def test_concurrent_requests_all_answered(server, scene):
    data = jpeg(scene[0])

    def client(_):
        with httpx.Client(base_url=server, timeout=120) as c:
            return [c.post("/predict", content=data, headers={"Content-Type": "image/jpeg"}) for _ in range(3)]

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        answers = [r for rs in pool.map(client, range(32)) for r in rs]
    assert [r.status_code for r in answers] == [200] * 96
    assert len({json.dumps(r.json(), sort_keys=True) for r in answers}) == 1  # the same image, the same answer


def test_bad_input_through_the_server(server, scene):
    good = jpeg(scene[0])
    with httpx.Client(base_url=server, timeout=60) as client:
        for name, (request, status) in bad_inputs(good).items():
            r = client.post("/predict", **request)
            assert (r.status_code, list(r.json())) == (status, ["error"]), name
    healthy(server, good)


def raw_request(url: str, headers: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    s.sendall(f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n{headers}\r\n".encode())
    return s


def _whole_answer(s) -> str:
    """The response's head and its body: they may come in separate packets."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _content_length(data):
        more = s.recv(65536)
        if not more:
            break
        data += more
    return data.decode()


def _content_length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def test_a_100_mb_upload_is_refused_before_it_is_sent(server, scene):
    """By its Content-Length: the 413 comes back while not one byte of the body has been sent."""
    with raw_request(server, f"Content-Length: {100 * 2**20}\r\n") as s:
        answer = _whole_answer(s)
    assert answer.startswith("HTTP/1.1 413") and "max_upload_mb" in answer
    healthy(server, jpeg(scene[0]))


def test_a_chunked_upload_is_cut_off_at_the_limit(server, scene):
    """Without a Content-Length the body is counted as it arrives: refused a little past the limit, not at 100 MB."""
    chunk, sent, answer = bytes(2**20), 0, b""
    with raw_request(server, "Transfer-Encoding: chunked\r\n") as s:
        try:
            while sent < 100 * 2**20 and not answer:
                s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
                if select.select([s], [], [], 0)[0]:
                    answer = s.recv(65536)
            answer = answer or s.recv(65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
    assert sent < 40 * 2**20, f"{sent / 2**20:.0f} MB were taken in"
    assert not answer or answer.startswith(b"HTTP/1.1 413")
    healthy(server, jpeg(scene[0]))


def test_two_worker_processes_serve_and_stop_together(scene, tmp_path):
    port = free_port()
    args = [sys.executable, str(ROOT / "serve.py"), f"port={port}", "workers=2", "concurrency=1"]
    process = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            try:
                healthy(f"http://127.0.0.1:{port}", jpeg(scene[0]))
                break
            except (httpx.HTTPError, AssertionError):
                time.sleep(1)
        else:
            pytest.fail("serve.py workers=2 was not ready within 3 minutes")
        workers = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
        assert len(workers) >= 2  # uvicorn's worker processes (each with its own models)
    finally:
        process.terminate()
        process.wait(60)
    deadline = time.monotonic() + 30
    while [w for w in workers if Path(f"/proc/{w}").exists()] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [w for w in workers if Path(f"/proc/{w}").exists()], "a worker outlived the server"


def test_a_wrong_model_is_one_line_before_serving(tmp_path):
    r = run_cli([str(ROOT / "serve.py"), f"port={free_port()}", "ckpt_path=missing.ckpt"], cwd=tmp_path, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == ["error: checkpoint not found: missing.ckpt"]


# --- the page in a real browser ---------------------------------------------------------------------


def write_y4m(path: Path, frame: np.ndarray, n: int = 10, fps: int = 10) -> Path:
    """A raw YUV 4:2:0 video (what Chromium's fake camera plays, looping) of `frame` n times."""
    h, w = frame.shape[:2]
    yuv = cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).astype(np.float32)  # planar Y, then U, then V; full range
    # Chromium reads video range (Y 16-235, U and V 16-240): full range would play with crushed blacks and whites.
    yuv[:h] = 16 + yuv[:h] * 219 / 255
    yuv[h:] = 128 + (yuv[h:] - 128) * 224 / 255
    yuv = np.round(yuv).astype(np.uint8).tobytes()
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(n):
            f.write(b"FRAME\n" + yuv)
    return path


@pytest.fixture(scope="module")
def browser_page(server, scene, tmp_path_factory):
    if CHROMIUM is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is missing: apt-get install -y chromium (as README's Tests section says)")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    video = write_y4m(tmp_path_factory.mktemp("camera") / "face.y4m", scene[0])
    fake_camera = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[*fake_camera, f"--use-file-for-fake-video-capture={video}"])
        page = browser.new_page(viewport={"width": 760, "height": 760})
        page.goto(server)
        yield page
        browser.close()


def test_the_page_draws_the_face_from_the_camera(browser_page, scene, tmp_path):
    page = browser_page
    page.wait_for_function("window.fer.frames >= 3", timeout=120_000)
    answer = page.evaluate("window.fer.last")
    (face,) = answer["faces"]
    assert iou(tuple(face["box"]), scene[1]) > 0.4  # the planted face, where it was put
    item = page.locator("#faces li").first.inner_text()
    assert item.startswith(f"{face['label']} ") or item.startswith("uncertain"), item
    # The box's left edge, half-way down, is drawn in the colour infer.py gives the emotion.
    info = page.evaluate("info")
    x, y, w, h = face["box"]
    drawn = page.evaluate(
        f"Array.from(document.getElementById('view').getContext('2d').getImageData({x}, {y + h // 2}, 1, 1).data)"
    )
    want = info["colours"][face["label"]] if face["score"] >= info["uncertain_below"] else "#808080"
    assert drawn[:3] == [int(want[i : i + 2], 16) for i in (1, 3, 5)]
    assert page.locator("#fps").inner_text().endswith(" fps")
    shot = Path(os.environ.get("FER_SERVE_SCREENSHOT") or tmp_path / "page.png")  # docs/serving.md's picture
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000


def test_the_page_takes_a_chosen_photo(browser_page, scene, tmp_path):
    page = browser_page
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), cv2.flip(scene[0], 1))  # mirrored: a different answer from the camera's
    page.set_input_files("#photo", str(photo))
    page.wait_for_function("document.getElementById('camera').hidden === false", timeout=60_000)
    page.wait_for_function("window.fer.last && window.fer.last.faces.length === 1 && window.fer.last.faces[0].box[0] > 200")
    (face,) = page.evaluate("window.fer.last")["faces"]
    x, y, w, h = scene[1]
    assert iou(tuple(face["box"]), (640 - x - w, y, w, h)) > 0.4
