"""The ONNX backend: a model written by `python export.py`, run by onnxruntime, without torch.

The exported graph takes what the pipeline already has, square grey uint8 faces (B, S, S) at the
model's image size S (FER2013: 48), and returns probabilities (B, classes): normalisation and
centre crop are inside it, traced from the training code's own `to_network_input`, so there is no
second copy of them to drift. Everything else the pipeline needs (class names, image size, face
settings) is read from the model's metadata_props, which `metadata_props` below defines and
`fer/export.py` writes.

Nothing here may import torch (a test runs this path and checks `sys.modules`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from fer.errors import FerError, first_line
from fer.runs.meta import ModelMeta

FORMAT = 1
MARKER = "fer_format"  # the key that says "exported by fer", its value the format version
REQUIRED = ("class_names", "mean", "std", "input_size", "net")
# Older exports lack image_size (48) and keep the face settings under "preprocess" (fer.runs.meta reads both).
FACE_KEYS = ("face", "preprocess")
OPTIONAL = ("image_size", *FACE_KEYS)
INPUT, OUTPUT = "faces", "probs"
log = logging.getLogger("fer.infer")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def metadata_props(meta: ModelMeta, checkpoint: Path, fer_version: str) -> dict[str, str]:
    """A checkpoint's meta -> ONNX metadata_props (string values; JSON where not plain text)."""
    stored = meta.to_dict()
    props = {MARKER: str(FORMAT), "fer_version": fer_version}
    props.update({key: json.dumps(stored[key]) for key in (*REQUIRED, "image_size", "face")})
    # Which checkpoint this came from: infer.py backend=onnx ckpt_path=X.ckpt refuses a stale X.onnx.
    props.update(checkpoint=checkpoint.name, checkpoint_sha256=file_sha256(checkpoint))
    return props


def read_metadata(props: Mapping[str, str], path: Path) -> tuple[ModelMeta, dict]:
    """metadata_props -> (the model's ModelMeta, where it came from: checkpoint, checkpoint_sha256); FerError
    for a model that is not ours."""
    hint = "export one with `python export.py ckpt_path=PATH.ckpt`"
    if MARKER not in props:
        raise FerError(f"{path} is an ONNX model, but not one exported by fer (no {MARKER!r} metadata); {hint}")
    if not props[MARKER].isdigit() or int(props[MARKER]) > FORMAT:
        raise FerError(f"{path} was exported by a newer fer (format {props[MARKER]!r}); upgrade fer")
    missing = [key for key in REQUIRED if key not in props] + ([] if any(k in props for k in FACE_KEYS) else ["face"])
    if missing:
        raise FerError(f"{path} lacks the fer metadata {', '.join(missing)}; re-export it: {hint}")
    try:
        meta = {key: json.loads(props[key]) for key in (*REQUIRED, *OPTIONAL) if key in props}
    except json.JSONDecodeError as e:
        raise FerError(f"{path} has damaged fer metadata ({e}); re-export it: {hint}") from None
    source = {"checkpoint": props.get("checkpoint"), "checkpoint_sha256": props.get("checkpoint_sha256")}
    return ModelMeta.from_dict(meta, path), source


def export_beside(checkpoint: Path) -> Path:
    """For backend=onnx ckpt_path=X.ckpt: the X.onnx that export.py wrote beside it.

    A .ckpt is never exported on the fly: that needs torch, which this path must not import."""
    if not checkpoint.is_file():
        raise FerError(f"checkpoint not found: {checkpoint}")
    beside = checkpoint.with_suffix(".onnx")
    if not beside.is_file():
        raise FerError(
            f"backend=onnx runs an exported model and {checkpoint.name} is a PyTorch checkpoint: export it first "
            f"with `python export.py ckpt_path={checkpoint}` (it writes {beside.name} beside it)"
        )
    return beside


def check_exported_from(checkpoint: Path, model: Path, source: Mapping):
    # The .onnx beside a checkpoint is used only if it was exported from that very file: a model
    # retrained or replaced since its export must not run under the new checkpoint's name.
    if source.get("checkpoint_sha256") != file_sha256(checkpoint):
        raise FerError(
            f"{model} was exported from another model than {checkpoint.name} "
            f"(from {source.get('checkpoint') or 'an unknown checkpoint'}); "
            f"re-export it with `python export.py ckpt_path={checkpoint} overwrite=true`"
        )


def open_session(model: str | Path | bytes, threads: int | None = None):
    """An onnxruntime CPU session; `model` is a path or the serialised model. FerError if it is not ONNX."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its graph-optimisation notices mean nothing to a user of infer.py
    if threads:
        # As for torch: a few faces a frame are too little work to share out, and the cores are
        # wanted for decoding and detection.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        source = model if isinstance(model, bytes) else str(model)
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail / InvalidProtobuf / InvalidGraph types
        first = first_line(str(e)) or type(e).__name__
        raise FerError(
            f"{model if not isinstance(model, bytes) else 'the model'} is not an ONNX model onnxruntime can run "
            f"({first}); backend=onnx needs a .onnx written by `python export.py`"
        ) from None


class OnnxFaceClassifier:
    def __init__(
        self,
        session,
        class_names: Sequence[str],
        mean: float,
        std: float,
        input_size: int,
        image_size: int,
        face: Mapping | None = None,
    ):
        self.session = session
        self.class_names = list(class_names)
        self.mean, self.std, self.input_size = mean, std, input_size  # inside the graph; kept for reference
        self.image_size = int(image_size)  # the side of the square grey faces the graph takes
        self.face = dict(face or {})  # the face preparation the model was trained with (align, margin, gamma)
        self.input_name = session.get_inputs()[0].name
        self._said_normalised = False

    @classmethod
    def from_file(cls, path: str | Path, threads: int | None = None) -> OnnxFaceClassifier:
        """ckpt_path as given to infer.py (an .onnx, or a .ckpt with its export beside it) -> classifier."""
        asked = Path(path).expanduser()
        model = export_beside(asked) if asked.suffix.lower() == ".ckpt" else asked
        if not model.is_file():
            raise FerError(f"model not found: {model}")
        session = open_session(model, threads)
        meta, source = read_metadata(session.get_modelmeta().custom_metadata_map, model)
        if model != asked:
            check_exported_from(asked, model, source)
        check_graph(session, len(meta.class_names), meta.image_size, model)
        classifier = cls(session, meta.class_names, meta.mean, meta.std, meta.input_size, meta.image_size, meta.face)
        check_probabilities(classifier, model)  # also pays the first call's one-off set-up costs
        return classifier

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        """(B, S, S) uint8 faces (S: image_size) -> (B, classes) probabilities, all faces in one batch."""
        if len(faces) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        return self._as_probabilities(self.raw(faces))

    def raw(self, faces: np.ndarray) -> np.ndarray:
        """What the graph returns for the faces, unchecked."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(faces, dtype=np.uint8)})[0]

    def _as_probabilities(self, probs: np.ndarray, tolerance: float = 1e-3) -> np.ndarray:
        # The probe at start sees five faces; a graph that behaves on those may still return other
        # values for real ones (40 and 60 instead of 0.4 and 0.6). Every row that leaves here is a
        # probability vector: scaled rows are normalised (said once), rows with no reading refused.
        sums = probs.sum(axis=1)
        bad = ~np.isfinite(probs).all(axis=1) | (probs.min(axis=1) < -tolerance) | (np.abs(sums - 1) > tolerance)
        if not bad.any():
            return probs
        fixable = np.isfinite(probs).all(axis=1) & (probs.min(axis=1) >= 0) & (sums > 0)
        if (bad & ~fixable).any():
            raise FerError(
                "the model returned values that are not probabilities for a face (negative, infinite or NaN); "
                "re-export it with `python export.py ckpt_path=PATH.ckpt`"
            )
        if not self._said_normalised:
            self._said_normalised = True
            log.warning("the model returned scores that do not sum to 1 for some faces; they are normalised to probabilities")
        probs = probs.astype(np.float32, copy=True)
        probs[bad] /= sums[bad, None]
        return probs


def check_graph(session, n_classes: int, size: int, path: Path):
    """The graph must be what the metadata describes: (B, size, size) uint8 faces in, (B, classes) out."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    ok = (
        len(inputs) == 1
        and inputs[0].type == "tensor(uint8)"
        and list(inputs[0].shape[1:]) == [size, size]
        and len(outputs) == 1
        and list(outputs[0].shape[1:]) == [n_classes]
    )
    if not ok:
        got = ", ".join(f"{a.name} {a.type} {a.shape}" for a in [*inputs, *outputs])
        raise FerError(
            f"{path}: the graph does not fit its fer metadata (expected uint8 faces (batch, {size}, "
            f"{size}) in and (batch, {n_classes}) probabilities out; it has {got}); "
            "it was exported from another model: re-export it with `python export.py`"
        )


def probe_faces(size: int) -> np.ndarray:
    """A few fixed size x size faces (black, white, mid-grey, a gradient, noise) to see what a graph returns."""
    ramp = np.linspace(0, 255, size * size).reshape(size, size)
    noise = np.random.default_rng(0).integers(0, 256, (size, size))
    return np.stack([np.zeros_like(ramp), np.full_like(ramp, 255), np.full_like(ramp, 128), ramp, noise]).astype(np.uint8)


def check_probabilities(classifier: OnnxFaceClassifier, path: Path, tolerance: float = 1e-3):
    # The right shapes are not enough: a graph built elsewhere, with an export's metadata copied onto
    # it, may return logits or anything else, which would be shown as "Surprise 7600%". An export of
    # ours ends in a softmax: every output is in [0, 1] and every row sums to 1.
    probs = np.asarray(classifier.raw(probe_faces(classifier.image_size)), dtype=np.float64)
    sums = probs.sum(axis=1)
    ok = (
        np.isfinite(probs).all()
        and probs.min() >= -tolerance
        and probs.max() <= 1 + tolerance
        and np.abs(sums - 1).max() <= tolerance
    )
    if not ok:
        raise FerError(
            f"{path}: the graph does not return probabilities (on test faces its outputs range "
            f"{np.nanmin(probs):.3g}..{np.nanmax(probs):.3g}, "
            f"rows summing to {np.nanmin(sums):.3g}..{np.nanmax(sums):.3g}, "
            "where an export gives values in 0..1 summing to 1); it was not written by `python export.py`: "
            "re-export the model with `python export.py ckpt_path=PATH.ckpt`"
        )
