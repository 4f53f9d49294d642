"""A resume starts from exactly the state its last.ckpt holds: every weight and buffer of the model and
every optimizer buffer (SGD momentum), bit for bit, when the first step of the resumed leg is taken."""

import copy

import torch

from fer.train.module import EmotionClassifier

from conftest import run_cli

SHORT = ["trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "eval_train_split=false", "calibrate=false"]


def test_resume_restores_weights_and_optimizer_state_bit_for_bit(tiny_csv, tmp_path, monkeypatch):
    run = tmp_path / "run"
    r = run_cli(
        ["train.py", f"data.path={tiny_csv}", "data.batch_size=8", "trainer.max_epochs=1", *SHORT, f"hydra.run.dir={run}"]
    )
    assert r.returncode == 0, r.stderr[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=False)
    assert saved["optimizer_states"][0]["state"], "the first leg left no optimizer state to restore"

    seen = {}
    on_train_start = EmotionClassifier.on_train_start

    def record(self):  # before anything of the resumed leg runs (the schedule's stretch included)
        seen["model"] = {k: v.detach().clone() for k, v in self.state_dict().items()}
        seen["optimizer"] = copy.deepcopy(self.trainer.optimizers[0].state_dict())  # its buffers change in place
        on_train_start(self)

    monkeypatch.setattr(EmotionClassifier, "on_train_start", record)
    r = run_cli(["train.py", f"ckpt_path={last}", "trainer.max_epochs=2"])
    assert r.returncode == 0, r.stderr[-3000:]

    assert set(seen["model"]) == set(saved["state_dict"])
    for k, v in saved["state_dict"].items():
        assert torch.equal(seen["model"][k], v), k
    stored, restored = saved["optimizer_states"][0]["state"], seen["optimizer"]["state"]
    assert set(restored) == set(stored)
    for i, buffers in stored.items():
        for name, v in buffers.items():
            assert torch.equal(torch.as_tensor(restored[i][name]), torch.as_tensor(v)), (i, name)
