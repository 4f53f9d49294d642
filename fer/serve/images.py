"""Uploaded bytes -> a decoded image, or a one-line reason why not (`BadImage`, with its HTTP status).

An image's size is read from its header before it is decoded: a few kilobytes of PNG can say
30000x30000 and decode into gigabytes. PNG, JPEG, GIF, BMP and WebP headers are read here; any other
format OpenCV reads is decoded under OpenCV's own pixel limit, which `python serve.py` lowers to
max_pixels (OPENCV_IO_MAX_IMAGE_PIXELS, read when cv2 is first imported).
"""

import struct

import numpy as np

from fer.infer.sources import decode_image


class BadImage(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# JPEG markers that start a frame and carry its size (SOF0-15 less DHT, JPG and DAC).
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in _SOF:
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        i += 2 + length
    return None


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, JPEG, GIF, BMP or WebP; None for other formats (or a header cut short)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:2] == b"BM" and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return abs(w), abs(h)  # a negative height: rows stored top-down
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8X":
            return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
        if chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        if chunk == b"VP8 ":
            w, h = struct.unpack("<HH", data[26:30])
            return w & 0x3FFF, h & 0x3FFF
    return None


def decode(data: bytes, max_pixels: int) -> np.ndarray:
    """The image as infer.py reads a file (grey, colour or 16-bit kept; EXIF orientation applied), or BadImage."""
    if not data:
        raise BadImage(400, "the request has no image: send one as the body or as the multipart field 'file'")
    size = header_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        w, h = size
        raise BadImage(413, f"the image is {w}x{h} pixels ({w * h / 1e6:.0f} MP); the limit is {max_pixels / 1e6:g} MP")
    if data[:2] == b"\xff\xd8" and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        # libjpeg decodes a cut-off JPEG as far as it goes and fills the rest with grey: refuse it instead.
        raise BadImage(400, "the JPEG is truncated (no end-of-image marker): send the whole file")
    image = decode_image(np.frombuffer(data, np.uint8))
    if image is None or image.size == 0:
        raise BadImage(400, "the body is not an image OpenCV can read (or it is damaged or too large)")
    if image.shape[0] * image.shape[1] > max_pixels:  # a format whose header is not read above
        raise BadImage(413, f"the image is {image.shape[1]}x{image.shape[0]} pixels; the limit is {max_pixels / 1e6:g} MP")
    return image
