"""The reports after the test are callbacks (conf/callbacks/default.yaml): each runs only when asked,
writes nothing when switched off, names splits as the data set does, and calibration looks at each
split once for every TTA mode."""

import json

import pytest
import torch

from fer.models import build_net
from fer.train import calibration
from fer.tta import TTA_MODES, eval_logits, every_mode_logits

from conftest import net_kwargs, run_cli
from test_second_dataset import CLASSES, CROP, SIZE, names_override, write_dataset

TINY = ["data.batch_size=4", "trainer.enable_progress_bar=false", "trainer.max_epochs=1"]
REPORTS = ("metrics.json", "curves.png", "confusion_test.png", "reliability.png")


@pytest.mark.parametrize("modes", [TTA_MODES, ("none",), ("flip",), ("none", "flip"), ("ten_crop", "none")])
def test_every_mode_from_one_set_of_views_equals_each_mode_alone(modes):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(44 * 44, 7)).double()
    x = torch.randn(5, 1, 48, 48, dtype=torch.double)
    with torch.no_grad():
        got = every_mode_logits(net, x, 44, modes)
        assert set(got) == set(modes)
        for mode in modes:
            torch.testing.assert_close(got[mode], eval_logits(net, x, 44, mode))


class Counting(torch.nn.Module):
    """A network that counts the images it is shown."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(44 * 44, 7))
        self.seen = []

    def forward(self, x):
        self.seen.append(len(x))
        return self.net(x)


def test_calibration_looks_at_each_split_once_for_all_modes():
    faces = torch.randint(0, 256, (40, 48, 48), dtype=torch.uint8)
    labels = torch.arange(40) % 7
    net = Counting()
    report = calibration.report(net, (faces, labels), (faces, labels), 0.5, 0.25, 44)
    assert set(report) == set(TTA_MODES)
    assert sum(net.seen) == 2 * 10 * 40  # two splits, ten views a face: what ten_crop alone needs (not 1 + 2 + 10)


def test_known_centre_crop_logits_are_not_computed_again():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(44 * 44, 7)).double()
    x = torch.randn(5, 1, 48, 48, dtype=torch.double)
    seen = []

    def forward(v):
        seen.append(len(v))
        return net(v)

    with torch.no_grad():
        whole = every_mode_logits(net, x, 44)
        reused = every_mode_logits(forward, x, 44, centre=whole["none"])
    assert sum(seen) == 9 * 5  # the other nine views only
    for mode in TTA_MODES:
        torch.testing.assert_close(reused[mode], whole[mode])


def test_calibration_takes_the_test_steps_centre_crops():
    torch.manual_seed(0)
    faces = torch.randint(0, 256, (40, 48, 48), dtype=torch.uint8)
    labels = torch.arange(40) % 7
    net = Counting()
    whole = calibration.report(net, (faces, labels), (faces, labels), 0.5, 0.25, 44)
    centre = calibration.split_logits(net, faces, 0.5, 0.25, 44, "none")  # what a test at tta=none computed
    net.seen.clear()
    reused = calibration.report(net, (faces, labels), (faces, labels), 0.5, 0.25, 44, test_centre=centre)
    assert sum(net.seen) == 10 * 40 + 9 * 40
    for mode in TTA_MODES:
        assert reused[mode]["acc"] == whole[mode]["acc"]
        assert reused[mode]["temperature"] == pytest.approx(whole[mode]["temperature"], rel=1e-4)


def test_reports_in_bfloat16_stay_close_to_fp32():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(128, 7)
    )
    faces = torch.randint(0, 256, (64, 48, 48), dtype=torch.uint8)
    fp32 = calibration.split_mode_logits(net, faces, 0.5, 0.25, 44)
    bf16 = calibration.split_mode_logits(net, faces, 0.5, 0.25, 44, bf16=True)
    for mode in TTA_MODES:
        assert bf16[mode].dtype == torch.float32
        torch.testing.assert_close(bf16[mode], fp32[mode], atol=0.05, rtol=0.05)


def test_folded_batchnorm_computes_the_same_and_gives_the_layers_back():
    torch.manual_seed(0)
    net = build_net("regularized", **net_kwargs("regularized", input_size=44))
    net.train()(torch.randn(64, 1, 44, 44))  # BatchNorm statistics of their own, not the initial 0 and 1
    net.eval()
    layers = list(net.modules())
    x = torch.randn(8, 1, 44, 44)
    with torch.no_grad():
        expected = net(x)
        with calibration.batchnorm_folded(net):
            assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
            got = net(x)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert list(net.modules()) == layers


@pytest.mark.parametrize(
    ("trained_in", "device", "native", "expected"),
    [
        ("bf16-mixed", "cpu", True, True),
        ("bf16-mixed", "cpu", False, False),  # emulated bf16 is slower than fp32
        ("32-true", "cpu", True, False),  # asked for fp32: the reports too
        ("bf16-mixed", "cuda", True, False),
    ],
)
def test_reports_compute_in_bfloat16_where_the_run_does_on_a_cpu_with_it(monkeypatch, trained_in, device, native, expected):
    from fer.train import precision

    monkeypatch.setattr(precision, "cpu_has_native_bfloat16", lambda: native)
    assert precision.reports_in_bfloat16(trained_in, device) is expected


def test_switched_off_reports_write_nothing(tiny_csv, tmp_path):
    off = [f"callbacks.{name}=null" for name in ("train_split_score", "calibration", "figures", "metrics_json")]
    r = run_cli(["train.py", f"data.path={tiny_csv}", *TINY, *off, f"hydra.run.dir={tmp_path}"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()  # the run itself is whole
    assert not [name for name in REPORTS if (tmp_path / name).exists()]
    assert "calibrating" not in r.stdout and "evaluating the" not in r.stdout


def test_the_switches_leave_out_the_costly_reports_and_keep_the_rest(tiny_csv, tmp_path):
    off = ["eval_train_split=false", "calibrate=false"]
    r = run_cli(["train.py", f"data.path={tiny_csv}", *TINY, *off, f"hydra.run.dir={tmp_path}"])
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["train"]["acc"] is None and "calibration" not in m and not (tmp_path / "reliability.png").exists()
    assert (tmp_path / "curves.png").is_file() and (tmp_path / "confusion_test.png").is_file()


@pytest.mark.slow
def test_an_evaluation_pays_for_the_test_alone_unless_asked(tiny_run, fer2013_path, tmp_path, monkeypatch):
    # train=false with the defaults on (eval_train_split, calibrate): the test split only.
    from fer.train.callbacks import calibrate, train_split

    ran = []
    monkeypatch.setattr(calibrate.calibration, "report", lambda *a, **k: ran.append("calibration"))
    monkeypatch.setattr(train_split, "split_logits", lambda *a, **k: ran.append("train split"))
    ckpt = next((tiny_run / "checkpoints").glob("best-*.ckpt"))
    args = ["train=false", f"ckpt_path={ckpt}", f"data.path={fer2013_path}", "trainer.limit_test_batches=2"]
    r = run_cli(["train.py", *args, f"hydra.run.dir={tmp_path}"])
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert ran == [] and m["evaluated_only"] and "calibration" not in m and m["train"]["acc"] is None
    assert not (tmp_path / "checkpoints").exists()  # no calibrated copy


@pytest.mark.slow
def test_a_folder_data_set_reports_its_own_split_names(tmp_path, monkeypatch):
    from fer.train import plots

    titles = []
    confusion = plots.confusion_figure
    monkeypatch.setattr(plots, "confusion_figure", lambda *a: titles.append(a[2]) or confusion(*a))
    root = write_dataset(tmp_path / "patterns", {"train": 12, "test": 4})
    r = run_cli(
        [
            "train.py",
            "data=folders",
            f"data.path={root}",
            names_override(CLASSES),
            f"data.image_size={SIZE}",
            *CROP,
            *TINY,
            "trainer.limit_train_batches=2",
            "calibrate=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ]
    )
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["split_names"] == {"train": "train", "val": "validation", "test": "test"}
    assert titles and all("PrivateTest" not in t and "test accuracy" in t for t in titles), titles
    assert "PrivateTest" not in r.stdout + r.stderr and "PublicTest" not in r.stdout + r.stderr
