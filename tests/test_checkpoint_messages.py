"""A file that is not one of this project's checkpoints is refused in one whole line that never repeats
torch's advice to switch weights_only off, and a warm start whose weights do not fit names where."""

import pickle

import pytest
import torch

from fer.data.labels import EMOTIONS
from fer.errors import FerError
from fer.runs.checkpoint import read_checkpoint
from fer.train.module import EmotionClassifier
from fer.train.warmstart import load_initial_weights

from conftest import model_net


class Gadget:  # any class: what an untrusted pickle would rebuild (and run code for)
    pass


def _refusal(path) -> str:
    with pytest.raises(FerError) as e:
        read_checkpoint(path)
    message = str(e.value)
    assert "\n" not in message and "weights_only" not in message and "Weights only" not in message
    assert message.endswith("pass the .ckpt written by `python train.py`"), message  # whole, not cut mid-sentence
    return message


def test_a_pickle_of_objects_is_not_ours_or_not_trusted(tmp_path):
    path = tmp_path / "gadget.ckpt"
    torch.save({"state_dict": {}, "fer": Gadget()}, path)
    message = _refusal(path)
    assert "is not a checkpoint this project wrote (or not a trusted one)" in message and "could run code" in message


def test_a_text_file_or_other_bytes_as_a_checkpoint(tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("epoch 3, accuracy 0.71\n")  # torch's unpickler answers "101" ('e') for this one
    message = _refusal(text)
    assert "it is a text file" in message and "101" not in message
    noise = tmp_path / "noise.ckpt"
    noise.write_bytes(bytes(range(256)) * 4)
    assert "torch cannot read it as weights" in _refusal(noise)
    plain = tmp_path / "plain.ckpt"
    plain.write_bytes(pickle.dumps([1, 2], protocol=2))
    assert "not a checkpoint this project wrote" in str(pytest.raises(FerError, read_checkpoint, plain).value)


def test_init_from_weights_that_do_not_fit_name_the_tensors(tmp_path):
    model = EmotionClassifier(net=model_net("regularized"), class_names=EMOTIONS, image_size=48, input_size=44)
    state = model.state_dict()
    key = next(k for k in state if k.startswith("net.") and k.endswith("weight") and state[k].dim() == 4)
    state[key] = torch.zeros(state[key].shape[0] + 1, *state[key].shape[1:])  # the same settings, another shape
    path = tmp_path / "odd.ckpt"
    torch.save({"fer": model.fer_meta(), "state_dict": state}, path)
    with pytest.raises(FerError) as e:
        load_initial_weights(
            EmotionClassifier(net=model_net("regularized"), class_names=EMOTIONS, image_size=48, input_size=44), path
        )
    shape = tuple(model.state_dict()[key].shape)
    wrong = (shape[0] + 1, *shape[1:])
    assert f"{key[len('net.') :]} {wrong} in the checkpoint, {shape} here" in str(e.value) and "{}" not in str(e.value)
