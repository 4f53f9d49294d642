"""What the serving tests send: a planted real face, and bad inputs a client may send instead of an image."""

import zlib

import cv2
import numpy as np

from fer.infer.retinaface import RetinaFaceDetector

from scenes import detectable, place_faces

SIDE = 192  # the planted face: FER2013's 48 px enlarged 4x (tests/scenes.py)


def planted_face(images: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A 640x480 BGR scene with one real FER2013 face that RetinaFace finds, and where it was put."""
    face = detectable(images[:100], RetinaFaceDetector(threshold=0.8, scale=1.0), 1)[0]
    frame, (box,) = place_faces([face], [(224, 144)])
    return frame, box


def jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image)[1].tobytes()


def png_bomb(side: int = 30000) -> bytes:
    """A valid PNG side x side pixels (1-bit grey, all black) of about 100 KB: decoded, 900 megapixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])  # 1 bit, greyscale, deflate, no filter, no interlace
    squeeze, row = zlib.compressobj(9), bytes(1 + (side + 7) // 8)  # a filter byte, then the row's bits
    data = b"".join(squeeze.compress(row) for _ in range(side)) + squeeze.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def bad_inputs(face_jpeg: bytes) -> dict[str, tuple[dict, int]]:
    """name -> (httpx request arguments, the status it must get)."""
    return {
        "not an image": (dict(content=b"hello, not a picture", headers={"Content-Type": "image/png"}), 400),
        "empty body": (dict(content=b"", headers={"Content-Type": "image/jpeg"}), 400),
        "truncated JPEG": (dict(content=face_jpeg[: len(face_jpeg) // 2], headers={"Content-Type": "image/jpeg"}), 400),
        "decompression bomb": (dict(content=png_bomb(), headers={"Content-Type": "image/png"}), 413),
        "wrong content type": (dict(content=b'{"image": "..."}', headers={"Content-Type": "application/json"}), 415),
        "missing field": (dict(files={"image": ("face.jpg", face_jpeg, "image/jpeg")}), 422),
        "a text field, no file": (dict(files={"file": (None, b"face.jpg")}), 422),
        "bad option": (dict(content=face_jpeg, headers={"Content-Type": "image/jpeg"}, params={"detect": "maybe"}), 422),
    }
