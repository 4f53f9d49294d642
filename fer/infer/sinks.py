"""Where results go: an annotated video, image or folder of images, a predictions file (CSV or
JSONL), and a window. No sink replaces an existing file unless told to (overwrite=true)."""

import csv
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from fer.errors import FerError
from fer.infer.faces import FaceResult
from fer.infer.sources import Frame

VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}
IMAGE_OUTPUTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
PREDICTION_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
FALLBACK_FPS = 30.0  # for cameras and streams that do not say their frame rate
QUIT_KEYS = {ord("q"), ord("Q"), 27}  # q or Esc


def refuse_to_overwrite(paths: Sequence[Path], overwrite: bool, what: str):
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise FerError(f"{what} {existing[0]}{more} already exists; choose another name or pass overwrite=true to replace it")


def refuse_to_replace_inputs(targets: Sequence[Path], inputs: Sequence[Path], what: str):
    """Outputs never replace inputs, whatever overwrite= says: a folder run whose output folder lies
    inside the source folder could otherwise write an annotated copy over a source image."""

    def identity(p: Path):
        try:
            st = p.stat()  # device and inode: the same file under another spelling, a link, a case-insensitive name
        except OSError:
            return None
        return st.st_dev, st.st_ino

    sources = {identity(p) for p in inputs} - {None}
    clash = next((t for t in targets if identity(t) in sources), None)
    if clash is not None:
        raise FerError(
            f"{what} {clash} is one of the source's own files, and outputs never replace inputs "
            "(not even with overwrite=true); choose an output outside the source folder"
        )


def _suffix_error(path: Path, what: str, allowed) -> FerError:
    return FerError(f"{what} {path} has an unknown extension; use one of {', '.join(sorted(allowed))}")


class VideoFileSink:
    """The annotated video: same frame size and rate as the input."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int], overwrite: bool = False):
        codec = VIDEO_CODECS.get(path.suffix.lower())
        if codec is None:
            raise _suffix_error(path, "the output video", VIDEO_CODECS)
        refuse_to_overwrite([path], overwrite, "the output video")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.size, self.fps = path, size, fps if fps > 0 else FALLBACK_FPS
        self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), self.fps, size)
        if not self.writer.isOpened():
            raise FerError(f"could not create the video {path} with codec {codec}; try an .avi or .mp4 name in a writable folder")

    def write(self, image: np.ndarray, frame: Frame, faces: Sequence[FaceResult]):
        if (image.shape[1], image.shape[0]) != self.size:  # a stream that changed resolution mid-way
            image = cv2.resize(image, self.size)
        self.writer.write(image)

    def close(self):
        self.writer.release()


def write_image(path: Path, image: np.ndarray):
    ok, data = cv2.imencode(path.suffix, image)
    if not ok:
        raise FerError(f"could not encode {path} as {path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data.tofile(path)  # imencode + tofile, unlike imwrite, takes any path on every OS
    except OSError as e:
        raise FerError(f"cannot write {path}: {e.strerror or e}") from None


class ImageFileSink:
    """One annotated image, for an image source."""

    def __init__(self, path: Path, overwrite: bool = False):
        if path.suffix.lower() not in IMAGE_OUTPUTS:
            raise _suffix_error(path, "the output image", IMAGE_OUTPUTS)
        refuse_to_overwrite([path], overwrite, "the output image")
        self.path = path

    def write(self, image: np.ndarray, frame: Frame, faces: Sequence[FaceResult]):
        write_image(self.path, image)

    def close(self):
        pass


def folder_target(root: Path, name: str) -> Path:
    # Same relative path as in the source folder; formats OpenCV cannot write become PNG.
    target = root / name
    return target if target.suffix.lower() in IMAGE_OUTPUTS else target.with_suffix(".png")


class FolderSink:
    """One annotated image per source image, under the same relative names."""

    def __init__(self, root: Path, names: Sequence[str], overwrite: bool = False):
        if root.exists() and not root.is_dir():
            raise FerError(f"the output {root} is a file; a folder source needs an output folder (output=annotated/)")
        refuse_to_overwrite([folder_target(root, n) for n in names], overwrite, "the output image")
        self.path = root

    def write(self, image: np.ndarray, frame: Frame, faces: Sequence[FaceResult]):
        write_image(folder_target(self.path, frame.name), image)

    def close(self):
        pass


class PredictionsFile:
    """One row per face per frame: frame index, timestamp, face id, box, label and every class's
    probability (and the file, for image sources). CSV, or JSON lines for .jsonl / .ndjson."""

    def __init__(self, path: Path, class_names: Sequence[str], with_file: bool, overwrite: bool = False):
        self.format = PREDICTION_FORMATS.get(path.suffix.lower())
        if self.format is None:
            raise _suffix_error(path, "the predictions file", PREDICTION_FORMATS)
        refuse_to_overwrite([path], overwrite, "the predictions file")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.class_names, self.with_file = path, list(class_names), with_file
        self.file = open(path, "w", newline="", encoding="utf-8")
        if self.format == "csv":
            self.csv = csv.writer(self.file)
            head = ["file"] if with_file else []
            self.csv.writerow(head + ["frame", "timestamp", "face_id", "x", "y", "w", "h", "label", *self.class_names])

    def write(self, image: np.ndarray, frame: Frame, faces: Sequence[FaceResult]):
        for face in faces:
            probs = [round(float(p), 5) for p in face.probs]
            label = self.class_names[face.label]
            if self.format == "csv":
                head = [frame.name] if self.with_file else []
                self.csv.writerow(head + [frame.index, round(frame.timestamp, 3), face.id, *face.box, label, *probs])
            else:
                row = {"file": frame.name} if self.with_file else {}
                row.update(
                    frame=frame.index,
                    timestamp=round(frame.timestamp, 3),
                    face_id=face.id,
                    box=list(face.box),
                    label=label,
                    probs=dict(zip(self.class_names, probs)),
                )
                self.file.write(json.dumps(row) + "\n")

    def close(self):
        self.file.close()


def has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True  # Windows and macOS always have one for a desktop user


def wants_window(display: bool | str) -> bool:
    """display: auto (a window when a display exists), true or false."""
    if isinstance(display, str):
        choice = display.strip().lower()
        if choice == "auto":
            return has_display()
        if choice not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            raise FerError(f"display must be auto, true or false, not {display!r}")
        display = choice in ("true", "yes", "1", "on")
    if display and not has_display():
        raise FerError(
            "display=true but there is no display (DISPLAY and WAYLAND_DISPLAY are unset); use display=false and output=..."
        )
    return bool(display)


class Window:
    """The live view; q or Esc (or closing it) stops the run."""

    def __init__(self, title: str = "fer: q or Esc quits"):
        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as e:
            why = str(e).strip().splitlines()[-1][:120]
            raise FerError(f"OpenCV cannot open a window here ({why}); use display=false") from None

    def show(self, image: np.ndarray, wait_ms: int | None = 1) -> bool:
        """Shows the frame for wait_ms (None: until a key is pressed); False when the user asked to stop."""
        cv2.imshow(self.title, image)
        while True:
            key = cv2.waitKey(100 if wait_ms is None else max(1, wait_ms))
            closed = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
            if closed or (key & 0xFF) in QUIT_KEYS:
                return False
            if key != -1 or wait_ms is not None:
                return True

    def close(self):
        cv2.destroyWindow(self.title)
        cv2.waitKey(1)
