"""Where frames come from: a camera, a video file or stream URL, one image, or a folder of images.

Every source yields `Frame`s and keeps count of what it had to skip, so a corrupt frame or an
unreadable file in a folder costs that frame, not the run.
"""

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fer.errors import FerError
from fer.paths import listing, readable

IMAGE_SUFFIXES = {
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".pgm",
    ".ppm",
    ".pbm",
    ".pnm",
    ".jp2",
    ".exr",
    ".hdr",
    ".sr",
    ".ras",
}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".wmv", ".flv", ".mpg", ".mpeg", ".3gp", ".ts", ".mts", ".gif"}
# A file whose reads fail this many times in a row has ended (or died); fewer failures are corrupt frames.
MAX_CONSECUTIVE_FAILURES = 25
WHAT_SOURCE_CAN_BE = "give a camera index (source=0), a video or image file, a folder of images or a stream URL"


@dataclass
class Frame:
    image: np.ndarray  # as decoded: grey, BGR or BGRA; 8 or 16 bit
    index: int  # position in the stream (skipped frames keep their numbers)
    timestamp: float  # seconds: position in a file, time since start for cameras and streams
    name: str | None = None  # image and folder sources: the file, relative to the folder


def quiet_opencv():
    # OpenCV and FFmpeg print their own warnings for every file they cannot open and every corrupt
    # frame; we report those ourselves, once, in words that say what to do.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def read_image(path: Path) -> np.ndarray | None:
    """Any image OpenCV reads, keeping grey and 16-bit data; EXIF orientation applied. None if unreadable."""
    try:
        data = np.fromfile(path, dtype=np.uint8)  # imdecode, unlike imread, takes any path on every OS
    except OSError:
        return None
    return decode_image(data)


def decode_image(data: np.ndarray) -> np.ndarray | None:
    """An encoded image's bytes (uint8) -> the image as read_image gives it; None if unreadable. (The server's uploads too.)"""
    if data.size == 0:
        return None
    try:
        return cv2.imdecode(data, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
    except cv2.error:  # e.g. over OpenCV's pixel limit (about a gigapixel)
        return None


class ImageSource:
    """One image or every image in a folder (recursively, sorted), each a frame named by its path."""

    def __init__(self, paths: list[Path], root: Path | None = None, first: np.ndarray | None = None):
        self.paths, self.root = paths, root
        self.kind = "folder" if root is not None else "image"
        self.fps = 0.0
        self.unreadable: list[str] = []  # files that could not be read: skipped
        self._first = first  # a single image is decoded once, when it is checked

    def frames(self) -> Iterator[Frame]:
        for i, path in enumerate(self.paths):
            image = self._first if (i == 0 and self._first is not None) else read_image(path)
            if image is None:
                self.unreadable.append(str(path))
                continue
            name = str(path.relative_to(self.root)) if self.root is not None else path.name
            yield Frame(image, i, 0.0, name)

    @property
    def skipped(self) -> int:
        return len(self.unreadable)

    def describe(self) -> str:
        return str(self.root if self.root is not None else self.paths[0])

    def close(self):
        pass


class VideoSource:
    """A video file, a camera or a stream, read frame by frame with OpenCV."""

    def __init__(self, capture: cv2.VideoCapture, description: str, kind: str, first: np.ndarray):
        self.capture, self.description, self.kind = capture, description, kind
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps < 1000 else 0.0  # cameras and streams may report nothing useful
        self.size = (first.shape[1], first.shape[0])
        self.skipped = 0  # corrupt frames: failed reads followed by good ones
        self._first = first

    def frames(self) -> Iterator[Frame]:
        start = time.monotonic()
        index, failures, image = 0, 0, self._first
        while True:
            if image is None:
                ok, image = self.capture.read()
                if not ok or image is None:
                    image, failures = None, failures + 1
                    if failures >= MAX_CONSECUTIVE_FAILURES:  # the end of the file, or a camera that stopped
                        self.skipped += self._lost_at_end(index)
                        return
                    continue
                # Failed reads followed by a good one were corrupt frames: skipped, but they keep their numbers.
                self.skipped += failures
                index, failures = index + failures, 0
            in_file = self.kind == "video" and self.fps > 0
            timestamp = index / self.fps if in_file else time.monotonic() - start
            yield Frame(image, index, timestamp)
            index, image = index + 1, None

    def _lost_at_end(self, reached: int) -> int:
        # Failed reads at the end look like the end itself; a file's own frame count says whether
        # frames were lost there (a camera or stream has none to say).
        if self.kind != "video":
            return 0
        total = self.capture.get(cv2.CAP_PROP_FRAME_COUNT)
        lost = int(total) - reached if total and total > 0 else 0
        return lost if 0 < lost <= MAX_CONSECUTIVE_FAILURES else 0

    def describe(self) -> str:
        return self.description

    def close(self):
        self.capture.release()


def _open_capture(target: int | str) -> tuple[cv2.VideoCapture, np.ndarray | None]:
    capture = cv2.VideoCapture(target)
    if not capture.isOpened():
        return capture, None
    ok, first = capture.read()
    return capture, (first if ok else None)


def check_camera_exists(index: int, devices: Path = Path("/dev")):
    """Refuse a camera index that cannot exist before OpenCV is asked: some of its back-ends crash on
    them (a negative index ended the process with a segmentation fault on a machine without cameras)."""
    if index < 0:
        raise FerError(f"source={index}: camera indexes start at 0 (the first camera is source=0)")
    if not devices.joinpath("null").exists() or not _is_linux():
        return  # macOS and Windows list their cameras only through OpenCV itself
    found = sorted(int(p.name[5:]) for p in devices.glob("video*") if p.name[5:].isdigit())
    if index not in found:
        listed = ", ".join(f"source={i}" for i in found)
        have = f"cameras here: {listed}" if found else "this machine has no camera (no /dev/video*)"
        raise FerError(f"no camera {index}: {have}; or give a video or image file (source=clip.mp4)")


def _is_linux() -> bool:
    return os.uname().sysname == "Linux" if hasattr(os, "uname") else False


def open_camera(index: int) -> VideoSource:
    check_camera_exists(index)
    capture, first = _open_capture(index)
    if first is None:
        capture.release()
        raise FerError(
            f"could not open camera {index}: there is no such camera, or another program is using it; "
            f"try another index (source=1) or a file (source=clip.mp4)"
        )
    return VideoSource(capture, f"camera {index}", "camera", first)


def open_stream(url: str) -> VideoSource:
    capture, first = _open_capture(url)
    if first is None:
        capture.release()
        raise FerError(f"could not open the stream {url}: OpenCV got no frame from it; check the address and that it is live")
    return VideoSource(capture, url, "stream", first)


def open_file(path: Path) -> ImageSource | VideoSource:
    if not readable(path):
        raise FerError(f"permission denied: {path}")
    # The suffix says which to try first (a GIF may be either); the content decides.
    video_first = path.suffix.lower() in VIDEO_SUFFIXES
    image = None if video_first else read_image(path)
    if image is not None:
        return ImageSource([path], first=image)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        # An image OpenCV cannot decode (damaged, truncated) is not tried as a video: OpenCV's image-
        # sequence reader opens it as a 1-frame "video", and output=x.jpg would then be refused for it.
        if path.stat().st_size == 0:
            raise FerError(f"{path} is empty: not an image")
        raise FerError(f"{path} is not an image OpenCV can read (damaged or truncated?); {WHAT_SOURCE_CAN_BE}")
    capture, first = _open_capture(str(path))
    if first is not None:
        return VideoSource(capture, str(path), "video", first)
    capture.release()
    image = read_image(path) if video_first else None
    if image is not None:
        return ImageSource([path], first=image)
    if path.stat().st_size == 0:
        raise FerError(f"{path} is empty: not an image or a video")
    raise FerError(f"{path} is not an image or video OpenCV can read (tried it as both); {WHAT_SOURCE_CAN_BE}")


def open_folder(path: Path) -> ImageSource:
    images = sorted(_images_under(path))
    if not images:
        raise FerError(f"no images in the folder {path} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, in subfolders too)")
    return ImageSource(images, root=path)


def _images_under(folder: Path):
    # Path.rglob passes over a subfolder it may not list; here that is "permission denied", not "no images".
    for entry in listing(folder):
        if entry.is_dir():
            yield from _images_under(Path(entry.path))
        elif entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
            yield Path(entry.path)


def camera_index(spec) -> int | None:
    if isinstance(spec, bool):
        return None
    if isinstance(spec, int):
        return spec
    if isinstance(spec, str) and spec.strip().isdigit():
        return int(spec)
    return None


def open_source(spec: int | str | Path | None) -> ImageSource | VideoSource:
    """source=0 (camera), a video or image file, a folder of images, or a URL OpenCV opens."""
    quiet_opencv()
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        raise FerError(f"no source given; {WHAT_SOURCE_CAN_BE}")
    if isinstance(spec, str) and spec.strip().startswith("-") and spec.strip()[1:].isdigit():
        spec = int(spec)  # source='-1': refused as a camera index, not looked for as a file
    index = camera_index(spec)
    if index is not None:
        return open_camera(index)
    spec = str(spec)
    if "://" in spec:
        return open_stream(spec)
    path = Path(spec).expanduser()
    if not path.exists():
        raise FerError(f"source not found: {spec} (looked for {path.absolute()}); {WHAT_SOURCE_CAN_BE}")
    return open_folder(path) if path.is_dir() else open_file(path)
