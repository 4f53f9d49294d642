"""infer.py's default backend (auto): the shipped .ckpt runs on onnxruntime through an in-memory export that
gives PyTorch's probabilities on real faces; TTA and a missing exporter fall back to PyTorch."""

import sys

import numpy as np
import pytest
import torch

from fer.infer.app import open_classifier, resolve_checkpoint
from fer.infer.classify import FaceClassifier
from fer.infer.onnx_backend import OnnxFaceClassifier

SHIPPED = resolve_checkpoint("fer/weights/fer2013_regularized.ckpt")


@pytest.fixture(autouse=True)
def _threads_back():
    threads = torch.get_num_threads()  # from_checkpoint sets the thread count it is given
    yield
    torch.set_num_threads(threads)


def test_auto_runs_the_shipped_checkpoint_on_onnxruntime_with_torchs_probabilities(real_faces):
    faces, _ = real_faces
    fast = open_classifier("auto", SHIPPED, threads=1)
    assert isinstance(fast, OnnxFaceClassifier)
    exact = open_classifier("torch", SHIPPED, threads=1)
    assert isinstance(exact, FaceClassifier)
    got, expected = fast(faces), exact(faces)
    # The trained model spreads its probabilities (an untrained one sits near 1/7 and hides a wrong
    # normalisation): check that, then the parity.
    assert expected.max(axis=1).mean() > 0.5
    assert np.abs(got - expected).max() < 1e-4
    assert (got.argmax(1) == expected.argmax(1)).all()
    assert fast.class_names == exact.class_names and fast.face == exact.face and fast.image_size == exact.image_size


def test_auto_keeps_pytorch_for_test_time_augmentation():
    assert isinstance(open_classifier("auto", SHIPPED, threads=1, tta="flip"), FaceClassifier)


def test_auto_without_the_exporter_falls_back_to_pytorch(monkeypatch):
    monkeypatch.setitem(sys.modules, "fer.export", None)  # as where the onnx package is missing
    assert isinstance(open_classifier("auto", SHIPPED, threads=1), FaceClassifier)


def test_auto_runs_an_onnx_file_on_onnxruntime(tmp_path):
    from fer.export import export_onnx

    path, _ = export_onnx(SHIPPED, output=str(tmp_path / "shipped.onnx"))
    assert isinstance(open_classifier("auto", path, threads=1), OnnxFaceClassifier)


def test_the_shipped_models_export_py_file_gives_torchs_probabilities_on_real_faces(tmp_path, real_faces):
    # The file `python export.py` writes, read back as infer.py backend=onnx reads it. On the trained model
    # a wrong mean or std in the graph moves probabilities by tenths, far beyond the tolerance.
    from conftest import run_cli

    out = tmp_path / "shipped.onnx"
    r = run_cli(["export.py", f"ckpt_path={SHIPPED}", f"output={out}"])
    assert r.returncode == 0, r.stderr[-2000:]
    faces, _ = real_faces
    got = OnnxFaceClassifier.from_file(out, threads=1)(faces)
    expected = open_classifier("torch", SHIPPED, threads=1)(faces)
    assert expected.max(axis=1).mean() > 0.5
    assert np.abs(got - expected).max() < 1e-4
