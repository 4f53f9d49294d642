"""Warm starts and fine-tuning on a folder of one's own faces: init_from=, callbacks=freeze_features,
experiment=finetune, and class folders of pictures of any size."""

import json
import logging

import cv2
import numpy as np
import pytest

from fer.data.faceset import BadRows
from fer.data.folders import read_folders
from fer.data.labels import EMOTIONS

from conftest import ROOT, run_cli
from scenes import background, place_faces
from test_cli import assert_clean_error

FER2013_FACES = {"class_names": EMOTIONS, "image_size": 48}  # what conf/data/fer2013.yaml gives the folder reader
SHIPPED = ROOT / "fer" / "weights" / "fer2013_regularized.ckpt"
SHORT = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "eval_train_split=false",
    "calibrate=false",
    "trainer.enable_progress_bar=false",
]


def _own_faces(root, faces_by_class: dict[str, list[np.ndarray]], photo_every: int = 0, blank: str | None = None):
    """my_faces/<class>/*: the 48x48 faces as they are, every `photo_every`-th one as a 640x480 photo
    with the face enlarged on it, and a picture without a face in class `blank`."""
    for cls, faces in faces_by_class.items():
        (root / cls).mkdir(parents=True)
        for i, face in enumerate(faces):
            if photo_every and i % photo_every == 0:
                photo, _ = place_faces([face], [(220, 120)])
                cv2.imwrite(str(root / cls / f"photo{i}.jpg"), photo)
            else:
                cv2.imwrite(str(root / cls / f"face{i}.png"), face)
    if blank:
        cv2.imwrite(str(root / blank / "no_face.jpg"), background((640, 480)))
    return root


def test_class_folders_hold_out_a_stratified_test_split_and_report_pictures_without_a_face(tmp_path, caplog):
    rng = np.random.default_rng(0)
    faces = {cls: [rng.integers(0, 256, (48, 48), dtype=np.uint8) for _ in range(10)] for cls in ("happy", "Sad", "neutral")}
    root = _own_faces(tmp_path / "my_faces", faces, photo_every=5, blank="happy")
    found = []

    def finder(picture):  # stands in for the detector: a 640x480 photo holds one face unless it is blank
        found.append(picture.shape)
        return None if picture.std() < 30 else np.zeros((48, 48), np.uint8)

    with caplog.at_level(logging.WARNING):
        data = read_folders(
            root, BadRows(root, "error"), val_fraction=0.1, seed=0, test_fraction=0.2, face_finder=finder, **FER2013_FACES
        )
    assert len(found) == 3 * 2 + 1  # only the photos went to the face finder; 48x48 pictures are crops already
    assert data.no_face == ["happy/no_face.jpg"]
    assert "happy/no_face.jpg" in caplog.text and "1 of 31 pictures" in caplog.text
    assert len(data.labels) == 30
    for c in (3, 4, 6):  # happy, sad, neutral: 2 of 10 tested, 1 of the other 8 validates
        assert [int(((data.labels == c) & (data.splits == s)).sum()) for s in range(3)] == [7, 1, 2]
    again = read_folders(root, BadRows(root, "error"), 0.1, 0, 0.2, face_finder=finder, **FER2013_FACES)
    assert np.array_equal(again.splits, data.splits)  # seeded: the same faces are held out every time
    whole = read_folders(root, BadRows(root, "error"), 0.1, 0, 0.2, faces="whole", face_finder=finder, **FER2013_FACES)
    assert len(whole.labels) == 31 and whole.no_face == []


def test_bad_class_folders_get_one_line(tmp_path):
    (tmp_path / "cats").mkdir()
    assert_clean_error(
        run_cli(["train.py", f"data.path={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}"]),
        "expected train/<class>/",
        "<class>/ folders",
        "found cats",
    )
    r = run_cli(["train.py", f"data.path={tmp_path}", "data.faces=crop", f"hydra.run.dir={tmp_path / 'run2'}"])
    assert_clean_error(r, "data.faces=crop")


@pytest.mark.slow
def test_init_from_refuses_another_architecture_and_evaluation(tmp_path):
    r = run_cli(["train.py", "model=baseline", f"init_from={SHIPPED}", f"hydra.run.dir={tmp_path / 'a'}"])
    assert_clean_error(r, "holds a 'regularized' network", "this run builds 'baseline'", "model=regularized")
    r = run_cli(
        ["train.py", "model.net.widths=[16,16,32,32,64,64,128,128]", f"init_from={SHIPPED}", f"hydra.run.dir={tmp_path / 'b'}"]
    )
    assert_clean_error(r, "weights do not fit", "widths")
    r = run_cli(["train.py", "train=false", f"ckpt_path={SHIPPED}", f"init_from={SHIPPED}", f"hydra.run.dir={tmp_path / 'c'}"])
    assert_clean_error(r, "init_from= starts a training run")
    r = run_cli(["train.py", f"init_from={SHIPPED}", "callbacks=freeze_head", f"hydra.run.dir={tmp_path / 'd'}"])
    assert_clean_error(r, "callbacks=freeze_head", "freeze_features")


@pytest.mark.slow
def test_finetune_on_own_faces_end_to_end(tmp_path, fer2013):
    """The README's workflow: a folder of one's own pictures -> experiment=finetune from the shipped
    model -> a checkpoint infer.py uses; accuracy reported for the start and the result."""
    images, labels = fer2013.split("test")
    picks = {"happy": 3, "sad": 4, "surprise": 5}
    faces = {cls: list(images[labels == c][:12]) for cls, c in picks.items()}
    root = _own_faces(tmp_path / "my_faces", faces, photo_every=4, blank="sad")
    run = tmp_path / "run"
    r = run_cli(
        ["train.py", "experiment=finetune", f"data.path={root}", "callbacks=freeze_features", *SHORT, f"hydra.run.dir={run}"]
    )
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["init_from"]["checkpoint"].endswith("fer2013_regularized.ckpt")
    assert 0 <= metrics["init_from"]["test_acc"] <= 1 and 0 <= metrics["test"]["acc"] <= 1
    log = (run / "train.log").read_text()
    assert "sad/no_face.jpg" in log and "warm start" in log and "callbacks=freeze_features" in log
    assert "started from" in log
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    photo, _ = place_faces([faces["happy"][0]], [(220, 120)])
    cv2.imwrite(str(tmp_path / "photo.jpg"), photo)
    r = run_cli(
        ["infer.py", f"ckpt_path={best}", f"source={tmp_path / 'photo.jpg'}", f"output={tmp_path / 'out.jpg'}", "display=false"]
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "out.jpg").is_file()


def _shipped_net_weights() -> dict:
    from fer.runs.checkpoint import net_weights, read_checkpoint

    return net_weights(read_checkpoint(SHIPPED)["state_dict"])


def test_init_from_copies_every_network_tensor_of_the_checkpoint():
    import torch

    from fer.train.module import EmotionClassifier
    from fer.train.warmstart import load_initial_weights

    from conftest import model_net

    torch.manual_seed(0)
    model = EmotionClassifier(net=model_net("regularized"), class_names=EMOTIONS, image_size=48, input_size=44)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    load_initial_weights(model, SHIPPED)
    ours, stored = model.net.state_dict(), _shipped_net_weights()
    assert set(ours) == set(stored)
    for k, v in stored.items():
        assert torch.equal(ours[k], v.to(ours[k].dtype)), k
    assert not torch.equal(before["features.0.weight"], ours["features.0.weight"])  # a random start differs


def test_freeze_features_keeps_the_convolutions_bit_identical_and_trains_the_head(tmp_path, tiny_csv):
    # A short fine-tune of the shipped model through train.py: what it saves holds the shipped
    # convolutional weights and BatchNorm statistics unchanged, and a head that moved.
    import torch

    run = tmp_path / "run"
    r = run_cli(
        [
            "train.py",
            f"init_from={SHIPPED}",
            "callbacks=freeze_features",
            f"data.path={tiny_csv}",
            "data.batch_size=8",
            *SHORT,
            f"hydra.run.dir={run}",
        ]
    )
    assert r.returncode == 0, r.stderr[-3000:]
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    stored = _shipped_net_weights()
    features = [k for k in stored if k.startswith("features.")]
    assert features
    for k in features:
        assert torch.equal(saved[f"net.{k}"].to(stored[k].dtype), stored[k]), k
    head = [k for k in stored if k.startswith("classifier.") and k.endswith("weight")]
    assert any(not torch.equal(saved[f"net.{k}"].float(), stored[k]) for k in head)
