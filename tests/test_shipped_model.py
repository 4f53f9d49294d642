"""The shipped model is what the README says it is, and infer.py uses it with no ckpt_path."""

import re

import numpy as np
import pytest
import torch

from fer.preprocess import normalize
from fer.runs.checkpoint import load_network
from fer.tta import TTA_MODES, every_mode_logits

from conftest import ROOT, run_cli

SHIPPED = ROOT / "fer" / "weights" / "fer2013_regularized.ckpt"


def readme_test_accuracy() -> float:
    m = re.search(r"Shipped model: PrivateTest accuracy \*\*([0-9.]+)%\*\*", (ROOT / "README.md").read_text())
    assert m, "README must state the shipped model's PrivateTest accuracy"
    return float(m.group(1))


def weights_readme_figures() -> tuple[str, str, str]:
    # fer/weights/README.md is the record of the file: its PublicTest accuracy, and its PrivateTest accuracy
    # without and with ten-crop.
    text = " ".join((ROOT / "fer" / "weights" / "README.md").read_text().split())
    m = re.search(
        r"This file: PublicTest ([0-9.]+)%, PrivateTest ([0-9.]+)% \(centre crop\), ([0-9.]+)% with `tta=ten_crop`", text
    )
    assert m, "fer/weights/README.md must state the file's PublicTest, and PrivateTest accuracy without and with ten-crop"
    return m.group(1), m.group(2), m.group(3)


def test_the_readme_quotes_the_shipped_files_figures_everywhere():
    # Every README line that calls a 68-69% figure the shipped model's gives the file's own
    # (the full-precision checkpoint it was made from differs by a face or so, and is labelled so).
    public, centre, ten_crop = weights_readme_figures()
    assert readme_test_accuracy() == float(centre)
    for line in (ROOT / "README.md").read_text().splitlines():
        if "shipped" in line.lower() and "full precision" not in line:
            for figure in re.findall(r"\b(6[89]\.\d\d)%", line):
                assert figure in (public, centre, ten_crop), line


def test_shipped_model_is_small_and_self_contained():
    assert SHIPPED.stat().st_size < 5_000_000
    net, meta = load_network(SHIPPED)
    assert meta.net["arch"] == "regularized" and meta.class_names[3] == "Happy"
    assert set(meta.temperature) == {"none", "flip", "ten_crop"}  # calibrated on PublicTest for every TTA mode


def test_the_shipped_file_is_read_as_it_was_written():
    # Its stored face settings and image size are what inference uses.
    from fer.infer.classify import FaceClassifier
    from fer.train.module import EmotionClassifier

    stored = torch.load(SHIPPED, weights_only=True)["fer"]
    _, meta = load_network(SHIPPED)
    classifier = FaceClassifier.from_checkpoint(SHIPPED)
    assert classifier.image_size == meta.image_size == stored["image_size"] == 48
    assert classifier.face == meta.face == stored["face"] == {"align": True, "margin": 0.0, "gamma": "auto"}
    assert EmotionClassifier.from_checkpoint(SHIPPED).image_size == 48


def test_evaluating_the_shipped_model_normalises_as_its_training_did():
    # train.py train=false builds the LightningModule from the checkpoint; the slim shipped file
    # stores the statistics only in its `fer` entry, not as buffers.
    from fer.train.module import EmotionClassifier

    model = EmotionClassifier.from_checkpoint(SHIPPED)
    _, meta = load_network(SHIPPED)
    assert float(model.pixel_mean) == pytest.approx(meta.mean) and float(model.pixel_std) == pytest.approx(meta.std)
    assert abs(meta.mean - 0.5) > 0.01  # the real statistics, not the defaults


# The shipped file, and what infer.py with no ckpt_path says about the first PrivateTest face of each class
# (PrivateTest rows 4, 67, 5, 1, 6, 0, 2 as PNG crops, detect=false): label, then the seven probabilities.
SHIPPED_SHA256 = "22bce6d5e5e3bed75c3591ccc06a0566fa901f2f5f9263921c1d227d834e00f9"
SHIPPED_SAYS = [
    ("Angry", [0.85369, 0.0246, 0.04125, 0.01697, 0.02721, 0.01694, 0.01933]),
    ("Fear", [0.06219, 0.02307, 0.35269, 0.0289, 0.15503, 0.11051, 0.2676]),
    ("Fear", [0.04916, 0.02464, 0.71823, 0.02737, 0.03907, 0.12348, 0.01804]),
    ("Happy", [0.01681, 0.01651, 0.01898, 0.88323, 0.01618, 0.01915, 0.02916]),
    ("Angry", [0.31099, 0.03384, 0.09842, 0.02014, 0.30888, 0.07756, 0.15018]),
    ("Surprise", [0.01511, 0.01625, 0.03575, 0.01478, 0.01264, 0.88982, 0.01565]),
    ("Neutral", [0.03687, 0.01732, 0.0475, 0.0274, 0.05687, 0.02649, 0.78756]),
]


def test_the_shipped_file_is_the_one_recorded():
    import hashlib

    assert hashlib.sha256(SHIPPED.read_bytes()).hexdigest() == SHIPPED_SHA256


def test_infer_by_default_gives_the_shipped_models_recorded_predictions(tmp_path, real_faces):
    import csv

    import cv2

    crops = tmp_path / "crops"
    crops.mkdir()
    for i, face in enumerate(real_faces[0]):
        cv2.imwrite(str(crops / f"{i}.png"), face)
    r = run_cli(
        [str(ROOT / "infer.py"), f"source={crops}", "detect=false", "display=false", f"predictions={tmp_path / 'p.csv'}"],
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert [row["file"] for row in rows] == [f"{i}.png" for i in range(7)]
    for row, (label, probs) in zip(rows, SHIPPED_SAYS, strict=True):
        assert row["label"] == label, row
        got = [float(row[c]) for c in ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")]
        assert np.allclose(got, probs, rtol=0, atol=1e-4), (row["file"], got)


# --- the stated accuracies, measured ------------------------------------------------------------------
# Every place that states the shipped file's accuracy, as (file, pattern, what each group is): the text
# is read with its line breaks and runs of spaces made single spaces, so a re-wrapped paragraph still matches.
PUBLIC, PRIVATE = "PublicTest", "PrivateTest"
SHIPPED_PARAGRAPH = r"3\.0 MB; PublicTest ([0-9.]+)%, ([0-9.]+)% with ten-crop TTA"  # in README.md and docs/results.md
STATED = [
    ("README.md", r"Shipped model: PrivateTest accuracy \*\*([0-9.]+)%\*\*", [(PRIVATE, "none")]),
    (
        "README.md",
        r"\| \*\*shipped\*\*[^|]*\| [0-9.]+% \| ([0-9.]+)% \| \*\*([0-9.]+)%\*\* \(([0-9.]+)% ten-crop\) \|",
        [(PUBLIC, "none"), (PRIVATE, "none"), (PRIVATE, "ten_crop")],
    ),
    ("README.md", SHIPPED_PARAGRAPH, [(PUBLIC, "none"), (PRIVATE, "ten_crop")]),
    (
        "fer/weights/README.md",
        r"This file: PublicTest ([0-9.]+)%, PrivateTest ([0-9.]+)% \(centre crop\), ([0-9.]+)% with `tta=ten_crop` "
        r"\(([0-9.]+)% with `tta=flip`\)",
        [(PUBLIC, "none"), (PRIVATE, "none"), (PRIVATE, "ten_crop"), (PRIVATE, "flip")],
    ),
    (
        "docs/results.md",
        r"\| \*\*regularized \+ cycle 1 \+ three distillation cycles \(shipped\)\*\* \|[^|]*\|[^|]*\| \*\*([0-9.]+)%\*\* \| "
        r"\*\*([0-9.]+)%\*\* \| \*\*([0-9.]+)%\*\* \|",
        [(PUBLIC, "none"), (PRIVATE, "none"), (PRIVATE, "ten_crop")],
    ),
    ("docs/results.md", SHIPPED_PARAGRAPH, [(PUBLIC, "none"), (PRIVATE, "ten_crop")]),
    (
        "docs/results.md",
        r"\| 4 \(cycle 3[^|]*\|[^|]*\|[^|]*\|[^|]*\| ([0-9.]+)% \| ([0-9.]+)% \| ([0-9.]+)% \|",
        [(PUBLIC, "none"), (PRIVATE, "none"), (PRIVATE, "ten_crop")],
    ),
    (
        "docs/results.md",
        r"The shipped model, three distillation cycles further, gives none ([0-9.]+)% \(T [0-9.]+\) and ten_crop ([0-9.]+)% "
        r"\(T [0-9.]+\); flip ([0-9.]+)%",
        [(PRIVATE, "none"), (PRIVATE, "ten_crop"), (PRIVATE, "flip")],
    ),
]


def stated_figures(split: str, mode: str) -> list[tuple[str, str]]:
    """(file, figure as written) for every statement of the shipped model's accuracy on `split` with TTA `mode`."""
    found = []
    for file, pattern, keys in STATED:
        m = re.search(pattern, " ".join((ROOT / file).read_text().split()))
        assert m, f"{file} no longer says what {pattern!r} looks for: update STATED with the new wording"
        found += [(file, figure) for figure, key in zip(m.groups(), keys, strict=True) if key == (split, mode)]
    return found


@pytest.fixture(scope="module")
def shipped_accuracy(fer2013):
    """split -> {TTA mode: accuracy in % with two decimals} of the shipped file, each split measured once.
    PublicTest with the centre crop (what validation chose by); PrivateTest in every mode, from one set
    of ten views a face (fer.tta.every_mode_logits, the calibration's path: ten_crop includes the others)."""
    net, meta = load_network(SHIPPED)
    # As infer.py runs it: about 1.5x faster on a CPU, and every figure comes out the same in either layout.
    net = net.to(memory_format=torch.channels_last)

    def forward(x):
        return net(x.contiguous(memory_format=torch.channels_last))

    measured = {}

    def measure(split: str) -> dict[str, str]:
        if split not in measured:
            images, labels = fer2013.split({PUBLIC: "val", PRIVATE: "test"}[split])
            modes = ("none",) if split == PUBLIC else TTA_MODES
            correct = dict.fromkeys(modes, 0)
            with torch.inference_mode():
                for i in range(0, len(labels), 512):
                    x = normalize(torch.from_numpy(images[i : i + 512]), meta.mean, meta.std)  # (B, 1, 48, 48)
                    for mode, logits in every_mode_logits(forward, x, meta.input_size, modes).items():
                        correct[mode] += int((logits.argmax(1).numpy() == labels[i : i + 512]).sum())
            measured[split] = {mode: f"{100 * n / len(labels):.2f}" for mode, n in correct.items()}
        return measured[split]

    return measure


MEASURED = [(PUBLIC, "none"), (PRIVATE, "none"), (PRIVATE, "ten_crop"), (PRIVATE, "flip")]


@pytest.mark.slow
@pytest.mark.xdist_group("shipped_accuracy")  # one measurement for all four, on one worker
@pytest.mark.parametrize("split, mode", MEASURED, ids=[f"{split}-{mode}" for split, mode in MEASURED])
def test_the_shipped_models_stated_accuracy_is_measured_to_the_hundredth(shipped_accuracy, split, mode):
    # Deterministic: the docs' two-decimal figures, not a band around them (0.03 points is one face of 3,589).
    stated = stated_figures(split, mode)
    assert stated, f"no document states the {split} accuracy with tta={mode}"
    got = shipped_accuracy(split)[mode]
    assert [(file, figure) for file, figure in stated if figure != got] == [], f"measured {got}%"
