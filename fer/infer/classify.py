"""The trained network, restored from a checkpoint alone, classifying every face of a frame in one batch.

This is the PyTorch backend; `onnx_backend.OnnxFaceClassifier` runs an exported model with the same
interface. torch is imported inside the methods rather than at the top because the pipeline and
app modules name this class, and the ONNX path must import them on a machine without torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from fer.errors import FerError
from fer.preprocess import normalize
from fer.tta import check_mode, eval_logits

if TYPE_CHECKING:
    import torch
    from torch import nn


class FaceClassifier:
    def __init__(
        self,
        net: nn.Module,
        class_names: Sequence[str],
        mean: float,
        std: float,
        input_size: int,
        image_size: int,
        face: Mapping | None = None,
        tta: str = "none",
        temperature: float = 1.0,
    ):
        import torch

        # channels_last lets oneDNN pick its faster convolutions: 1.8 instead of 2.6 ms a face on one core.
        self.net = net.eval().to(memory_format=torch.channels_last)
        self.class_names = list(class_names)
        self.mean, self.std, self.input_size = mean, std, input_size
        self.image_size = int(image_size)  # the side of the square grey faces it takes (FER2013: 48)
        self.face = dict(face or {})  # the face preparation the model was trained with (align, margin, gamma)
        self.tta = check_mode(tta)  # views averaged per face (fer.tta): flip costs 2x, ten_crop 10x the network time
        self.temperature = float(temperature)  # fitted on PublicTest for this TTA mode: probabilities mean what they say

    @classmethod
    def from_checkpoint(cls, path: str, threads: int | None = None, tta: str = "none") -> FaceClassifier:
        import torch

        from fer.runs.checkpoint import load_network

        if threads:
            # One face is a small convolution stack: extra threads cost more in hand-over than they save,
            # and the cores are wanted for decoding and detection.
            torch.set_num_threads(threads)
        try:
            net, meta = load_network(path)
        except (KeyError, IndexError, TypeError, UnicodeDecodeError) as e:
            # What torch's safe unpickler raises on some files that are not checkpoints (text, empty).
            raise FerError(
                f"{path} is not a checkpoint this project wrote (or not a trusted one): its contents are not what one holds "
                f"({type(e).__name__}); pass the .ckpt written by `python train.py`"
            ) from None
        tta = check_mode(tta)
        classifier = cls(
            net, meta.class_names, meta.mean, meta.std, meta.input_size, meta.image_size, meta.face, tta, meta.temperature_of(tta)
        )
        classifier(
            np.zeros((1, classifier.image_size, classifier.image_size), np.uint8)
        )  # the first call pays one-off set-up costs
        return classifier

    def network_input(self, faces: np.ndarray) -> torch.Tensor:
        """(B, S, S) uint8 faces -> (B, 1, S, S): the training side's exact normalisation; the views
        (centre crop or TTA) are then taken by fer.tta.eval_logits, as in training's evaluation."""
        import torch

        return normalize(torch.from_numpy(np.ascontiguousarray(faces)), self.mean, self.std)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        return self.net(x.contiguous(memory_format=torch.channels_last))

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        """(B, S, S) uint8 faces (S: image_size) -> (B, classes) probabilities, all faces in one batch."""
        import torch

        if len(faces) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        with torch.inference_mode():
            logits = eval_logits(self._forward, self.network_input(faces), self.input_size, self.tta)
            return torch.softmax(logits / self.temperature, dim=1).numpy()
