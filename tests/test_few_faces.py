"""Fine-tuning on a handful of one's own faces: from 5 faces a class every class trains, validates and
tests, the run warns that the figures stand on few faces, skips calibration it cannot fit, and speaks of
the folder (not of FER2013's splits)."""

import json
import logging
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from fer.data.datamodule import FaceDataModule
from fer.data.faceset import BadRows
from fer.data.folders import read_folders
from fer.data.labels import EMOTIONS
from fer.errors import FerError
from fer.runs.saving import RunCheckpoint

from conftest import run_cli

FER2013_SPLITS = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}  # conf/data/fer2013.yaml's


def _faces(root, per_class: dict[str, int], seed: int = 0, faces=None):
    rng = np.random.default_rng(seed)
    for cls, n in per_class.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            face = faces[cls][i] if faces else rng.integers(0, 256, (48, 48), dtype=np.uint8)
            cv2.imwrite(str(root / cls / f"{i:03d}.png"), face)
    return root


def _datamodule(root) -> FaceDataModule:
    # experiment=finetune data.path=my_faces: FER2013's data config (its class names and split names) on a folder
    return FaceDataModule(
        path=str(root), class_names=EMOTIONS, image_size=48, input_size=44, use_cache=False, split_names=FER2013_SPLITS
    )


def test_five_faces_a_class_give_every_class_a_training_validation_and_test_face(tmp_path):
    root = _faces(tmp_path / "my_faces", {"happy": 5, "sad": 5, "surprise": 6})
    data = read_folders(
        root, BadRows(root, "error"), val_fraction=0.1, seed=0, test_fraction=0.2, **{"class_names": EMOTIONS, "image_size": 48}
    )
    for c in (3, 4, 5):
        assert [int(((data.labels == c) & (data.splits == s)).sum()) >= 1 for s in range(3)] == [True] * 3
    big = _faces(tmp_path / "big", {"happy": 50, "sad": 50})
    data = read_folders(big, BadRows(big, "error"), 0.1, 0, 0.2, class_names=EMOTIONS, image_size=48)
    assert [int(((data.labels == 3) & (data.splits == s)).sum()) for s in range(3)] == [36, 4, 10]  # fractions as before


def test_a_folder_too_small_to_split_says_so_in_its_own_terms(tmp_path):
    root = _faces(tmp_path / "my_faces", {"happy": 2, "sad": 2})
    with pytest.raises(FerError) as e:
        _datamodule(root).setup("fit")
    message = str(e.value)
    assert "too few faces to hold out a validation split" in message and "Happy 2, Sad 2" in message
    assert "3 pictures or more" in message and "PublicTest" not in message and "FER2013" not in message


def test_few_faces_a_class_and_a_single_class_are_warned_of(tmp_path, caplog):
    dm = _datamodule(_faces(tmp_path / "my_faces", {"happy": 5, "sad": 30}))
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert "few faces to train on (Happy 3; under 20 a class)" in caplog.text and "Sad" not in caplog.text
    assert dm.split_names == {"train": "train", "val": "validation", "test": "test"}
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _datamodule(_faces(tmp_path / "one", {"happy": 30})).setup("fit")
    assert "only Happy has faces to train on" in caplog.text


def test_on_few_validation_faces_the_best_epoch_is_the_one_of_least_validation_loss(tmp_path):
    dm = _datamodule(_faces(tmp_path / "my_faces", {"happy": 5, "sad": 5, "surprise": 6}))
    dm.setup("fit")
    trainer = SimpleNamespace(
        datamodule=dm, limit_val_batches=1.0, world_size=1, is_global_zero=True, strategy=SimpleNamespace(broadcast=lambda x: x)
    )

    def ranked(min_val_faces):
        best = RunCheckpoint(dirpath=tmp_path / "checkpoints", monitor="val/acc", mode="max", min_val_faces=min_val_faces)
        best.setup(trainer, None, "fit")
        return best

    best = ranked(min_val_faces=50)  # 3 validation faces: accuracy moves 33 points a face, and epochs tie
    assert (best.monitor, best.mode, float(best.kth_value)) == ("val/loss", "min", float("inf"))
    assert "'monitor': 'val/loss'" in best.state_key  # a resume, deciding the same, finds the state it saved
    best = ranked(min_val_faces=3)
    assert (best.monitor, best.mode) == ("val/acc", "max")


@pytest.mark.slow
def test_finetuning_on_five_faces_a_class_trains_and_reports_honestly(tmp_path, fer2013):
    images, labels = fer2013.split("test")
    picks = {"happy": 3, "sad": 4, "surprise": 5}
    root = _faces(tmp_path / "my_faces", {c: 5 for c in picks}, faces={c: images[labels == i][:5] for c, i in picks.items()})
    run = tmp_path / "run"
    r = run_cli(
        [
            "train.py",
            "experiment=finetune",
            f"data.path={root}",
            "trainer.max_epochs=2",
            "eval_train_split=false",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={run}",
        ]
    )
    assert r.returncode == 0, r.stderr[-3000:]
    log = (run / "train.log").read_text()
    assert "9 train / 3 val / 3 test faces" in log
    assert "few faces to train on (Happy 3, Sad 3, Surprise 3; under 20 a class)" in log
    assert "not calibrated: 3 validation faces are too few" in log
    assert "best epoch by val/loss, not val/acc: on 3 validation faces accuracy moves 33.3 points a face" in log
    assert "on the same 3 faces" in log and "one face is 33.3 points" in log
    assert "PublicTest" not in log and "PrivateTest" not in log
    m = json.loads((run / "metrics.json").read_text())
    assert m["split_names"] == {"train": "train", "val": "validation", "test": "test"}
    assert "skipped" in m["calibration"] and m["init_from"]["test_faces"] == 3
    assert m["val"]["best_by"] == "val/loss"
    losses = [h["val/loss"] for h in m["history"]]
    assert m["val"]["best_epoch"] == losses.index(min(losses)) + 1
    assert f"-epoch{m['val']['best_epoch']:02d}-" in m["test"]["checkpoint"]  # the epoch tested is the one reported
