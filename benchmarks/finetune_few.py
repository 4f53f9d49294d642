"""What fine-tuning the shipped model on a small folder of faces gives, for 5, 20 and 100 faces a class
(docs/training.md, "Fine-tuning on few faces").

    python benchmarks/finetune_few.py                      # writes benchmarks/results/finetune_few.json
    python benchmarks/finetune_few.py --sizes 5 --repeats 1

Each run is the documented command, `train.py experiment=finetune data.path=my_faces`, on a folder of
N FER2013 PrivateTest faces of each of four classes (Happy, Sad, Surprise, Neutral: faces the shipped
model was not trained on), drawn afresh for each repeat. Besides what the run itself reports (its
test accuracy on the folder's held-out faces, and the shipped model's on the same faces), the shipped
model and the run's best checkpoint are both scored on 1,000 other PrivateTest faces of those classes
(250 each, the same for every run): the change a user can expect, next to the change the log shows.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from fer.runs.runinfo import cpu_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLASSES = {"happy": 3, "sad": 4, "surprise": 5, "neutral": 6}  # FER2013's labels
HELD_OUT = 250  # a class: the last faces of each class, never in a folder
SHIPPED = ROOT / "fer" / "weights" / "fer2013_regularized.ckpt"


def accuracy(ckpt: Path, images: np.ndarray, labels: np.ndarray) -> float:
    import torch

    from fer.preprocess import to_network_input
    from fer.runs.checkpoint import load_network

    net, meta = load_network(ckpt)
    with torch.no_grad():
        x = to_network_input(torch.from_numpy(images), meta.mean, meta.std, meta.input_size)
        return float((net(x).argmax(1).numpy() == labels).mean())


def one_run(pools: dict, n: int, repeat: int, held: tuple, extra: list[str], work: Path) -> dict:
    rng = np.random.default_rng([n, repeat])
    folder = work / f"faces{n}_{repeat}"
    for name, pool in pools.items():
        (folder / name).mkdir(parents=True)
        for i, face in enumerate(pool[rng.permutation(len(pool))[:n]]):
            cv2.imwrite(str(folder / name / f"{i:03d}.png"), face)
    run = work / f"run{n}_{repeat}"
    t0 = time.perf_counter()
    cmd = [sys.executable, "train.py", "experiment=finetune", f"data.path={folder}", "eval_train_split=false"]
    cmd += ["trainer.enable_progress_bar=false", *extra, f"hydra.run.dir={run}"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    m = json.loads((run / "metrics.json").read_text())
    best = Path(m["test"]["checkpoint"])
    log = (run / "train.log").read_text()
    return {
        "faces_a_class": n,
        "repeat": repeat,
        "folder_test_faces": m["init_from"]["test_faces"],
        "folder_test_acc_start": m["init_from"]["test_acc"],
        "folder_test_acc_tuned": m["test"]["acc"],
        "best_epoch": m["val"]["best_epoch"],
        "held_out_acc_start": accuracy(SHIPPED, *held),
        "held_out_acc_tuned": accuracy(best, *held),
        "calibrated": "skipped" not in (m.get("calibration") or {"skipped": "off"}),
        "warned_few": "few faces to train on" in log,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def points(row: dict, where: str) -> float:
    return round(100 * (row[f"{where}_acc_tuned"] - row[f"{where}_acc_start"]), 1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[5, 20, 100])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--extra", nargs="*", default=[], help="more train.py overrides, e.g. callbacks=freeze_features")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "finetune_few.json")
    args = p.parse_args()

    from fer.data.cache import load
    from fer.data.reader import Fer2013, default_data_path, fer2013_settings

    images, labels = load(fer2013_settings(default_data_path()), Fer2013()).split("test")
    pools, held_images, held_labels = {}, [], []
    for name, c in CLASSES.items():
        faces = images[labels == c]
        pools[name] = faces[:-HELD_OUT]
        held_images.append(faces[-HELD_OUT:])
        held_labels += [c] * HELD_OUT
    held = (np.concatenate(held_images), np.asarray(held_labels))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            for repeat in range(args.repeats):
                rows.append(one_run(pools, n, repeat, held, args.extra, Path(tmp)))
                print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for n in args.sizes:
        mine = [r for r in rows if r["faces_a_class"] == n]
        summary[str(n)] = {
            "held_out_change_points": [points(r, "held_out") for r in mine],
            "folder_test_change_points": [points(r, "folder_test") for r in mine],
            "folder_test_faces": mine[0]["folder_test_faces"],
            "seconds": [r["seconds"] for r in mine],
        }
    result = {"cpu": cpu_model(), "extra": args.extra, "held_out_faces": len(held[1]), "summary": summary, "runs": rows}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
