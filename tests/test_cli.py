"""`python train.py` as a user runs it: clear one-line errors, resume after a kill, sweeps."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, random_rows, run_cli, write_csv

TINY = ["data.batch_size=4", "trainer.enable_progress_bar=false", "model=baseline"]


def assert_clean_error(r, *fragments):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr[-3000:]
    for f in fragments:
        assert f in r.stderr + r.stdout, (f, r.stderr[-2000:])


def test_missing_data_file(tmp_path):
    r = run_cli(["train.py", f"data.path={tmp_path / 'fer2013.csv'}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert_clean_error(r, "FER2013 not found at", str(tmp_path / "fer2013.csv"), "Kaggle")


def test_config_typo_and_unknown_model(tmp_path):
    assert_clean_error(run_cli(["train.py", "trainer.max_epoch=3", f"hydra.run.dir={tmp_path}"]), "max_epoch")
    assert_clean_error(
        run_cli(["train.py", "model=resnet", f"hydra.run.dir={tmp_path}"]),
        "model=resnet: no such model",
        "baseline",
        "regularized",
    )
    # the models' shared base is no model of its own
    assert_clean_error(
        run_cli(["train.py", "model=base/classifier", f"hydra.run.dir={tmp_path / 'b'}"]), "not a model", "model=regularized"
    )


@pytest.mark.slow
def test_malformed_rows_error_and_skip(tmp_path):
    rows = random_rows()
    rows.insert(0, (0, "1 2 3", "Training"))
    bad = write_csv(tmp_path / "bad.csv", rows)
    r = run_cli(["train.py", f"data.path={bad}", *TINY, f"hydra.run.dir={tmp_path / 'a'}"])
    assert_clean_error(r, "bad.csv: line 2: 3 pixel values, expected 2304")
    r = run_cli(
        ["train.py", f"data.path={bad}", "data.on_bad_row=skip", "trainer.max_epochs=1", *TINY, f"hydra.run.dir={tmp_path / 'b'}"]
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "skipped 1 bad rows" in r.stdout + r.stderr


def test_empty_split(tmp_path):
    rows = [r for r in random_rows() if r[2] != "PrivateTest"]
    r = run_cli(["train.py", f"data.path={write_csv(tmp_path / 'x.csv', rows)}", *TINY, f"hydra.run.dir={tmp_path / 'r'}"])
    assert_clean_error(r, "PrivateTest (test) split is empty")


def test_nan_loss(tiny_csv, tmp_path):
    r = run_cli(
        [
            "train.py",
            f"data.path={tiny_csv}",
            *TINY,
            "model.optimizer.lr=1e30",
            "trainer.max_epochs=3",
            f"hydra.run.dir={tmp_path}",
        ]
    )
    assert_clean_error(r, "training loss became", "lower the learning rate")
    assert not (tmp_path / "tensorboard").exists()  # failed before its first epoch ended: no empty run on a dashboard


def assert_one_line_error(r, *fragments):
    assert_clean_error(r, *fragments)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]


BAD_VALUES = [
    (
        "model.net.dropout=1.5",
        "dropout probability has to be between 0 and 1, but got 1.5",
    ),  # raised while Hydra builds the model
    ("model.tta=tencrop", "tta=tencrop is not a test-time augmentation; choose one of none, flip, ten_crop"),
    ("data.batch_size=0", "data.batch_size must be a whole number of faces, 1 or more, not 0"),
    ("data.batch_size=-1", "data.batch_size must be a whole number of faces, 1 or more, not -1"),
    ("data.eval_batch_size=0", "data.eval_batch_size must be a whole number of faces, 1 or more, not 0"),
    ("model.optimizer.lr=-1", "model.optimizer.lr must be a positive number (e.g. 0.05), not -1"),
    ("model.optimizer.lr=abc", "model.optimizer.lr must be a positive number (e.g. 0.05), not 'abc'"),
]


@pytest.mark.parametrize(
    "override, message",
    [  # the typed settings (fer.config) refuse these before anything is built; the objects' own checks stay behind them
        BAD_VALUES[0],
        ("model.tta=tencrop", "model.tta=tencrop: must be one of none, flip, ten_crop"),
        ("data.batch_size=0", "data.batch_size=0: must be a whole number at least 1"),
        BAD_VALUES[-1],
        ("trainer.max_epochs=0", "trainer.max_epochs=0: must be a whole number at least 1"),
    ],
)
@pytest.mark.slow
def test_bad_config_values_are_one_line(tiny_csv, tmp_path, override, message):
    # the default model (README defaults), shrunk to batches of 4 faces
    r = run_cli(
        ["train.py", f"data.path={tiny_csv}", "data.batch_size=4", "trainer.max_epochs=1", override, f"hydra.run.dir={tmp_path}"]
    )
    assert_one_line_error(r, message)
    assert "Error in call to target" not in r.stderr + r.stdout and not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("override, message", BAD_VALUES)
def test_every_bad_value_is_refused_when_its_object_is_built(override, message):
    # The same values without a subprocess each: the FerError behind Hydra's InstantiationException.
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from fer.errors import user_error

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[override])
    with pytest.raises(Exception) as caught:
        instantiate(cfg.data if override.startswith("data.") else cfg.model)
    assert message in str(user_error(caught.value))


@pytest.mark.slow
def test_a_run_without_a_single_training_step_is_one_line(tiny_csv, tmp_path):
    # the default model's one-cycle schedule would be asked for a run of 0 (or -1) steps
    r = run_cli(
        [
            "train.py",
            f"data.path={tiny_csv}",
            "data.batch_size=4",
            "trainer.limit_train_batches=0",
            f"hydra.run.dir={tmp_path / 'a'}",
        ]
    )
    assert_one_line_error(r, "trainer.limit_train_batches=0: must be a number above 0")
    assert not (tmp_path / "a" / "tensorboard").exists()
    r = run_cli(
        [
            "train.py",
            f"data.path={tiny_csv}",
            "data.batch_size=4",
            "trainer.limit_train_batches=0.01",
            f"hydra.run.dir={tmp_path / 'b'}",
        ]
    )
    assert_one_line_error(r, "limit_train_batches")


@pytest.mark.slow
def test_a_sweep_summary_shows_the_projects_message_for_a_refused_value(tiny_csv, tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli(["train.py", "-m", "model.tta=tencrop,tencrops", f"data.path={tiny_csv}", *TINY, f"hydra.sweep.dir={sweep}"])
    assert_clean_error(r, "2 of 2 jobs failed")
    summary = (sweep / "summary.csv").read_text()
    assert (
        "failed: model.tta=tencrop" in summary
        and "must be one of none, flip, ten_crop" in summary
        and "Error in call to target" not in summary
    )


def test_ctrl_c_exits_130_and_says_how_to_resume(tiny_csv, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "train.py", f"data.path={tiny_csv}", *TINY, "trainer.max_epochs=10000", f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a test run started in the background (nohup ... &) ignores SIGINT, and the child would inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not last.exists():
        time.sleep(0.2)
    time.sleep(1.0)  # a few epochs in
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted"
    assert f"resume with: python train.py ckpt_path={last}" in out
    assert f"resume with: python train.py ckpt_path={last}" in (run_dir / "train.log").read_text()


def test_a_ctrl_c_that_python_swallows_still_stops_training(tiny_csv, tmp_path):
    # Ctrl-C landing in a finaliser or a garbage collector's weakref callback is printed as "Exception
    # ignored" and dropped; training must still stop (the default model, at the next batch), exit 130 and
    # say how to resume, instead of running its 10,000 epochs.
    run_dir = tmp_path / "run"
    r = run_cli(
        [
            "train.py",
            f"data.path={tiny_csv}",
            "data.batch_size=4",
            "trainer.enable_progress_bar=false",
            "trainer.max_epochs=10000",
            "+callbacks.swallowed._target_=swallowed_ctrl_c.SwallowedCtrlC",
            f"hydra.run.dir={run_dir}",
        ],
        env={"PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))},
        fresh_process=True,  # a signal to the process itself: not pytest's
        timeout=180,
    )
    assert "Exception ignored" in r.stderr, "the Ctrl-C was not swallowed: this test proves nothing"
    assert r.returncode == 130, r.stderr[-3000:]
    assert r.stderr.strip().splitlines()[-1] == "interrupted"
    last = run_dir / "checkpoints" / "last.ckpt"
    assert f"resume with: python train.py ckpt_path={last}" in r.stdout
    assert torch.load(last, weights_only=False)["epoch"] <= 3  # stopped where it was pressed, give or take an epoch


@pytest.mark.slow
def test_checkpoints_that_are_not_ours_or_from_another_model(tiny_csv, tmp_path, random_checkpoint):
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    r = run_cli(["train.py", "train=false", f"ckpt_path={junk}", f"data.path={tiny_csv}", f"hydra.run.dir={tmp_path / 'a'}"])
    assert_clean_error(r, "is not a checkpoint this project wrote")
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "epoch": 3}, other)
    assert_clean_error(
        run_cli(["train.py", "train=false", f"ckpt_path={other}", f"data.path={tiny_csv}", f"hydra.run.dir={tmp_path / 'b'}"]),
        "is not a checkpoint this project wrote",
    )
    # a regularized checkpoint given to a baseline run
    r = run_cli(["train.py", *TINY, f"ckpt_path={random_checkpoint}", f"data.path={tiny_csv}", f"hydra.run.dir={tmp_path / 'c'}"])
    assert_clean_error(r, "holds a 'regularized' network", "model=regularized")
    assert_clean_error(
        run_cli(["train.py", "train=false", f"data.path={tiny_csv}", f"hydra.run.dir={tmp_path / 'd'}"]), "ckpt_path="
    )


def test_a_run_never_writes_over_an_earlier_run(tiny_csv, tmp_path):
    args = ["train.py", f"data.path={tiny_csv}", *TINY, "trainer.max_epochs=1", f"hydra.run.dir={tmp_path}"]
    assert run_cli(args).returncode == 0
    before = (tmp_path / "metrics.json").read_text()
    assert_clean_error(run_cli(args), "already holds a run", "nothing was overwritten")
    assert (tmp_path / "metrics.json").read_text() == before


@pytest.mark.slow
def test_resume_after_sigkill_continues_at_the_right_epoch(fer2013_path, tmp_path):
    run_dir = tmp_path / "run"
    args = [
        sys.executable,
        "train.py",
        f"data.path={fer2013_path}",
        "model=baseline",
        "data.batch_size=32",
        "trainer.max_epochs=4",
        "trainer.limit_train_batches=12",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "eval_train_split=false",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and torch.load(last, weights_only=True)["epoch"] >= 1:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # mid-way through epoch 3, no chance to clean up
    proc.wait()
    killed_at = torch.load(last, weights_only=True)["epoch"]
    assert 1 <= killed_at < 3 and not (run_dir / "metrics.json").exists()

    r = run_cli(["train.py", f"ckpt_path={last}"])  # the run's own overrides come back by themselves
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming {run_dir}" in r.stderr
    m = json.loads((run_dir / "metrics.json").read_text())
    assert [h["epoch"] for h in m["history"]] == [0, 1, 2, 3]  # nothing repeated, nothing lost
    assert m["model"] == "baseline"
    assert torch.load(last, weights_only=True)["epoch"] == 3
    # The summary's training time is all four epochs' (from the history), not only this leg's wall time.
    assert f"4 epochs in {m['history'][-1]['time_s'] / 60:.1f} min of training" in r.stdout


@pytest.mark.slow
def test_dropout_multirun_writes_a_dir_per_job_and_a_ranked_summary(tiny_csv, tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli(
        [
            "train.py",
            "-m",
            "model=regularized",
            "model.net.dropout=0.2,0.5",
            f"data.path={tiny_csv}",
            "data.batch_size=4",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = sorted(d.name for d in sweep.iterdir() if d.is_dir())
    assert jobs == ["0_dropout-0.2", "1_dropout-0.5"]  # what the sweep varies, not everything typed
    for j in jobs:
        assert (sweep / j / "metrics.json").exists() and (sweep / j / "tensorboard").is_dir()
    summary = (sweep / "summary.md").read_text()
    assert "model.net.dropout=0.2" in summary and "model.net.dropout=0.5" in summary and "test_acc" in summary
    assert "Test (PrivateTest) recall per class" in summary and "| Disgust |" in summary
    assert (sweep / "summary.png").stat().st_size > 10_000  # curves and per-class recall, one figure
    rows = (sweep / "summary.csv").read_text().splitlines()
    assert rows[0].startswith("rank,job") and rows[0].endswith(",test_recall_Neutral") and len(rows) == 3


@pytest.mark.slow
def test_a_failing_sweep_job_is_reported_and_the_others_still_run(tiny_csv, tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli(
        [
            "train.py",
            "-m",
            "data.on_bad_row=bogus,skip",
            f"data.path={tiny_csv}",
            *TINY,
            "trainer.max_epochs=1",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert r.returncode != 0
    assert "1 of 2 jobs failed" in r.stderr
    summary = (sweep / "summary.csv").read_text()
    assert "failed: data.on_bad_row=bogus: must be one of error, skip" in summary
    assert len(list(sweep.glob("1_*/metrics.json"))) == 1


def test_sweep_job_dirs_are_named_by_the_values_swept_short_and_safe():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from fer.train.sweep_dirs import job_subdir, swept_keys

    typed = ["model=baseline,vgg", "model.optimizer.lr=0.01", "data.path=/faces", "data.augment.dropout=range(0,2)"]
    space = {"model.net.dropout": "interval(0.1, 0.6)", "model.optimizer.lr": "tag(log, interval(0.005, 0.2))"}
    keys = swept_keys(typed, space)
    assert keys == ["model.net.dropout", "model", "data.augment.dropout"]  # lr: typed, so fixed
    job = ["model=vgg", "model.optimizer.lr=0.01", "data.path=/faces", "data.augment.dropout=1", "model.net.dropout=0.2345678"]
    name = job_subdir(3, job, keys)
    assert name == "3_net.dropout-0.2346_model-vgg_augment.dropout-1"
    # the dir reads as one plain value in a resume's command line (no ',' or '=' for Hydra to split on)
    (resume,) = OverridesParser.create().parse_overrides([f"ckpt_path=/sweep/{name}/checkpoints/last.ckpt"])
    assert resume.value() == f"/sweep/{name}/checkpoints/last.ckpt"
    long = job_subdir(0, [f"k{i}='some/long value={i}'" for i in range(9)], [f"k{i}" for i in range(9)])
    assert len(long) <= 82 and long.startswith("0_k0-some-long-value-0_k1-")  # whole values, bounded
    assert job_subdir(4, ["seed=1"], []) == "4"  # a sweep that varies nothing: its number


def test_sweep_jobs_are_labelled_by_what_sets_them_apart():
    from fer.train.sweep import _distinguishing_labels

    rows = [
        {"job": f"{i}_x", "overrides": f"experiment=paper_regularized model.net.dropout={d} seed=1"}
        for i, d in enumerate((0.2, 0.5))
    ]
    assert _distinguishing_labels(rows) == ["model.net.dropout=0.2", "model.net.dropout=0.5"]
    assert _distinguishing_labels(rows[:1]) == ["0_x"]  # nothing to tell apart: the job's name


def test_jobs_that_differ_only_in_seed_get_a_mean_and_spread(tmp_path):
    from fer.train.sweep import seed_spread, write_summary

    def job(i, seed, dropout, acc):
        cal = {
            mode: {"acc": acc + bonus, "f1_macro": acc - 0.05, "reliability_calibrated": {"ece": 0.03}}
            for mode, bonus in (("none", 0.0), ("flip", 0.01), ("ten_crop", 0.02))
        }
        return {
            "job": f"{i}_x",
            "overrides": f"experiment=vgg_wide model.net.dropout={dropout} seed={seed}",
            "status": "ok",
            "val_acc": acc - 0.02,
            "test_acc": acc + 0.02,
            "test_f1_macro": acc - 0.05,
            "minutes": 47.0,
            "seed": seed,
            "calibration": cal,
            "tta": "ten_crop",
            "rank": i + 1,
            "history": [{"epoch": 0, "val/acc": acc - 0.02, "time_s": 600.0}],
            "recall": {"Angry": acc, "Disgust": 0.1},
        }

    rows = [job(0, 42, 0.4, 0.66), job(1, 43, 0.4, 0.68), job(2, 44, 0.2, 0.70), job(3, 44, 0.4, 0.67)]
    groups = seed_spread(rows)
    assert len(groups) == 1  # dropout 0.2 has one seed: no spread to report
    g = groups[0]
    assert g["overrides"] == "experiment=vgg_wide model.net.dropout=0.4" and g["seeds"] == [42, 43, 44]
    assert g["test_acc"] == [0.66, 0.68, 0.67]  # without TTA, from the calibration report, not the job's tta
    assert g["test_acc_ten_crop"] == pytest.approx([0.68, 0.70, 0.69])
    assert g["train_minutes"] == [10.0, 10.0, 10.0]  # the epochs' time, from the history
    text = write_summary(tmp_path, rows)
    assert "| experiment=vgg_wide model.net.dropout=0.4 | 42, 43, 44 | 65.00 ± 1.00% | 67.00 ± 1.00% |" in text
    assert json.loads((tmp_path / "seeds.json").read_text())[0]["seeds"] == [42, 43, 44]


@pytest.mark.slow
def test_a_resume_may_lengthen_the_run_its_one_cycle_schedule_stretches(tiny_csv, tmp_path):
    # The default model (one-cycle LR by step): a run of 1 epoch resumed with trainer.max_epochs=3.
    run_dir = tmp_path / "run"
    args = [
        f"data.path={tiny_csv}",
        "data.batch_size=16",
        "trainer.enable_progress_bar=false",
        "eval_train_split=false",
        "calibrate=false",
    ]
    assert run_cli(["train.py", *args, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"]).returncode == 0
    last = run_dir / "checkpoints" / "last.ckpt"
    r = run_cli(["train.py", f"ckpt_path={last}", "trainer.max_epochs=3"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "one-cycle schedule stretched from" in r.stderr + r.stdout
    assert [h["epoch"] for h in json.loads((run_dir / "metrics.json").read_text())["history"]] == [0, 1, 2]


# Every setting a user types is checked once at start-up (fer/config.py): one line naming key, value and what is allowed.
TRAIN_VALUES = [
    ("seed=abc", "seed=abc: must be a whole number from 0 to 4294967295"),
    ("seed=-5", "seed=-5: must be a whole number from 0 to"),
    (
        "trainer.max_epochs=-1",
        "trainer.max_epochs=-1: must be a whole number at least 1 (epochs); Lightning's -1 (no end) is refused",
    ),
    ("trainer.precision=16-true", "trainer.precision=16-true: must be one of auto, 32-true, 32, bf16-mixed, 16-mixed"),
    ("trainer.precision=bf16-true", "trainer.precision=bf16-true: must be one of auto"),
    ("trainer.precision=64", "trainer.precision=64: must be one of auto"),
    ("model.input_size=0", "model.input_size=0: must be a whole number at least 1 (pixels)"),
    ("preprocess.gamma=abc", "preprocess.gamma=abc: must be a number above 0 (a gamma), or auto or null"),
    ("preprocess.gamma=0", "preprocess.gamma=0: must be a number above 0"),
    ("preprocess.gamma=-1", "preprocess.gamma=-1: must be a number above 0"),
    ("preprocess.align=maybe", "preprocess.align=maybe: must be true or false"),
]
INFER_VALUES = [
    ("detector.min_face=abc", "detector.min_face=abc: must be a whole number at least 0 (frame pixels)"),
    ("detector.min_face=-5", "detector.min_face=-5: must be a whole number at least 0"),
    ("detector=haar detector.min_face=abc", "detector.min_face=abc: must be a number above 0 and at most 1"),
    ("threads=-1", "threads=-1: must be a whole number at least 1 (threads)"),
    ("threads=abc", "threads=abc: must be a whole number at least 1"),
    ("max_frames=-1", "max_frames=-1: must be a whole number at least 1 (frames), or null"),
    ("tracker.min_iou=5", "tracker.min_iou=5: must be a number from 0 to 1"),
    ("detect_every=0", "detect_every=0: must be a whole number at least 1"),
    ("preprocess.align=maybe", "preprocess.align=maybe: must be true or false"),
    ("preprocess.gamma=0", "preprocess.gamma=0: must be a number above 0"),
]


@pytest.mark.parametrize(
    "config, checker, override, message",
    [
        *(("train", "check_train", o, m) for o, m in TRAIN_VALUES),
        *(("infer", "check_infer", o, m) for o, m in INFER_VALUES),
        ("export", "check_export", "opset=5", "opset=5: must be a whole number from 13 to 20"),
    ],
)
def test_every_typed_setting_refuses_a_bad_value_in_one_line(config, checker, override, message):
    from hydra import compose, initialize_config_dir

    from fer import config as schema
    from fer.errors import FerError

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config, overrides=override.split(), return_hydra_config=True)
    check = getattr(schema, checker)
    with pytest.raises(FerError) as refused:
        check(cfg) if config == "export" else check(cfg, cfg.hydra.runtime.choices)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_open_settings_stay_open_and_the_defaults_pass():
    from hydra import compose, initialize_config_dir

    from fer.config import check_infer, check_train

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        check_train(compose("train", overrides=["+trainer.profiler=simple", "trainer.precision=32-true"]))
        for detector in ("haar", "retinaface"):
            cfg = compose("infer", overrides=[f"detector={detector}"], return_hydra_config=True)
            check_infer(cfg, cfg.hydra.runtime.choices)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train.py", "seed=abc"], "error: seed=abc: must be a whole number from 0 to 4294967295 (a seed)"),
        (["train.py", "trainer.max_epoch=3"], "error: Could not override 'trainer.max_epoch'. Key 'max_epoch' is not in struct."),
        (["train.py", "preprocess.gamma=abc"], "error: preprocess.gamma=abc: must be a number above 0"),
        (["infer.py", "threads=-1"], "error: threads=-1: must be a whole number at least 1"),
        (["infer.py", "detector=foo"], "error: detector=foo: no such detector; choose one of haar, retinaface"),
        (["export.py", "opset=5"], "error: opset=5: must be a whole number from 13 to 20"),
    ],
)
def test_the_commands_say_a_bad_setting_in_one_line_with_exit_code_2(tmp_path, args, message):
    r = run_cli([*args, f"hydra.run.dir={tmp_path / 'run'}"] if args[0] == "train.py" else args, cwd=tmp_path)
    assert_one_line_error(r, message)
    if args[0] == "train.py" and (tmp_path / "run").exists():  # a run that failed at start-up says so in its dir
        assert (
            "seed=abc" in (tmp_path / "run" / "error.txt").read_text() or "gamma" in (tmp_path / "run" / "error.txt").read_text()
        )


@pytest.mark.slow
def test_a_refused_sweep_job_touches_no_other_jobs_files_and_is_listed_as_refused(tiny_csv, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["train.py", "-m", "seed=1,2", f"data.path={tiny_csv}", *TINY, "trainer.max_epochs=1", "calibrate=false"]
    r = run_cli([*args, f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=same"])  # both jobs name one dir
    assert r.returncode == 1 and "1 of 2 jobs were refused" in r.stderr, r.stderr[-2000:]
    job = sweep / "same"
    assert (job / ".hydra" / "overrides.yaml").read_text().count("seed=1") == 1 and "seed=2" not in (
        job / "train.log"
    ).read_text()
    assert json.loads((job / "metrics.json").read_text())["seed"] == 1 and not (job / "error.txt").exists()
    summary = (sweep / "summary.md").read_text()
    assert "| 1 | same |" in summary and "refused: " in summary and "already holds a run" in summary
    before = (sweep / "summary.md").read_text()
    r = run_cli([*args, f"hydra.sweep.dir={sweep}"])  # the same sweep dir again: refused as a whole, before any job
    assert_one_line_error(r, "already holds a sweep; choose another hydra.sweep.dir")
    assert (sweep / "summary.md").read_text() == before
