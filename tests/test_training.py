"""Real (short) training runs: in-process for the module, through `python train.py` for the product."""

import csv
import json
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fer.preprocess import to_network_input
from fer.runs.checkpoint import load_network
from fer.train.module import EmotionClassifier

from conftest import run_cli

CONF = Path(__file__).resolve().parents[1] / "conf"
LIMITS = [
    "trainer.limit_train_batches=8",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.enable_progress_bar=false",
    "data.batch_size=64",
    "data.eval_batch_size=32",
]
EVAL_FACES = 2 * 32  # 2 batches of 32 faces to test, and to calibrate on (each TTA mode: ten-crop is 10 views a face)


def build(overrides):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    return instantiate(cfg.model), instantiate(cfg.data)


def test_short_fit_on_real_faces_lowers_the_loss_and_checkpoint_round_trips(fer2013_path, tmp_path, real_faces):
    L.seed_everything(0)
    # 3 epochs of 10 batches of 64 at 3x the baseline's learning rate: the loss falls by ~0.2 (at lr 1e-3 and 15
    # batches of 128, by 0.06, in 3x the time); validated on 2 batches of 64 faces
    model, dm = build(
        [
            "model=baseline",
            f"data.path={fer2013_path}",
            "data.augment=null",
            "data.batch_size=64",
            "data.eval_batch_size=64",
            "model.optimizer.lr=0.003",
        ]
    )
    trainer = L.Trainer(
        max_epochs=3,
        limit_train_batches=10,
        limit_val_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    losses = [h["train/loss"] for h in model.history]
    assert len(losses) == 3 and losses[-1] < losses[0] - 0.05, losses
    assert all("val/acc" in h for h in model.history)
    # the checkpoint alone rebuilds the same network: same logits, no Hydra involved
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    images = torch.from_numpy(real_faces[0])
    model.eval()
    with torch.no_grad():
        expected = model(to_network_input(images, dm.mean, dm.std, model.input_size))
        net, meta = load_network(tmp_path / "m.ckpt")
        got = net(to_network_input(images, meta.mean, meta.std, meta.input_size))
    assert torch.allclose(expected, got, atol=1e-5)  # channels_last vs plain layout: same maths, other summation order
    assert meta.class_names[3] == "Happy" and abs(meta.mean - dm.mean) < 1e-6
    assert meta.net["arch"] == "baseline" and meta.net["dropout"] == 0.0  # dropout: a setting of the network
    reloaded = EmotionClassifier.from_checkpoint(tmp_path / "m.ckpt")
    assert len(reloaded.history) == 3


@pytest.mark.slow
def test_same_seed_same_result(tiny_csv, tmp_path):
    def once(d):
        r = run_cli(
            [
                "train.py",
                f"data.path={tiny_csv}",
                "data.batch_size=4",
                "trainer.max_epochs=2",
                "model=baseline",
                "trainer.enable_progress_bar=false",
                f"hydra.run.dir={d}",
            ]
        )
        assert r.returncode == 0, r.stderr[-2000:]
        history = json.loads((d / "metrics.json").read_text())["history"]
        return [{k: v for k, v in h.items() if k != "time_s"} for h in history]  # all but the clock

    assert once(tmp_path / "a") == once(tmp_path / "b")


@pytest.mark.slow
def test_ema_weights_are_validated_checkpointed_and_tested(tiny_csv, tmp_path):
    # `python train.py callbacks=ema callbacks.ema.decay=...` on the default model, shrunk
    args = [
        f"data.path={tiny_csv}",
        "data.batch_size=4",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "eval_train_split=false",
        "calibrate=false",
    ]
    r = run_cli(["train.py", *args, "callbacks=ema", "callbacks.ema.decay=0.5", f"hydra.run.dir={tmp_path / 'ema'}"])
    assert r.returncode == 0, r.stderr[-2000:]
    best = next((tmp_path / "ema" / "checkpoints").glob("best-*.ckpt"))
    ckpt = torch.load(best, weights_only=True)
    raw, averaged = ckpt["current_model_state"], ckpt["state_dict"]
    assert not torch.equal(raw["net.classifier.0.weight"], averaged["net.classifier.0.weight"])
    assert (
        torch.equal(raw["pixel_mean"], averaged["pixel_mean"]) and float(averaged["pixel_mean"]) != 0.5
    )  # the data's, not the default
    # The run's test figures are those of the averaged weights: evaluating the checkpoint alone gives the same.
    r = run_cli(["train.py", "train=false", f"ckpt_path={best}", *args, f"hydra.run.dir={tmp_path / 'eval'}"])
    assert r.returncode == 0, r.stderr[-2000:]
    trained = json.loads((tmp_path / "ema" / "metrics.json").read_text())["test"]
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())["test"]
    assert trained["loss"] == pytest.approx(evaluated["loss"], rel=1e-5)
    r = run_cli(["train.py", *args, "callbacks=ema", "callbacks.ema.decay=1.5", f"hydra.run.dir={tmp_path / 'bad'}"])
    assert r.returncode == 2 and "callbacks.ema.decay must lie between 0 and 1" in r.stderr and "Traceback" not in r.stderr


TINY_DEFAULT = ["data.batch_size=4", "trainer.enable_progress_bar=false", "eval_train_split=false", "calibrate=false"]


def test_early_stopping_stops_a_run_that_no_longer_improves(tiny_csv, tmp_path):
    # min_delta=1: no epoch after the first counts as better, so patience=1 stops after the second of ten
    r = run_cli(
        [
            "train.py",
            f"data.path={tiny_csv}",
            *TINY_DEFAULT,
            "trainer.max_epochs=10",
            "callbacks=early_stopping",
            "callbacks.early_stopping.patience=1",
            "callbacks.early_stopping.min_delta=1.0",
            f"hydra.run.dir={tmp_path}",
        ]
    )
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["epochs"] == 2 and len(m["history"]) == 2
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and len(list((tmp_path / "checkpoints").glob("best-*.ckpt"))) == 1


def test_csv_logger_writes_metrics_csv_and_the_face_settings_reach_the_checkpoint_alone(tiny_csv, tmp_path):
    # logger=csv: plain files, no TensorBoard, and the confusion figures skipped without a word;
    # preprocess.*: stored in every checkpoint's meta under "face", not in the module or its hparams.
    r = run_cli(
        [
            "train.py",
            f"data.path={tiny_csv}",
            *TINY_DEFAULT,
            "trainer.max_epochs=2",
            "logger=csv",
            "preprocess.gamma=1.2",
            "preprocess.align=false",
            f"hydra.run.dir={tmp_path}",
        ]
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (tmp_path / "tensorboard").exists() and "Traceback" not in r.stderr and "add_figure" not in r.stdout + r.stderr
    with open(tmp_path / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len([row for row in rows if row.get("val/acc")]) == 2 and any(row.get("test/acc") for row in rows)
    assert any(row.get("hp/test_acc") for row in rows)  # the run's final figures, as the TensorBoard run has them
    hparams = yaml.safe_load((tmp_path / "csv" / "hparams.yaml").read_text())
    assert hparams["preprocess"]["gamma"] == 1.2 and hparams["model"]["net"]["dropout"] == 0.4
    face = {"align": False, "margin": 0.0, "gamma": 1.2}
    for ckpt_path in (tmp_path / "checkpoints").glob("*.ckpt"):
        ckpt = torch.load(ckpt_path, weights_only=True)
        assert ckpt["fer"]["face"] == face and "preprocess" not in ckpt["fer"], ckpt_path
        assert "face" not in str(ckpt.get("hyper_parameters", {})) and "gamma" not in str(ckpt.get("hyper_parameters", {}))
    model = EmotionClassifier.from_checkpoint(next((tmp_path / "checkpoints").glob("best-*.ckpt")))
    assert "face" not in model.hparams and "preprocess" not in model.hparams and not hasattr(model, "preprocess")


@pytest.fixture(scope="module")
def real_run(fer2013_path, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "r"
    r = run_cli(["train.py", f"data.path={fer2013_path}", "trainer.max_epochs=2", *LIMITS, f"hydra.run.dir={run_dir}"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return run_dir, r


@pytest.mark.xdist_group("real_run")  # its module-scoped real_run, made once, on one worker
def test_real_run_writes_everything_a_user_looks_for(real_run):
    run_dir, r = real_run
    assert "run dir:" in r.stdout and "test" in r.stdout
    log_file = (run_dir / "train.log").read_text()
    assert f"run dir: {run_dir}" in log_file and "regularized: train " in log_file  # the summary reaches train.log too
    # each long step after training says what it does, and on how many faces, before it starts
    assert "testing " in log_file and f"on PrivateTest: {EVAL_FACES} faces" in log_file
    assert "evaluating the Training split: 512 faces" in log_file
    for name in ("metrics.json", "curves.png", "confusion_test.png", ".hydra/config.yaml", "checkpoints/last.ckpt", "train.log"):
        assert (run_dir / name).exists(), name
    assert len(list((run_dir / "checkpoints").glob("best-*.ckpt"))) == 1
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["epochs"] == 2 and 0 <= m["test"]["acc"] <= 1 and m["val"]["acc"] is not None and m["train"]["acc"] is not None
    assert len(m["test"]["confusion_matrix"]) == 7 and set(m["test"]["recall"]) >= {"Angry", "Happy"}
    assert {"seed", "git_commit", "versions", "device", "wall_time_s"} <= set(m)
    assert all(h["time_s"] > 0 for h in m["history"]) and m["history"][1]["time_s"] > m["history"][0]["time_s"]


@pytest.mark.xdist_group("real_run")  # its module-scoped real_run, made once, on one worker
def test_real_run_calibrates_every_tta_mode_and_stores_the_temperatures(real_run):
    run_dir, r = real_run
    m = json.loads((run_dir / "metrics.json").read_text())
    calibration = m["calibration"]
    assert {"none", "flip", "ten_crop"} <= set(calibration)
    assert calibration["none"]["acc"] == pytest.approx(m["test"]["acc"], abs=1e-6)  # same faces, same centre crop
    for mode in ("none", "flip", "ten_crop"):
        c = calibration[mode]
        assert c["temperature"] > 0 and 0 <= c["reliability"]["ece"] <= 1 and 0 <= c["reliability_calibrated"]["ece"] <= 1
    assert (run_dir / "reliability.png").stat().st_size > 10_000
    best = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    _, meta = load_network(best)
    assert meta.temperature == pytest.approx({k: calibration[k]["temperature"] for k in ("none", "flip", "ten_crop")})
    assert "test by TTA mode:" in r.stdout
    assert f"fitted on {EVAL_FACES} PublicTest faces, judged on {EVAL_FACES} PrivateTest faces, one pass over each" in r.stdout


@pytest.mark.xdist_group("real_run")  # its module-scoped real_run, made once, on one worker
def test_tensorboard_holds_per_epoch_metrics_confusion_images_and_hparams(real_run):
    run_dir, _ = real_run
    ea = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    tags = ea.Tags()
    assert [e.step for e in ea.Scalars("val/acc")] and len(ea.Scalars("val/acc")) == 2
    for key in ("train/loss", "train/acc", "val/loss", "val/f1_macro", "train/lr", "test/acc"):
        assert key in tags["scalars"], key
    assert not any(t.startswith("val/") and "test" in t for t in tags["scalars"])
    assert len(ea.Images("val/confusion_matrix")) == 2 and len(ea.Images("test/confusion_matrix")) == 1
    assert "hp/test_acc" in tags["scalars"]
    assert "_hparams_/session_start_info" in ea.summary_metadata  # the HPARAMS tab


@pytest.mark.xdist_group("real_run")  # its module-scoped real_run, made once, on one worker
def test_evaluate_a_checkpoint_on_the_test_split(real_run, tmp_path, fer2013_path):
    run_dir, _ = real_run
    best = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    before = best.read_bytes()

    def evaluate(name, *extra):
        r = run_cli(
            [
                "train.py",
                "train=false",
                f"ckpt_path={best}",
                f"data.path={fer2013_path}",
                "trainer.limit_test_batches=2",
                "trainer.limit_val_batches=2",
                "data.eval_batch_size=32",
                "trainer.enable_progress_bar=false",
                *extra,
                f"hydra.run.dir={tmp_path / name}",
            ]
        )
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads((tmp_path / name / "metrics.json").read_text()), r

    original = json.loads((run_dir / "metrics.json").read_text())
    # The test split and nothing else: no Training split, no calibration, nothing written beside the checkpoint.
    evaluated, r = evaluate("eval")
    assert evaluated["test"]["acc"] == pytest.approx(original["test"]["acc"]) and evaluated["evaluated_only"]
    assert "calibration" not in evaluated and evaluated["train"]["acc"] is None
    assert "calibrating" not in r.stdout and "evaluating the Training split" not in r.stdout
    assert not (tmp_path / "eval" / "checkpoints").exists() and not (tmp_path / "eval" / "reliability.png").exists()
    # Calibration when asked: the evaluated checkpoint is left alone; its calibrated copy goes into the new run dir.
    calibrated, _ = evaluate("calibrated", "callbacks=calibrate")
    assert calibrated["calibration"]["stored_in"] == str(tmp_path / "calibrated" / "checkpoints" / "calibrated.ckpt")
    assert load_network(tmp_path / "calibrated" / "checkpoints" / "calibrated.ckpt")[1].temperature["none"] > 0
    assert best.read_bytes() == before


# --- short runs of the default model: the one-cycle schedule, and debug=smoke -------------------------


def test_one_cycle_schedule_is_defined_for_every_positive_number_of_steps():
    # torch's OneCycleLR divides by zero when its warm-up is exactly one step (4 steps at pct_start=0.25)
    from fer.train.module import _one_cycle_warmup

    for steps, pct_start in ((s, p) for s in range(1, 65) for p in (0.25, 0.1, 0.2, 0.3, 0.5, 1 / 3)):
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.05)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=0.05, total_steps=steps, **{"pct_start": pct_start, **_one_cycle_warmup(pct_start, steps)}
        )
        lrs = []
        for _ in range(steps):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        assert all(0 < lr <= 0.05 for lr in lrs), (pct_start, lrs)


@pytest.mark.slow
@pytest.mark.parametrize(
    "shrink",
    [["trainer.max_epochs=1", "trainer.limit_train_batches=4"], ["trainer.max_epochs=2", "trainer.limit_train_batches=2"]],
    ids=["4-steps", "2x2-steps"],
)
def test_short_runs_of_the_default_recipe_train(fer2013_path, tmp_path, shrink):
    # The one-cycle schedule with a warm-up of exactly one step: a ZeroDivisionError before the fix
    # (model=vgg shares the schedule; debug=smoke runs it).
    r = run_cli(
        [
            "train.py",
            f"data.path={fer2013_path}",
            *shrink,
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            "eval_train_split=false",
            "calibrate=false",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={tmp_path}",
        ]
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["epochs"] == int(shrink[-2].split("=")[1]) and all(h["lr"] > 0 for h in m["history"])


NOISE = ["LeafSpec", "litlogger", "log_every_n_steps", "Loading `train_dataloader`"]


@pytest.mark.slow
@pytest.mark.parametrize("model", [None, "baseline", "vgg"], ids=["default", "baseline", "vgg"])
def test_debug_smoke_checks_the_whole_path_of_every_model(fer2013_path, tmp_path, model):
    # As a user types it (warnings not silenced): `python train.py debug=smoke [model=...]`
    r = run_cli(
        [
            "train.py",
            "debug=smoke",
            *([f"model={model}"] if model else []),
            f"data.path={fer2013_path}",
            f"hydra.run.dir={tmp_path}",
        ],
        env={"PYTHONWARNINGS": ""},
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["model"] == (model or "regularized") and m["epochs"] == 1
    assert m["train"]["acc"] is None and "calibration" not in m  # neither the train-split evaluation nor calibration ran
    assert (tmp_path / "checkpoints" / "last.ckpt").exists() and (tmp_path / "tensorboard").is_dir()
    out = r.stdout + r.stderr
    assert not [n for n in NOISE if n in out], out[-3000:]


@pytest.mark.slow
def test_a_bf16_run_prints_no_notice_from_the_model_summary(tiny_csv, tmp_path):
    # The summary counts mixed precision's fp32 weights at 32 bits, rightly; its notice that it cannot is noise.
    r = run_cli(
        [
            "train.py",
            "debug=smoke",
            "trainer.precision=bf16-mixed",  # what auto picks on CPUs with native bfloat16
            f"data.path={tiny_csv}",
            "data.batch_size=8",
            f"hydra.run.dir={tmp_path}",
        ],
        env={"PYTHONWARNINGS": ""},  # as a user sees it: a new process, warnings on
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "precision: bf16-mixed" in out and "Total params" in out  # trained in bf16, and the summary was printed
    assert "not supported by the model summary" not in out, out[-3000:]
