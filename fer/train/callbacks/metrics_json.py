"""After the test, last of the reports: metrics.json (what the run found, with what, on what) and the
summary lines. It reads what the callbacks before it left in the module's `reports`."""

import json
import logging
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from fer.runs import runinfo

log = logging.getLogger(__name__)


class MetricsJson(Callback):
    def __init__(self, run_dir: str, seed: int, overrides: list[str], trained: bool = True, ckpt_path=None):
        self.run_dir, self.seed, self.overrides = Path(run_dir), seed, list(overrides)
        self.trained, self.ckpt_path = trained, ckpt_path
        self.started = time.time()  # built with the run's other objects, before its data is read

    def on_test_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        metrics = self.metrics(trainer, pl_module, time.time() - self.started)
        (self.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        pl_module.reports["metrics"] = metrics
        for line in summary(metrics, self.run_dir).splitlines():
            log.info(line)  # through logging, one record a line: Hydra's handlers print it and write it to train.log

    def metrics(self, trainer, pl_module, wall: float) -> dict:
        history, test, reports = pl_module.history, pl_module.test_results, pl_module.reports
        by, best = _best_epoch(trainer, history)
        train_split = reports.get("train_split")
        metrics = {
            "model": pl_module.net_spec["arch"],
            "train": {
                "acc": train_split["acc"] if train_split else None,
                "acc_augmented_last_epoch": history[-1]["train/acc"] if history else None,
            },
            "val": {
                "acc": best["val/acc"] if best else None,
                "f1_macro": best["val/f1_macro"] if best else None,
                "best_epoch": best["epoch"] + 1 if best else None,
                "best_by": by,
            },
            "test": {
                "acc": test["test/acc"],
                "f1_macro": test["test/f1_macro"],
                "loss": test["test/loss"],
                "recall": test["recall"],
                "confusion_matrix": test["confmat"],
                "checkpoint": str(trainer.ckpt_path or self.ckpt_path or ""),
                "tta": pl_module.tta,
            },
            "class_names": pl_module.class_names,
            "split_names": dict(trainer.datamodule.split_names),
            "epochs": len(history),
            # evaluated only: epochs and history are then the checkpoint's training, the wall time this evaluation's
            "evaluated_only": not self.trained,
            "wall_time_s": round(wall, 1),
            "device": runinfo.device_description(str(trainer.strategy.root_device)),
            "precision": trainer.precision,
            "seed": self.seed,
            "overrides": self.overrides,
            "git_commit": runinfo.git_commit(),
            "versions": runinfo.versions(),
            "history": history,
        }
        for key in ("calibration", "init_from"):
            if key in reports:
                metrics[key] = reports[key]
        return metrics


def _best_epoch(trainer, history: list[dict]) -> tuple[str, dict | None]:
    """(metric, history row) of the best epoch, chosen as the checkpoint that ranks epochs chose it (val/acc, or
    val/loss on few validation faces: fer.runs.saving.RunCheckpoint), so the figures are those of the tested model."""
    ranker = next((c for c in trainer.checkpoint_callbacks if c.monitor), None)
    by, mode = (ranker.monitor, ranker.mode) if ranker and any(ranker.monitor in h for h in history) else ("val/acc", "max")
    rows = [h for h in history if by in h]
    pick = min if mode == "min" else max  # both keep the first of equals, as the checkpoint does
    return by, pick(rows, key=lambda h: h[by], default=None)


def summary(m: dict, run_dir: Path) -> str:
    def pct(x):
        return "-" if x is None else f"{100 * x:.2f}%"

    by = m["val"].get("best_by", "val/acc")
    epoch = f"epoch {m['val']['best_epoch']}" + ("" if by == "val/acc" else f", best {by}")
    return (
        f"{m['model']}: train {pct(m['train']['acc'])}  val {pct(m['val']['acc'])} ({epoch})  "
        f"test {pct(m['test']['acc'])}  test macro-F1 {pct(m['test']['f1_macro'])}  "
        f"{_duration_text(m)}{_calibration_line(m.get('calibration'))}\nrun dir: {run_dir}"
    )


def _calibration_line(report: dict | None) -> str:
    if not report:
        return ""
    if "skipped" in report:
        return f"\n{report['skipped']}"
    parts = [
        f"{mode} {100 * r['acc']:.2f}% "
        f"(ECE {100 * r['reliability']['ece']:.1f} -> {100 * r['reliability_calibrated']['ece']:.1f}, "
        f"T {r['temperature']:.2f})"
        for mode, r in report.items()
        if isinstance(r, dict)
    ]
    return "\ntest by TTA mode: " + ", ".join(parts)


def _duration_text(m: dict) -> str:
    wall = f"{m['wall_time_s'] / 60:.1f} min"
    if m.get("evaluated_only"):
        return f"evaluated in {wall}"
    history = m.get("history") or []
    if not history or "time_s" not in history[-1]:
        return f"{m['epochs']} epochs in {wall}"
    # The epochs' own clock: a resumed run's wall time covers only its last leg (and the test).
    training = history[-1]["time_s"] / 60
    return f"{m['epochs']} epochs in {training:.1f} min of training (this run {wall}, test and calibration included)"
