"""Settings that moved (issue 16) keep their old spelling: model.dropout= -> model.net.dropout=,
preprocess.* -> face.*, and the flat switches ema_decay, early_stopping_patience, finetune.freeze ->
options of the callbacks group. On the command line and in what a resume re-applies."""

import pytest
import torch
from test_run_safety import crafted_run

from fer.errors import FerError
from fer.overrides import apply_renames
from fer.resume import resume_argv

from conftest import run_cli


def test_old_spellings_are_rewritten_with_one_note(capsys):
    argv = [
        "train.py",
        "-m",
        "model.dropout=0.2,0.35",
        "+preprocess.gamma=1.2",
        "preprocess=default",
        "~model.dropout",
        "--config-dir",
        "preprocess.x",
        "model.dropout_rate=1",
        "trainer.max_epochs=3",
    ]
    assert apply_renames(argv) == [
        "train.py",
        "-m",
        "model.net.dropout=0.2,0.35",
        "+face.gamma=1.2",
        "face=default",
        "~model.net.dropout",
        "--config-dir",
        "preprocess.x",
        "model.dropout_rate=1",
        "trainer.max_epochs=3",
    ]
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "model.dropout= is now model.net.dropout=" in err
    assert "preprocess.gamma= is now face.gamma=" in err and "preprocess= is now face=" in err
    new = ["train.py", "model.net.dropout=0.2", "face.gamma=1.2"]
    assert apply_renames(new) == new and capsys.readouterr().err == ""  # nothing to say


def test_retired_switches_become_callbacks_options(capsys):
    assert apply_renames(["train.py", "ema_decay=0.5", "trainer.max_epochs=3"]) == [
        "train.py",
        "callbacks=ema",
        "callbacks.ema.decay=0.5",
        "trainer.max_epochs=3",
    ]
    assert apply_renames(["train.py", "early_stopping_patience=3", "finetune.freeze=features", "ema_decay=null"]) == [
        "train.py",
        "callbacks=[early_stopping,freeze_features]",
        "callbacks.early_stopping.patience=3",
    ]
    assert "ema_decay=0.5 is now callbacks=ema callbacks.ema.decay=0.5" in capsys.readouterr().err
    with pytest.raises(FerError, match="finetune.freeze=head: .* callbacks=freeze_features"):
        apply_renames(["train.py", "finetune.freeze=head"])
    with pytest.raises(FerError, match="give callbacks= once"):
        apply_renames(["train.py", "ema_decay=0.9", "callbacks=early_stopping"])


def test_a_resume_re_applies_a_recorded_old_spelling_in_the_new_one(tmp_path, capsys):
    run_dir = crafted_run(tmp_path, ["model.dropout=0.2", "preprocess.gamma=1.2", "ema_decay=0.9"])
    last = run_dir / "checkpoints" / "last.ckpt"
    argv = resume_argv(["train.py", f"ckpt_path={last}", "trainer.max_epochs=5"])
    assert argv[1:] == [
        "callbacks=ema",
        "model.net.dropout=0.2",
        "face.gamma=1.2",
        "callbacks.ema.decay=0.9",
        f"ckpt_path={last}",
        "trainer.max_epochs=5",
        f"hydra.run.dir='{run_dir}'",
    ]
    # the new spelling on the command line wins over the recorded old one
    torch.save({"callbacks": {"RunRecord": {"overrides": ["model.dropout=0.2"]}}}, last)
    argv = resume_argv(["train.py", f"ckpt_path={last}", "model.net.dropout=0.3"])
    assert argv[1:] == [f"ckpt_path={last}", "model.net.dropout=0.3", f"hydra.run.dir='{run_dir}'"]


def test_an_old_spelling_sweep_names_its_jobs_by_the_new_one(tmp_path):
    # Hydra names each job after its overrides: the jobs fail at once (no data), their folders are the point.
    sweep = tmp_path / "sweep"
    r = run_cli(["train.py", "-m", "model.dropout=0.2,0.35", f"data.path={tmp_path / 'missing.csv'}", f"hydra.sweep.dir={sweep}"])
    jobs = sorted(d.name for d in sweep.iterdir() if d.is_dir() and not d.name.startswith("."))
    assert jobs == ["0_model.net.dropout=0.2", "1_model.net.dropout=0.35"], r.stderr[-2000:]
    assert r.stderr.count("model.dropout= is now model.net.dropout=") == 1 and "Traceback" not in r.stderr
