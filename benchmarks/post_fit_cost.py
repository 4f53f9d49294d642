"""What a default run pays after its fit, and what share of the whole run that is: the Training split's
score and calibration (fer/train/callbacks/), timed inside a test as a run times them.

    python benchmarks/post_fit_cost.py [--label after] [--epochs 1 | --epoch-s 44] [--repeats 1] [--threads N]
                                       [--ckpt fer/weights/fer2013_regularized.ckpt] [override ...]

The run is `python train.py`'s: the config is composed from conf/ (Hydra overrides after the options,
e.g. trainer.precision=32-true), the faces are FER2013's ($FER2013_PATH or data/fer2013.csv), all of them.
  - the epoch: one fit of the default model for --epochs epochs (training and validation, as the run's
    history times them); --epoch-s takes a figure from a run instead (its metrics.json history time_s);
  - the post-fit: the shipped model (the default architecture) tested with the two callbacks a default run
    has, each callback's on_test_end timed; --repeats takes the fastest;
  - the share: post-fit seconds over a default run's wall time, max_epochs epochs + test + post-fit.
Each is timed twice: wall seconds, and CPU seconds (the process's threads together). On a machine shared
with other work the wall seconds follow its load, which can change between the epoch and the post-fit;
the CPU seconds follow it less, so their share is the steadier figure there (on a quiet machine the two agree).
With two threads and other work on the cores, though, a thread waiting for its partner spins, and training's
many small steps wait more often than evaluation's large batches: --threads 1 leaves no partner to wait
for, and its CPU-second share is the figure that least depends on what else runs.
The accuracies and temperatures the callbacks found go into the result too, so a faster path that changes
them shows. Results are kept by --label in the JSON (before/after side by side).
"""

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402

from fer.runs.runinfo import cpu_model  # noqa: E402
from fer.train import precision  # noqa: E402
from fer.train.callbacks.calibrate import Calibrate  # noqa: E402
from fer.train.callbacks.train_split import TrainSplitScore  # noqa: E402
from fer.train.module import EmotionClassifier  # noqa: E402

QUIET = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def compose_run(overrides: list[str]):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


def trainer_for(cfg, callbacks=(), **kwargs):
    chosen, _ = precision.choose(cfg.trainer.precision, cfg.trainer.accelerator)
    return instantiate(cfg.trainer, callbacks=list(callbacks), precision=chosen, **QUIET, **kwargs), chosen


class Clocks:
    """Wall and CPU seconds since start()."""

    def start(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


class EpochClock(Callback):
    """Wall and CPU seconds of each epoch: training and its validation, as a run's history counts them."""

    def __init__(self):
        self.clocks, self.epochs = Clocks(), []

    def on_train_epoch_start(self, trainer, pl_module):
        self.clocks.start()

    def on_train_epoch_end(self, trainer, pl_module):  # after the epoch's validation
        self.epochs.append(self.clocks.read())


def epoch_seconds(cfg, epochs: int) -> tuple[float, float]:
    """Mean (wall, CPU) seconds of an epoch of a fresh default model."""
    model, dm = instantiate(cfg.model), instantiate(cfg.data)
    clock = EpochClock()
    trainer, _ = trainer_for(cfg, [clock], max_epochs=epochs)
    trainer.fit(model, datamodule=dm)
    return tuple(sum(e[i] for e in clock.epochs) / len(clock.epochs) for i in (0, 1))


def timed_on_test_end(callback, seconds: dict, name: str):
    inner = callback.on_test_end

    def on_test_end(trainer, pl_module):
        clocks = Clocks()
        clocks.start()
        inner(trainer, pl_module)
        seconds[name] = clocks.read()

    callback.on_test_end = on_test_end
    return callback


def post_fit(cfg, ckpt: str, run_dir: Path) -> dict:
    """The shipped model tested as a run tests its best checkpoint, with the Training-split score and
    calibration after the test: the seconds of each, and what they found."""
    model = EmotionClassifier.from_checkpoint(ckpt)
    model.tta = cfg.model.tta
    if cfg.model.channels_last:  # as the config builds a run's model
        model.channels_last = True
        model.net = model.net.to(memory_format=torch.channels_last)
    dm = instantiate(cfg.data)
    dm.pin_preprocessing(float(model.pixel_mean), float(model.pixel_std), model.input_size)
    seconds = {}
    callbacks = [
        timed_on_test_end(TrainSplitScore(enabled=True, trained=True), seconds, "train_split"),
        timed_on_test_end(Calibrate(run_dir=str(run_dir), trained=True), seconds, "calibration"),
    ]
    trainer, chosen = trainer_for(cfg, callbacks)
    dm.prepare_data()
    dm.setup("test")
    clocks = Clocks()
    clocks.start()
    trainer.test(model, datamodule=dm, verbose=False)
    total = clocks.read()
    calibration = model.reports["calibration"]
    return {
        "precision": chosen,
        "test_s": [total[i] - seconds["train_split"][i] - seconds["calibration"][i] for i in (0, 1)],
        "train_split_s": seconds["train_split"],
        "calibration_s": seconds["calibration"],
        "found": {
            "test_acc": round(model.test_results["test/acc"], 4),
            "train_split_acc": round(model.reports["train_split"]["acc"], 4),
            "train_split_faces": model.reports["train_split"]["faces"],
            "calibration": {
                mode: {
                    "temperature": round(r["temperature"], 4),
                    "test_acc": round(r["acc"], 4),
                    "ece": round(r["reliability"]["ece"], 4),
                    "ece_calibrated": round(r["reliability_calibrated"]["ece"], 4),
                }
                for mode, r in calibration.items()
                if isinstance(r, dict) and "temperature" in r
            },
        },
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--label", default="after", help="the name the result is kept under in --out")
    parser.add_argument("--ckpt", default=str(ROOT / "fer" / "weights" / "fer2013_regularized.ckpt"))
    parser.add_argument("--epochs", type=int, default=1, help="epochs to time (ignored with --epoch-s)")
    parser.add_argument("--epoch-s", type=float, default=None, help="an epoch's seconds from a run, instead of timing one")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one a core)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "post_fit_cost.json"))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the run's config, e.g. trainer.precision=32-true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = compose_run(args.overrides)
    load_before = load_average()

    if args.epoch_s is not None:
        epoch_s, epoch_source = (args.epoch_s, None), "--epoch-s (from a run)"
    else:
        epoch_s, epoch_source = epoch_seconds(cfg, args.epochs), f"timed here: {args.epochs} epoch(s)"
    print(f"epoch {epoch_s[0]:.1f} s ({epoch_source})", flush=True)

    runs = []
    with tempfile.TemporaryDirectory() as d:
        for _ in range(args.repeats):
            runs.append(post_fit(cfg, args.ckpt, Path(d)))
            r = runs[-1]
            print(
                f"test {r['test_s'][0]:.1f} s; after it: Training split {r['train_split_s'][0]:.1f} s, "
                f"calibration {r['calibration_s'][0]:.1f} s",
                flush=True,
            )
    best = min(runs, key=lambda r: r["train_split_s"][0] + r["calibration_s"][0])
    epochs = int(cfg.trainer.max_epochs)

    def figures(clock: int) -> dict | None:  # 0: wall seconds, 1: CPU seconds
        if epoch_s[clock] is None:
            return None
        post = best["train_split_s"][clock] + best["calibration_s"][clock]
        run = epochs * epoch_s[clock] + best["test_s"][clock] + post
        return {
            "epoch": round(epoch_s[clock], 1),
            "test": round(best["test_s"][clock], 1),
            "post_fit": {
                "train_split": round(best["train_split_s"][clock], 1),
                "calibration": round(best["calibration_s"][clock], 1),
                "total": round(post, 1),
            },
            "default_run": round(run, 1),
            "post_fit_share_of_run": round(post / run, 3),
            "post_fit_in_epochs": round(post / epoch_s[clock], 2),
        }

    result = {
        "command": "python benchmarks/post_fit_cost.py " + " ".join(sys.argv[1:]),
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu_model(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}",
        "load_average_1_5_15": {"start": load_before, "end": load_average()},
        "model": cfg.model.net.arch,
        "precision": best["precision"],
        "epoch_source": epoch_source,
        "default_run": f"{epochs} epochs + test + post-fit",
        "wall_s": figures(0),
        "cpu_s": figures(1),
        "found": best["found"],
    }
    out = Path(args.out)
    kept = json.loads(out.read_text()) if out.is_file() else {}
    kept = kept if "runs" in kept else {"about": " ".join(__doc__.split("\n\n")[0].split()), "runs": {}}
    kept["runs"][args.label] = result
    out.write_text(json.dumps(kept, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
