"""Test-time augmentation views and temperature scaling: the pieces, then inference using them."""

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from fer.errors import FerError
from fer.infer.classify import FaceClassifier
from fer.models import build_net
from fer.preprocess import center_crop
from fer.train.calibration import fit_temperature, reliability
from fer.tta import TTA_MODES, VIEWS_PER_FACE, check_mode, eval_logits, views

from conftest import net_kwargs


def faces(n=3, seed=0):
    return torch.randn(n, 1, 48, 48, generator=torch.Generator().manual_seed(seed))


def test_views_are_the_centre_crop_its_mirror_and_the_corners():
    x = faces()
    (only,) = views(x, 44, "none")
    assert torch.equal(only, center_crop(x, 44))
    centre, mirrored = views(x, 44, "flip")
    assert torch.equal(centre, only) and torch.equal(mirrored, only.flip(-1))
    ten = views(x, 44, "ten_crop")
    assert len(ten) == 10 and all(v.shape == (3, 1, 44, 44) for v in ten)
    assert torch.equal(ten[0], x[..., :44, :44]) and torch.equal(ten[3], x[..., 4:, 4:])
    assert torch.equal(ten[4], only) and torch.equal(ten[9], only.flip(-1))
    assert {mode: len(views(x, 44, mode)) for mode in TTA_MODES} == VIEWS_PER_FACE


def test_eval_logits_average_the_views_in_one_batch():
    net = build_net("regularized", **net_kwargs("regularized", input_size=44)).eval()
    x = faces(4)
    calls = []

    def forward(v):
        calls.append(len(v))
        return net(v)

    with torch.no_grad():
        got = eval_logits(forward, x, 44, "flip")
        expected = (net(center_crop(x, 44)) + net(center_crop(x, 44).flip(-1))) / 2
    assert calls == [8]
    assert torch.allclose(got, expected, atol=1e-5)


def test_an_unknown_tta_mode_is_refused():
    assert check_mode(None) == "none"
    with pytest.raises(FerError, match="ten_crop"):
        check_mode("five_crop")


def test_fitted_temperature_recovers_the_one_that_made_the_labels():
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(20000, 7, generator=g)
    labels = torch.multinomial(torch.softmax(logits / 2.0, 1), 1, generator=g).squeeze(1)  # labels drawn at T = 2
    assert fit_temperature(logits, labels) == pytest.approx(2.0, rel=0.05)


def test_ece_agrees_with_torchmetrics_and_scaling_lowers_it():
    g = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(5000, 7, generator=g)
    labels = torch.multinomial(torch.softmax(logits / 2.0, 1), 1, generator=g).squeeze(1)
    probs = torch.softmax(logits, 1)
    ours = reliability(probs, labels)
    theirs = MulticlassCalibrationError(num_classes=7, n_bins=15, norm="l1")(probs, labels)
    assert ours["ece"] == pytest.approx(float(theirs), abs=1e-5)
    assert sum(ours["count"]) == 5000
    t = fit_temperature(logits, labels)
    after = reliability(torch.softmax(logits / t, 1), labels)
    assert after["ece"] < ours["ece"] / 3


def test_inference_divides_by_the_stored_temperature_of_its_tta_mode(random_checkpoint):
    from fer.runs.checkpoint import save_slim

    ckpt = save_slim(
        random_checkpoint,
        random_checkpoint.with_name("calibrated.ckpt"),
        half=False,
        meta_updates={"temperature": {"none": 1.0, "flip": 3.0}},
    )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 48, 48), dtype=np.uint8)
    plain = FaceClassifier.from_checkpoint(ckpt)
    flip = FaceClassifier.from_checkpoint(ckpt, tta="flip")
    assert flip.temperature == 3.0 and plain.temperature == 1.0
    with torch.no_grad():
        x = plain.network_input(images)
        logits = eval_logits(plain._forward, x, plain.input_size, "flip")
    np.testing.assert_allclose(flip(images), torch.softmax(logits / 3.0, 1).numpy(), atol=1e-5)
    assert (flip(images).argmax(1) == torch.softmax(logits, 1).numpy().argmax(1)).all()  # scaling keeps every prediction
