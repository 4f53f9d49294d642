"""A disk that fills while a checkpoint is written: one line with the command that resumes, the same line
in train.log, and the last whole checkpoint left as it was."""

import errno

from fer.runs.checkpoint import read_checkpoint
from fer.runs.saving import AtomicCheckpointIO

from conftest import SHRINK, run_cli
from test_cli import assert_clean_error


def test_a_full_disk_during_a_checkpoint_write_says_how_to_resume(tiny_csv, tmp_path, monkeypatch):
    writes = []
    save = AtomicCheckpointIO.save_checkpoint

    def fills_up(self, checkpoint, path, storage_options=None):  # the first epoch's two files fit; then the disk is full
        writes.append(path)
        if len(writes) > 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", fills_up)
    run = tmp_path / "run"
    shrink = [f"{k}={v}" for k, v in SHRINK.items() if k != "trainer.max_epochs"] + ["trainer.enable_progress_bar=false"]
    r = run_cli(["train.py", *shrink, "trainer.max_epochs=3", f"data.path={tiny_csv}", f"hydra.run.dir={run}"])
    last = run / "checkpoints" / "last.ckpt"
    hint = f"resume with: python train.py ckpt_path={last}"
    assert_clean_error(r, "no space left on the disk writing", hint)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert hint in (run / "train.log").read_text()
    assert read_checkpoint(last)["epoch"] == 0  # the first epoch's, whole
