"""A model's meta is one typed object (fer.runs.meta.ModelMeta), read and written in one place, that
still reads the shipped model and checkpoints written before image_size and the face group's name."""

import dataclasses

import pytest
import torch

from fer.errors import FerError
from fer.runs.checkpoint import read_meta, save_slim, update_meta
from fer.runs.meta import ModelMeta

from conftest import ROOT

SHIPPED = ROOT / "fer" / "weights" / "fer2013_regularized.ckpt"


def test_the_shipped_model_reads_as_it_is():
    before = SHIPPED.read_bytes()
    meta = read_meta(SHIPPED)
    assert meta.arch == "regularized" and meta.image_size == 48 and len(meta.class_names) == 7
    assert meta.face is not None and set(meta.temperature) == {"none", "flip", "ten_crop"}
    assert SHIPPED.read_bytes() == before  # read, never rewritten


def test_to_dict_and_back_is_the_same_meta_in_plain_types():
    meta = read_meta(SHIPPED)
    stored = meta.to_dict()
    assert ModelMeta.from_dict(stored, "x") == meta
    assert isinstance(stored["class_names"], list) and isinstance(stored["history"], list)
    assert {f.name for f in dataclasses.fields(ModelMeta)} == set(stored)


def test_older_files_get_the_values_they_imply():
    old = {k: v for k, v in read_meta(SHIPPED).to_dict().items() if k not in ("image_size", "face", "format")}
    old["preprocess"] = {"align": True, "margin": 0.1, "gamma": 1.0}
    meta = ModelMeta.from_dict(old, "old.ckpt")
    assert meta.image_size == 48 and meta.face == old["preprocess"] and meta.temperature_of("flip") > 0


@pytest.mark.parametrize(
    "change, message",
    [
        ({"std": 0}, "invalid 'std'"),
        ({"class_names": []}, "invalid 'class_names'"),
        ({"net": {"widths": [1]}}, "invalid 'net'"),
        ({"input_size": 64}, "larger than its image_size"),
        ({"format": 99}, "newer fer"),
    ],
)
def test_a_meta_this_fer_cannot_use_is_one_line_naming_the_file(change, message):
    stored = {**read_meta(SHIPPED).to_dict(), **change}
    with pytest.raises(FerError, match=message) as e:
        ModelMeta.from_dict(stored, "some.ckpt")
    assert str(e.value).startswith("some.ckpt") and "\n" not in str(e.value)


def test_slim_copies_and_meta_updates_go_through_the_one_writer(tmp_path):
    copy = save_slim(SHIPPED, tmp_path / "slim.ckpt", meta_updates={"temperature": {"none": 2.0}})
    update_meta(copy, history=({"epoch": 0},))
    meta = read_meta(copy)
    assert meta.temperature == {"none": 2.0} and meta.history == ({"epoch": 0},) and meta.face == read_meta(SHIPPED).face
    assert torch.load(copy, weights_only=True)["fer"]["face"] == meta.face  # stored under its current name
