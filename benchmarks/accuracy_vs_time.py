"""Accuracy against training time for the recipes tried: which gives the most per CPU-hour.

    python benchmarks/accuracy_vs_time.py "regularized 50 ep=outputs/runs/paper_regularized_timed" \
        "vgg 48-384=outputs/runs/vgg_wide_seed42" ... [--out docs/accuracy_vs_time.png]

    python benchmarks/accuracy_vs_time.py --recorded benchmarks/results/accuracy_vs_time.json \
        "cycle 1 (warm start)=$HOME/fer-runs/cycle1" --continues "cycle 1 (warm start)=regularized, 50 epochs (cycle 0)"

Each argument is LABEL=RUN_DIR (a train.py run dir with metrics.json, or a running one: its
last.ckpt's history is read instead), or LABEL=RUN_DIR@MINUTES for a run whose history has no
per-epoch times and whose wall time is not its training's (the `train=false` evaluation of a
checkpoint, such as the shipped model's): MINUTES is how long its training took, spread evenly
over the epochs. Per epoch, the validation (PublicTest) accuracy is plotted
against the wall time trained so far (`time_s` in the history; runs from before it was recorded
spread their wall time evenly over their epochs). A finished run adds its PrivateTest accuracy at
its end: a filled marker for the centre crop, an open one for ten-crop TTA. The figures also go to
a JSON file beside the PNG's name in benchmarks/results/.

Training cycles: a run that started from another run's weights (init_from=) is drawn at
the cumulative time, after the run it continued: --continues "LABEL=EARLIER_LABEL". --recorded
FILE brings back the runs of an earlier JSON of this script (run dirs do not outlive their session).
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # the figure goes to a file: no display needed
import matplotlib.pyplot as plt  # noqa: E402

from fer.runs.checkpoint import read_checkpoint  # noqa: E402
from fer.train import plots  # noqa: E402


def load_run(run_dir: Path, train_minutes: float | None = None) -> dict:
    metrics_file = run_dir / "metrics.json"
    if metrics_file.exists():
        m = json.loads(metrics_file.read_text())
        history, finished = m["history"], True
    else:
        history, m, finished = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["fer"]["history"], {}, False
    if history and "time_s" not in history[-1]:
        # From the whole run's wall time, or for a running one from its start to its last checkpoint.
        # Or from the training time given on the command line, when the run dir is an evaluation's.
        wall = (
            train_minutes * 60
            if train_minutes
            else (
                m.get("wall_time_s")
                or (
                    (run_dir / "checkpoints" / "last.ckpt").stat().st_mtime - (run_dir / ".hydra" / "config.yaml").stat().st_mtime
                )
            )
        )
        per_epoch = wall / max(len(history), 1)
        history = [{**h, "time_s": per_epoch * (i + 1)} for i, h in enumerate(history)]
    points = [(h["time_s"] / 60, h["val/acc"]) for h in history if "val/acc" in h]
    result = {
        "run_dir": str(run_dir),
        "finished": finished,
        "epochs": len(history),
        "minutes": round(history[-1]["time_s"] / 60, 1) if history else 0.0,
        "best_val_acc": max((a for _, a in points), default=None),
        "val_curve": points,
    }
    if finished:
        calibration = m.get("calibration") or {}
        # metrics.json's "test" holds the run's own TTA mode; the calibration report has each mode's
        result["test_acc"] = calibration["none"]["acc"] if "none" in calibration else m["test"]["acc"]
        if "ten_crop" in calibration:
            result["test_acc_ten_crop"] = calibration["ten_crop"]["acc"]
    return result


def continued(run: dict, earlier: dict) -> dict:
    """A training cycle drawn after the run whose weights it started from: its minutes cumulative."""
    if run.get("starts_at_minutes") is not None:  # already shifted (a recorded run)
        return run
    start = earlier["minutes"]
    return {
        **run,
        "starts_at_minutes": start,
        "minutes": round(start + run["minutes"], 1),
        "val_curve": [(start + t, a) for t, a in run["val_curve"]],
    }


def figure(runs: dict[str, dict]):
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    for label, r in runs.items():
        xs, ys = zip(*r["val_curve"]) if r["val_curve"] else ((), ())
        (line,) = ax.plot(xs, ys, "-", lw=1.5, label=f"{label} (PublicTest per epoch)")
        if r["finished"]:
            ax.plot([r["minutes"]], [r["test_acc"]], "o", color=line.get_color(), ms=7)
            if "test_acc_ten_crop" in r:
                ax.plot([r["minutes"]], [r["test_acc_ten_crop"]], "o", mfc="none", color=line.get_color(), ms=9)
    ax.plot([], [], "ko", label="PrivateTest, centre crop")
    ax.plot([], [], "ko", mfc="none", label="PrivateTest, ten-crop TTA")
    ax.set(
        xlabel="training wall time, cumulative over cycles (minutes, 2-core CPU)",
        ylabel="accuracy",
        title="Accuracy per CPU time, by recipe",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR")
    parser.add_argument("--out", default=str(ROOT / "docs" / "accuracy_vs_time.png"))
    parser.add_argument("--recorded", help="a JSON this script wrote: its runs are drawn again")
    parser.add_argument(
        "--continues",
        action="append",
        default=[],
        metavar="LABEL=EARLIER_LABEL",
        help="LABEL's run started from EARLIER_LABEL's weights: drawn after it, in cumulative minutes",
    )
    args = parser.parse_args()
    runs = json.loads(Path(args.recorded).read_text()) if args.recorded else {}
    for spec in args.runs:
        label, _, path = spec.partition("=")  # run dirs of a sweep hold "=" themselves
        if not label:
            sys.exit(f"{spec}: give LABEL=RUN_DIR")
        path, _, minutes = path.partition("@")
        runs[label] = load_run(Path(path), float(minutes) if minutes else None)
    for spec in args.continues:
        label, _, earlier = spec.partition("=")
        if label not in runs or earlier not in runs:
            sys.exit(f"--continues {spec}: both labels must be runs given here (or --recorded)")
        runs[label] = continued(runs[label], runs[earlier])
    out = Path(args.out)
    plots.save(figure(runs), out)
    result = ROOT / "benchmarks" / "results" / f"{out.stem}.json"
    result.write_text(
        json.dumps(
            {
                label: {k: v for k, v in r.items() if k != "val_curve"}
                | {"val_curve": [[round(t, 2), round(a, 4)] for t, a in r["val_curve"]]}
                for label, r in runs.items()
            },
            indent=1,
        )
    )
    for label, r in runs.items():
        test = f"test {100 * r['test_acc']:.2f}%" if r["finished"] else "running"
        print(f"{label}: {r['epochs']} epochs, {r['minutes']} min, best val {100 * (r['best_val_acc'] or 0):.2f}%, {test}")
    print(f"wrote {out} and {result}")


if __name__ == "__main__":
    main()
