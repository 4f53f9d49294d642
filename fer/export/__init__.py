"""A checkpoint -> an ONNX model that runs anywhere onnxruntime does, without torch.

The graph takes square grey uint8 faces (batch, S, S) at the checkpoint's image size S (FER2013: 48)
and returns probabilities (batch, classes):
the normalisation and centre crop are traced from `fer.preprocess.to_network_input`, the function
training uses, so a deployment cannot normalise differently. Class names, image size, statistics,
input size, face settings and the architecture spec travel as metadata_props (`fer.infer.onnx_backend`).

Exporter: torch's TorchScript-based one (`dynamo=False`). It needs only the `onnx` package, takes
0.2 s and handles these plain conv stacks completely (the check against PyTorch below proves it on
every export). The newer torch.export-based exporter, torch's default since 2.9, needs `onnxscript`
as well and takes about 3 s; nothing in a network this simple needs what it adds.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

import fer
from fer.errors import FerError, first_line
from fer.infer.onnx_backend import INPUT, OUTPUT, metadata_props, open_session
from fer.preprocess import to_network_input
from fer.runs.atomic import replace_atomically
from fer.runs.checkpoint import load_network

OPSET = 17  # onnxruntime >= 1.13 and every torch >= 2.2 support it
OPSETS = range(13, 21)  # 13: Softmax over one axis; 20: the newest the TorchScript exporter writes
MAX_DIFFERENCE = 1e-4  # largest probability difference to PyTorch an export may have


class FaceProbabilities(nn.Module):
    """What the exported graph computes: uint8 faces (B, S, S) -> probabilities (B, classes)."""

    def __init__(self, net: nn.Module, mean: float, std: float, input_size: int, temperature: float = 1.0):
        super().__init__()
        self.net, self.mean, self.std, self.input_size = net, mean, std, input_size
        self.temperature = float(temperature)  # the centre crop's calibration (fer.train.calibration), baked into the graph
        self.eval()  # the exporter restores this mode afterwards: it must be eval, or dropout comes back on

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        x = to_network_input(faces, self.mean, self.std, self.input_size)  # (B, 1, input_size, input_size)
        return torch.softmax(self.net(x) / self.temperature, dim=1)


def output_path(ckpt_path: Path, output: str | None) -> Path:
    path = Path(str(output)).expanduser() if output else ckpt_path.with_suffix(".onnx")
    if path.suffix.lower() != ".onnx":
        raise FerError(f"output={path} should end in .onnx")
    return path


def trace(model: FaceProbabilities, size: int, opset: int) -> onnx.ModelProto:

    faces = torch.zeros((2, size, size), dtype=torch.uint8)
    buffer = io.BytesIO()
    # The exporter's warnings are kept from the user: a deprecation notice on every call (the choice is
    # deliberate, see above) and a TracerWarning that the face's size becomes a constant (it is; only
    # the batch axis is dynamic). What matters is checked instead: largest_difference() runs the
    # result against PyTorch at another batch size.
    with warnings.catch_warnings(record=True):
        try:
            torch.onnx.export(
                model,
                (faces,),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            )
        except Exception as e:  # an opset this torch does not know, or one without an operator the model uses
            first = first_line(str(e)) or type(e).__name__
            raise FerError(f"torch could not export the model at opset={opset} ({first}); opset={OPSET} works") from None
    return onnx.load_from_string(buffer.getvalue())


def largest_difference(model: FaceProbabilities, size: int, proto: onnx.ModelProto) -> float:
    # A batch size other than the traced one, so the batch axis is proven dynamic too.
    faces = np.random.default_rng(0).integers(0, 256, (5, size, size), dtype=np.uint8)
    with torch.inference_mode():
        expected = model(torch.from_numpy(faces)).numpy()
    got = open_session(proto.SerializeToString()).run(None, {INPUT: faces})[0]
    return float(np.abs(got - expected).max())


def write_atomically(proto: onnx.ModelProto, path: Path, overwrite: bool):
    # An interrupted export never leaves half a model (fer.runs.atomic).
    data = proto.SerializeToString()

    def write(f):
        f.write(data)
        if path.exists() and not overwrite:  # checked again: it may have appeared meanwhile
            raise FerError(f"{path} already exists; choose another output= or pass overwrite=true to replace it")

    try:
        replace_atomically(path, write)
    except OSError as e:  # a read-only or full disk, a folder that cannot be made
        raise FerError(f"cannot write {path}: {_reason(e)}") from None


def _reason(e: OSError) -> str:
    if isinstance(e, PermissionError):
        return f"permission denied ({e.filename})" if e.filename else "permission denied"
    return e.strerror or str(e)


def export_onnx(
    ckpt_path: str | Path, output: str | None = None, overwrite: bool = False, opset: int = OPSET
) -> tuple[Path, dict]:
    """checkpoint -> (the .onnx written, facts about it: meta, largest difference to PyTorch)."""

    if not ckpt_path:
        raise FerError("no checkpoint given: pass ckpt_path=PATH to a .ckpt from `python train.py`")
    ckpt_path = Path(str(ckpt_path)).expanduser()
    if ckpt_path.suffix.lower() == ".onnx":
        raise FerError(f"{ckpt_path} is already an ONNX model; export.py reads a .ckpt from `python train.py`")
    path = output_path(ckpt_path, output)
    if opset not in OPSETS:  # checked first: torch answers a bad one with a dump of the whole graph
        raise FerError(
            f"opset={opset} is not one this exporter writes for these models; use {OPSETS[0]}..{OPSETS[-1]} (default {OPSET})"
        )
    if path.exists() and not overwrite:
        raise FerError(f"{path} already exists; choose another output= or pass overwrite=true to replace it")
    try:
        net, meta = load_network(ckpt_path)
    except (KeyError, IndexError, TypeError, UnicodeDecodeError) as e:  # what torch's safe unpickler raises on junk
        raise FerError(
            f"{ckpt_path} is not a checkpoint this project wrote (or not a trusted one): its contents are not what one holds "
            f"({type(e).__name__}); pass the .ckpt written by `python train.py`"
        ) from None
    model = FaceProbabilities(net, meta.mean, meta.std, meta.input_size, meta.temperature_of("none"))
    proto, difference = checked_graph(model, meta.image_size, len(meta.class_names), meta.arch, opset)
    onnx.helper.set_model_props(proto, metadata_props(meta, ckpt_path, fer.__version__))
    write_atomically(proto, path, overwrite)
    return path, {**meta.to_dict(), "difference": difference}


def checked_graph(
    model: FaceProbabilities, size: int, classes: int, arch: str | None, opset: int = OPSET
) -> tuple[onnx.ModelProto, float]:
    """The model's ONNX graph and its largest probability difference to PyTorch (refused above MAX_DIFFERENCE).

    export.py writes the graph to a file; infer.py's default backend runs it from memory (fer.infer.app)."""

    proto = trace(model, size, opset)
    proto.producer_name, proto.producer_version = "fer", fer.__version__
    proto.doc_string = (
        f"fer emotion classifier ({arch}): {INPUT} uint8 (batch, {size}, {size}) "
        f"grey faces -> {OUTPUT} float (batch, {classes}) in class_names order"
    )
    onnx.checker.check_model(proto)
    difference = largest_difference(model, size, proto)
    if difference > MAX_DIFFERENCE:
        raise FerError(
            f"the exported model differs from PyTorch by {difference:.2g} (more than {MAX_DIFFERENCE}); "
            f"try another opset (opset={opset} now)"
        )
    return proto, difference
