"""What a training run pays after its fit: the Training split's score and calibration, before and after
calibration looked at each split once for every TTA mode.

    python benchmarks/post_fit_cost.py [--ckpt fer/weights/fer2013_regularized.ckpt] [--repeats 1]
                                       [--out benchmarks/results/post_fit_cost.json]

The model is the shipped one (the default architecture), the faces FER2013's ($FER2013_PATH or
data/fer2013.csv), all of them, as after a default run. "before": a pass over PublicTest and one over
PrivateTest for each mode (1 + 2 + 10 views a face: the three modes' logits computed apart, as
calibration did); "after": one pass over each split with ten-crop's ten views, from which all three
modes come (fer.train.calibration.report now). The Training-split score is unchanged: one centre-crop
pass over its faces in evaluation batches. Figures are CPU seconds of wall time on this machine; on 2
cores anything else running shows up in them, so the ratio (measured alternately) says more.
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from fer.data.cache import load  # noqa: E402
from fer.data.reader import Fer2013, default_data_path, fer2013_settings  # noqa: E402
from fer.preprocess import to_network_input  # noqa: E402
from fer.runs.checkpoint import load_network  # noqa: E402
from fer.runs.runinfo import cpu_model  # noqa: E402
from fer.train.calibration import fit_temperature, split_logits, split_mode_logits  # noqa: E402
from fer.tta import TTA_MODES  # noqa: E402

EVAL_BATCH = 512  # conf/data/fer2013.yaml's eval_batch_size


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def per_mode(net, splits, mean, std, size):
    for images, labels in splits:
        for mode in TTA_MODES:
            logits = split_logits(net, images, mean, std, size, mode, EVAL_BATCH)
            if images is splits[0][0]:
                fit_temperature(logits, labels)


def one_pass(net, splits, mean, std, size):
    val = split_mode_logits(net, splits[0][0], mean, std, size, TTA_MODES, EVAL_BATCH)
    split_mode_logits(net, splits[1][0], mean, std, size, TTA_MODES, EVAL_BATCH)
    for mode in TTA_MODES:
        fit_temperature(val[mode], splits[0][1])


@torch.no_grad()
def train_split_score(net, images, mean, std, size):
    for start in range(0, len(images), EVAL_BATCH):
        net(to_network_input(images[start : start + EVAL_BATCH], mean, std, size)).argmax(1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt", default=str(ROOT / "fer" / "weights" / "fer2013_regularized.ckpt"))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "post_fit_cost.json"))
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    data = load(fer2013_settings(default_data_path(ROOT)), Fer2013())
    net, meta = load_network(args.ckpt)
    mean, std, size = meta.mean, meta.std, meta.input_size
    faces = {name: tuple(torch.from_numpy(a) for a in data.split(name)) for name in ("train", "val", "test")}
    splits = [faces["val"], faces["test"]]
    before, after, train = [], [], []
    for _ in range(args.repeats):  # alternately, so a change of load falls on both
        before.append(timed(lambda: per_mode(net, splits, mean, std, size))[1])
        after.append(timed(lambda: one_pass(net, splits, mean, std, size))[1])
        train.append(timed(lambda: train_split_score(net, faces["train"][0], mean, std, size))[1])
        print(
            f"calibration per mode {before[-1]:.1f} s, in one pass {after[-1]:.1f} s; Training split {train[-1]:.1f} s",
            flush=True,
        )
    result = {
        "command": "python benchmarks/post_fit_cost.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "cpu": cpu_model(),
        "model": meta.arch,
        "faces": {name: len(f[1]) for name, f in faces.items()},
        "calibration_s": {"before_per_mode_passes": round(min(before), 1), "after_one_pass": round(min(after), 1)},
        "calibration_speedup": round(min(before) / min(after), 2),
        "train_split_score_s": round(min(train), 1),
        "post_fit_s": {"before": round(min(before) + min(train), 1), "after": round(min(after) + min(train), 1)},
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
