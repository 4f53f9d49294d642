"""Knowledge distillation (callbacks=distill): the targets are the labels mixed with the teachers'
ten-crop probabilities, and the training loss learns those targets, not the bare labels."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from fer.data.datamodule import Faces
from fer.data.labels import EMOTIONS
from fer.errors import FerError
from fer.preprocess import normalize
from fer.train.callbacks.distill import Distill
from fer.train.module import EmotionClassifier
from fer.tta import eval_logits

from conftest import ROOT, SHRINK, random_rows, run_cli, write_csv

SHIPPED = ROOT / "fer" / "weights" / "fer2013_regularized.ckpt"


def _ten_crop_probs(path, images):
    model = EmotionClassifier.from_checkpoint(path).eval()
    x = normalize(torch.as_tensor(images), float(model.pixel_mean), float(model.pixel_std))
    with torch.no_grad():
        return torch.softmax(eval_logits(model, x, model.input_size, "ten_crop"), 1)


def test_targets_mix_the_label_with_the_teachers_averaged_ten_crop_probabilities(real_faces, random_checkpoint):
    images, labels = real_faces
    train = Faces(torch.as_tensor(images), torch.as_tensor(labels))
    trainer = SimpleNamespace(datamodule=SimpleNamespace(splits={"train": train}), precision="32-true")
    student = SimpleNamespace(class_names=list(EMOTIONS), device=torch.device("cpu"))
    Distill(teachers=[str(SHIPPED), str(random_checkpoint)], weight=0.7).setup(trainer, student, "fit")

    teachers = (_ten_crop_probs(SHIPPED, images) + _ten_crop_probs(random_checkpoint, images)) / 2
    expected = 0.3 * F.one_hot(torch.as_tensor(labels), 7).float() + 0.7 * teachers
    assert torch.allclose(train.targets, expected, atol=1e-5)
    assert torch.allclose(train.targets.sum(1), torch.ones(len(labels)), atol=1e-5)
    # the shipped teacher is confident on these faces: a target is not its label's one-hot, nor uniform
    assert float((train.targets - F.one_hot(torch.as_tensor(labels), 7)).abs().max()) > 0.05


def test_the_training_loss_learns_the_distilled_targets(random_checkpoint):
    model = EmotionClassifier.from_checkpoint(random_checkpoint).eval()  # no dropout: the same logits twice
    model.label_smoothing = 0.1
    torch.manual_seed(0)
    x, y = torch.randn(6, 1, 44, 44), torch.arange(6) % 7
    targets = torch.softmax(torch.randn(6, 7) * 3, 1)
    loss = model.training_step((x, y, targets), 0)
    with torch.no_grad():
        logits = model(x)
    assert torch.isclose(loss, F.cross_entropy(logits, targets, label_smoothing=0.1), atol=1e-6)
    assert not torch.isclose(loss, F.cross_entropy(logits, y, label_smoothing=0.1), atol=1e-3)


@pytest.mark.parametrize(
    "settings, says",
    [
        ({"teachers": None}, "needs the teachers' checkpoints"),
        ({"teachers": ["no/such.ckpt"]}, "is not a file"),
        ({"teachers": [str(SHIPPED)], "weight": 1.5}, "between 0 and 1"),
        ({"teachers": [str(SHIPPED)], "tta": "five_crop"}, "tta=five_crop"),
    ],
)
def test_bad_distillation_settings_get_one_line(settings, says):
    with pytest.raises(FerError, match=says):
        Distill(**settings)


def test_train_py_distils_with_the_default_model(tmp_path, fer2013_path):
    # The README's command on the default model, shrunk; a small csv keeps the teachers' pass short.
    data = write_csv(tmp_path / "faces.csv", random_rows(40))
    shrink = {**SHRINK, "trainer.limit_val_batches": "1", "trainer.limit_test_batches": "1"}
    r = run_cli(
        [
            "train.py",
            *(f"{k}={v}" for k, v in shrink.items()),
            f"data.path={data}",
            "callbacks=distill",
            "callbacks.distill.teachers=[fer/weights/fer2013_regularized.ckpt]",
            f"hydra.run.dir={tmp_path / 'run'}",
        ]
    )
    assert r.returncode == 0, r.stderr[-3000:]
    log = (tmp_path / "run" / "train.log").read_text()
    assert "distillation: 1 teacher(s), ten_crop views, on 40 Training faces" in log
    assert "targets are 0.50 label + 0.50 teachers" in log
    assert next((tmp_path / "run" / "checkpoints").glob("best-*.ckpt")).is_file()
