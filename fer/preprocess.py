"""The one face preprocessing path, shared by training and inference.

Training sees square grey uint8 faces of the data set's image size (FER2013: 48x48); inference turns
any face crop into exactly that (grey, gamma, resize to the size the checkpoint stores) and from
there both sides call the same `normalize` and `center_crop`, so a face gives the identical network
input whichever side it came from.

An exported ONNX model carries `to_network_input` inside its graph (traced from this code, see
fer/export.py). torch is named here only in annotations (the tensor functions use tensor methods),
so the numpy/OpenCV face functions import without it: the ONNX backend runs with no torch installed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch


def normalize(faces: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    # (B, S, S) or (B, 1, S, S) uint8 -> (B, 1, S, S) float, zero mean / unit variance
    # with the training split's statistics (pixel units 0..1).
    if faces.dim() == 3:
        faces = faces.unsqueeze(1)
    return (faces.float() / 255.0 - mean) / std


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if size == h and size == w:
        return x
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def to_network_input(faces: torch.Tensor, mean: float, std: float, input_size: int) -> torch.Tensor:
    """uint8 faces (B, S, S) -> the evaluation-time network input (B, 1, input_size, input_size)."""
    return center_crop(normalize(faces, mean, std), input_size)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Any bit depth (8 or 16 bit, float in 0..1 or 0..255) -> uint8, channels untouched."""
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        hi = 1.0 if image.dtype.kind == "f" and float(image.max(initial=0)) <= 1.0 else 255.0
        return np.clip(image.astype(np.float32) * (255.0 / hi), 0, 255).astype(np.uint8)
    return image


def to_grey(image: np.ndarray) -> np.ndarray:
    """Any OpenCV image (grey, BGR, BGRA; 8 or 16 bit; float) -> 2-D uint8 grey."""
    image = to_uint8(image)
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[:, :, 0]
    code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    return cv2.cvtColor(image, code)


def auto_gamma(grey: np.ndarray, target: float = 0.5, lo: float = 0.5, hi: float = 2.0) -> float:
    # The gamma that maps the face's mean brightness to `target` (FER2013 faces average about 0.5),
    # clipped so a nearly black or white crop is not blown up.
    mean = float(grey.mean()) / 255.0
    if mean <= 0.0 or mean >= 1.0:
        return 1.0
    return float(np.clip(math.log(target) / math.log(mean), lo, hi))


_gamma_tables: dict[float, np.ndarray] = {}


def gamma_correct(grey: np.ndarray, gamma: float | str | None) -> np.ndarray:
    """out = 255 * (in / 255) ** gamma; `gamma` is a number, "auto" (from brightness) or None/1 (off)."""
    if gamma is None or gamma == 1 or gamma == 1.0:
        return grey
    if gamma == "auto":
        gamma = auto_gamma(grey)
    gamma = round(float(gamma), 2)  # a small cache of lookup tables instead of a pow per pixel
    table = _gamma_tables.get(gamma)
    if table is None:
        table = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma + 0.5, 0, 255).astype(np.uint8)
        _gamma_tables[gamma] = table
    return cv2.LUT(grey, table)


def square_grey_face(face: np.ndarray, size: int, gamma: float | str | None = None) -> np.ndarray:
    """A face crop in any OpenCV format -> size x size uint8 grey, the format the model was trained on
    (FER2013: 48x48)."""
    grey = gamma_correct(to_grey(face), gamma)
    if grey.shape != (size, size):
        shrinking = grey.shape[0] > size
        grey = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return grey
