"""What `python train.py` does: build data -> build model -> build trainer -> fit -> test the best
checkpoint -> evaluate (Training split, calibration) -> report (metrics.json, figures, loggers)."""

import json
import logging
import shlex
import shutil
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from fer import distributed
from fer.errors import FerError
from fer.paths import in_project
from fer.rundir import holds_run, occupied_message
from fer.runs import runinfo
from fer.runs.checkpoint import read_checkpoint, save_slim, update_meta
from fer.runs.saving import AtomicCheckpointIO
from fer.train import calibration, plots, precision, warmstart
from fer.train.instantiators import instantiate_callbacks, instantiate_loggers
from fer.train.module import EmotionClassifier
from fer.tta import check_mode

log = logging.getLogger(__name__)
# `import lightning` hangs its own console handler on the "lightning" logger; Hydra's handlers
# already print (and write to the run's log file) every line, so without this each shows twice.
logging.getLogger("lightning").handlers.clear()
# Under DDP Lightning suggests sync_dist=True for every epoch-level value; ours come from torchmetrics'
# compute(), already summed over all ranks, so that advice (and its extra all-reduces) does not apply.
warnings.filterwarnings("ignore", message=r"It is recommended to use `self\.log\(.*sync_dist=True")
# Lightning 2.6 calls torch's deprecated LeafSpec check inside its own code: nothing a user can change.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
# Our metrics are logged once per epoch (train/loss_step goes to the progress bar only), so the logging
# interval that short runs fall below (log_every_n_steps) changes nothing.
warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging interval")

# A training loader without a batch is refused in one line (EmotionClassifier.configure_optimizers says
# why and what to change), and empty evaluation splits by the datamodule: Lightning's notice is redundant.
warnings.filterwarnings("ignore", message=r"Total length of `\w+` across ranks is zero")


class _DropLightningChatter(logging.Filter):
    # Lines that say nothing about this run: Lightning's start-up tip to install its cloud logger
    # (litlogger), and its notice that it loads the training data early when configure_optimizers asks
    # for the run's length (which every run with a schedule does).
    NOT_THE_USERS_BUSINESS = ("litlogger", "Loading `train_dataloader` to estimate number of stepping batches")

    def filter(self, record):
        return not any(s in record.getMessage() for s in self.NOT_THE_USERS_BUSINESS)


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropLightningChatter())


def run(cfg: DictConfig) -> dict:
    t0 = time.time()
    run_dir = _start(cfg)
    datamodule = _build_data(cfg)
    model, init_from = _build_model(cfg, datamodule)
    trainer = _build_trainer(cfg)
    test_ckpt = _fit(cfg, trainer, model, datamodule, run_dir) if cfg.train else None
    _test(trainer, model, datamodule, test_ckpt, run_dir)
    if not trainer.is_global_zero:
        return {}
    metrics = _evaluate(cfg, trainer, model, datamodule, run_dir, test_ckpt, init_from, t0)
    _report(cfg, trainer, model, run_dir, metrics)
    return metrics


def _start(cfg: DictConfig) -> Path:
    """Checks that need no data, the DDP workers briefed, the seed set: the run dir."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if cfg.train:
        _check_epochs(cfg.trainer.max_epochs)
    distributed.keep_log_files_to_rank_zero()
    # Rank 0 alone checks: DDP workers join the run it has started in this dir (and write nothing there).
    if distributed.is_rank_zero() and not _resuming(cfg) and holds_run(run_dir):  # train.py checked hydra.run.dir= already
        raise FerError(occupied_message(run_dir))
    distributed.brief_workers(run_dir, hydra_cfg.overrides.task, hydra_cfg.overrides.hydra, sys.argv)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    return run_dir


def _resuming(cfg: DictConfig) -> bool:
    return bool(cfg.train and cfg.ckpt_path)


def _build_data(cfg: DictConfig):
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    return datamodule


def _build_model(cfg: DictConfig, datamodule) -> tuple[EmotionClassifier, Path | None]:
    """The model to train (new, resumed, or warm-started from init_from) or the checkpoint to evaluate,
    with the data set to normalise faces as the weights expect. Returns (model, init_from)."""
    init_from = in_project(cfg.init_from) if cfg.get("init_from") else None  # the shipped model from any directory
    if cfg.train:
        _check_model_chosen(cfg.model)
        model = instantiate(cfg.model)
        if _resuming(cfg):
            _check_resumable(cfg.ckpt_path, model)
        elif init_from:
            start = warmstart.load_initial_weights(model, init_from)
            # The weights expect the faces normalised as they were trained; keep that, not this data's statistics.
            datamodule.pin_preprocessing(float(start["mean"]), float(start["std"]), model.input_size)
        return model, init_from
    if init_from:
        raise FerError(
            "init_from= starts a training run from a checkpoint's weights; "
            "to evaluate a checkpoint use train=false ckpt_path=PATH"
        )
    if not cfg.ckpt_path:
        raise FerError("train=false evaluates a checkpoint: give it with ckpt_path=PATH")
    model = EmotionClassifier.from_checkpoint(cfg.ckpt_path)
    model.tta = check_mode(cfg.model.get("tta", "none"))  # model.tta=ten_crop evaluates a checkpoint with TTA
    datamodule.pin_preprocessing(float(model.pixel_mean), float(model.pixel_std), model.input_size)
    return model, None


def _check_model_chosen(model_cfg: DictConfig):
    # conf/model/base/ holds what the models share and leaves their own part unset (???): picked as a model, say so.
    unset = [k for k in ("net", "optimizer") if OmegaConf.is_missing(model_cfg, k)]
    if unset:
        raise FerError(
            f"model.{unset[0]} is not set: conf/model/base/ is what the models share, not a model; "
            "choose model=baseline, model=regularized or model=vgg"
        )


def _build_trainer(cfg: DictConfig) -> L.Trainer:
    """The Trainer with the callbacks and loggers of the config groups (conf/callbacks, conf/logger)."""
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    chosen_precision, why = precision.choose(cfg.trainer.precision, cfg.trainer.accelerator)
    log.info("precision: %s (%s)", chosen_precision, why)
    # AtomicCheckpointIO: a kill while a checkpoint is written leaves the previous one whole.
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        precision=chosen_precision,
        plugins=[AtomicCheckpointIO()],
        **_sync_batchnorm_setting(cfg.trainer),
    )
    distributed.check_launcher_can_start_workers(str(HydraConfig.get().launcher.get("_target_", "")), trainer)
    return trainer


def _best_checkpoint(trainer: L.Trainer) -> ModelCheckpoint | None:
    """The checkpoint callback that ranks epochs (callbacks.best_checkpoint); None when the config has none."""
    return next((c for c in trainer.checkpoint_callbacks if c.monitor), None)


def _fit(cfg: DictConfig, trainer: L.Trainer, model: EmotionClassifier, datamodule, run_dir: Path) -> str | None:
    """Train; returns the best checkpoint, which the test then loads (None: test the last weights)."""
    resuming = _resuming(cfg)
    if resuming:
        log.info("resuming from %s", cfg.ckpt_path)
    with (
        _no_events_unless_an_epoch_ran(trainer.loggers, run_dir, model, resuming),
        _ctrl_c_exits_130(trainer, lambda: _resume_hint(run_dir, model)),
    ):
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path if resuming else None)
    checkpoint = _best_checkpoint(trainer)
    best = checkpoint.best_model_path if checkpoint else ""
    if not best:
        log.warning("no best checkpoint was written (fast_dev_run or no validation); testing the last weights")
    return best or None


def _test(trainer: L.Trainer, model: EmotionClassifier, datamodule, test_ckpt: str | None, run_dir: Path):
    history = list(model.history)
    if trainer.is_global_zero:
        datamodule.setup("test")  # loaded by fit already; an evaluation-only run loads it here to count the faces
        log.info(
            "testing %s on PrivateTest: %d faces%s",
            test_ckpt or "the model",
            _faces(datamodule, "test", trainer),
            f", tta={model.tta}" if model.tta != "none" else "",
        )
    with _ctrl_c_exits_130(
        trainer,
        lambda: "interrupted while testing; training had finished, its checkpoints are in " + str(run_dir / "checkpoints"),
    ):
        trainer.test(model, datamodule=datamodule, ckpt_path=test_ckpt, verbose=False)
    model.history = history  # loading the best checkpoint brought back the history as of that epoch


def _evaluate(
    cfg,
    trainer: L.Trainer,
    model: EmotionClassifier,
    datamodule,
    run_dir: Path,
    test_ckpt: str | None,
    init_from: Path | None,
    t0: float,
) -> dict:
    """After the test: the Training split, calibration and the starting point's accuracy, as metrics.json holds them."""
    train_eval = _evaluate_train_split(model, datamodule, trainer) if cfg.train and cfg.eval_train_split else None
    calibrated = _calibrate(cfg, model, datamodule, trainer, run_dir, test_ckpt) if cfg.get("calibrate", True) else None
    metrics = _metrics_json(cfg, model, trainer, test_ckpt, train_eval, time.time() - t0)
    if calibrated:
        metrics["calibration"] = calibrated
    if init_from and cfg.train:
        # The figure a fine-tuned model must beat: where it started, on the same test faces.
        metrics["init_from"] = {
            "checkpoint": str(init_from),
            "test_acc": warmstart.test_accuracy(
                init_from, *_evaluated_faces(datamodule, "test", trainer.limit_test_batches), model.tta
            ),
        }
        log.info(
            "started from %s: test %.2f%% on the same faces (this run: %.2f%%)",
            init_from,
            100 * metrics["init_from"]["test_acc"],
            100 * metrics["test"]["acc"],
        )
    return metrics


def _report(cfg, trainer: L.Trainer, model: EmotionClassifier, run_dir: Path, metrics: dict):
    """metrics.json, the figures, the loggers' hyperparameters and the summary lines."""
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _save_figures(run_dir, model)
    _log_hyperparams(trainer.loggers, cfg, metrics)
    _print_summary(run_dir, metrics)


def _log_hyperparams(loggers, cfg, metrics: dict):
    # The whole config, nested: TensorBoard flattens it itself (model/optimizer/lr); csv keeps it as YAML.
    params = OmegaConf.to_container(cfg, resolve=True)
    final = {"hp/val_acc": metrics["val"].get("acc") or 0.0, "hp/test_acc": metrics["test"]["acc"]}
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, final)  # the HPARAMS tab: the settings beside the figures they gave
        else:
            logger.log_hyperparams(params)
            logger.log_metrics(final)
        logger.finalize("success")


def _check_epochs(max_epochs):
    # Lightning's max_epochs=0 fits nothing, and the test and metrics.json would then report an untrained model.
    if max_epochs is not None and max_epochs != -1 and max_epochs < 1:
        raise FerError(
            f"trainer.max_epochs={max_epochs} trains nothing; give 1 or more "
            "(to evaluate a checkpoint without training: train=false ckpt_path=PATH)"
        )


def _sync_batchnorm_setting(trainer_cfg) -> dict:
    # trainer=ddp synchronises BatchNorm, which torch does on GPUs only: on CPU (gloo) each process
    # normalises by its own share of the batch instead, which is what sync_batchnorm=false means.
    if not trainer_cfg.get("sync_batchnorm") or distributed.sync_batchnorm_works(trainer_cfg.get("accelerator", "auto")):
        return {}
    if distributed.is_rank_zero():
        log.info(
            "sync_batchnorm: off on accelerator=%s (torch synchronises BatchNorm on GPUs only); "
            "each process normalises by its own share of the batch",
            trainer_cfg.get("accelerator"),
        )
    return {"sync_batchnorm": False}


@contextmanager
def _ctrl_c_exits_130(trainer: L.Trainer, what_next):
    """Lightning catches Ctrl-C in fit and test, shuts down and exits with status 1, which reads as a
    failure. An interrupt is 130 (as for any program), after a line that says what the run holds."""
    try:
        yield
    except SystemExit:
        if not trainer.interrupted:
            raise
        if distributed.is_rank_zero():
            log.warning(what_next())
        raise KeyboardInterrupt from None  # train.py's exit_on_user_error: "interrupted", exit 130


def _resume_hint(run_dir: Path, model: EmotionClassifier) -> str:
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.exists():
        return "training interrupted before its first epoch ended: nothing to resume"
    return (
        f"training interrupted after {len(model.history)} epochs; resume with: python train.py {shlex.quote(f'ckpt_path={last}')}"
    )


@contextmanager
def _no_events_unless_an_epoch_ran(loggers, run_dir: Path, model: EmotionClassifier, resuming: bool):
    """A run that fails (or is interrupted) before its first epoch ends leaves no TensorBoard events
    (nor CSV rows): dashboards would list it as an empty run. Its train.log and .hydra/ still say what
    happened. Only a logger's own folder inside the run dir goes, never the run dir itself."""
    try:
        yield
    except BaseException:
        if not resuming and not model.history and distributed.is_rank_zero():
            for logger in loggers:
                logger.finalize("failed")
                log_dir = Path(logger.log_dir) if getattr(logger, "log_dir", None) else None
                if log_dir and log_dir.resolve() != run_dir.resolve() and log_dir.resolve().is_relative_to(run_dir.resolve()):
                    shutil.rmtree(log_dir, ignore_errors=True)
        raise


def _seen(n: int, limit, batch_size: int, ranks: int = 1) -> int:
    # How many of a split's n faces Lightning's evaluation sees under limit_*_batches (an int:
    # batches per rank; a float: a fraction, which these runs use only as 1.0).
    return n if not isinstance(limit, int) else min(n, limit * batch_size * ranks)


def _faces(datamodule, split: str, trainer: L.Trainer) -> int:
    """The faces of a split that trainer.test/validate see, all ranks together."""
    limit = getattr(trainer, f"limit_{split}_batches")
    return _seen(len(datamodule.splits[split]), limit, datamodule.eval_batch_size, trainer.world_size)


class ShardReport(Callback):
    """Under DDP each rank says how much of each split it sees: the evidence that data is split, not repeated."""

    def on_train_start(self, trainer, pl_module):
        if trainer.world_size == 1:
            return
        splits = trainer.datamodule.splits
        train = trainer.train_dataloader.sampler  # Lightning's DistributedSampler: a new share each epoch
        parts = [f"{len(train)} of {len(splits['train'])} Training faces per epoch ({type(train).__name__})"]
        if trainer.val_dataloaders is not None:  # set up by the sanity check, when there is one
            val = trainer.val_dataloaders.sampler
            parts.append(f"{len(val)} of {len(splits['val'])} PublicTest faces ({type(val).__name__})")
        log.info("rank %d of %d: %s", trainer.global_rank, trainer.world_size, ", ".join(parts))


def _check_resumable(ckpt_path: str, model: EmotionClassifier):
    ckpt = read_checkpoint(ckpt_path)
    meta = ckpt["fer"]
    if meta["net"] != model.net_spec:
        arch = meta["net"].get("arch")
        raise FerError(
            f"{ckpt_path} holds a {arch!r} network with {meta['net']}, but this config builds {model.net_spec}; "
            f"resume with the run's own settings (model={arch} and its overrides)"
        )
    if not {"pytorch-lightning_version", "optimizer_states", "loops"} <= ckpt.keys():
        raise FerError(
            f"{ckpt_path} is a slim model (weights and meta, no training state), not a run to resume: evaluate it with "
            f"train=false ckpt_path={ckpt_path}, or start a new run from its weights with init_from={ckpt_path}"
        )


@torch.no_grad()
def _evaluate_train_split(model: EmotionClassifier, datamodule, trainer) -> dict:
    # The paper reports training-set accuracy (98% vs 92%): measure it the way test accuracy is
    # measured, on un-augmented faces in eval mode, not the running figure from augmented batches.
    from fer.preprocess import to_network_input

    faces = datamodule.splits["train"]
    limit = trainer.limit_train_batches
    n = len(faces) if not isinstance(limit, int) else min(len(faces), limit * datamodule.batch_size)
    log.info("evaluating the Training split: %d faces, un-augmented (eval_train_split=false skips this)", n)
    model.eval()
    correct = 0
    for start in range(0, n, datamodule.eval_batch_size):
        images = faces.images[start : min(n, start + datamodule.eval_batch_size)].to(model.device)
        x = to_network_input(images, datamodule.mean, datamodule.std, model.input_size)
        correct += int((model(x).argmax(1).cpu() == faces.labels[start : start + len(images)]).sum())
    return {"acc": correct / max(n, 1), "faces": n}


def _calibrate(cfg, model: EmotionClassifier, datamodule, trainer, run_dir: Path, best_ckpt: str | None) -> dict:
    """A temperature per TTA mode fitted on PublicTest; PrivateTest accuracy, macro-F1 and ECE before
    and after, for every mode. The temperatures go into the checkpoint that was tested (an evaluated
    checkpoint is left as it is: a calibrated slim copy is written in the run dir instead)."""
    val = _evaluated_faces(datamodule, "val", trainer.limit_val_batches)
    test = _evaluated_faces(datamodule, "test", trainer.limit_test_batches)
    log.info(
        "calibrating: a temperature per TTA mode (%s) fitted on %d PublicTest faces, judged on %d PrivateTest faces "
        "(calibrate=false skips this)",
        ", ".join(calibration.TTA_MODES),
        len(val[1]),
        len(test[1]),
    )
    report = calibration.report(
        model,
        val,
        test,
        datamodule.mean,
        datamodule.std,
        model.input_size,
        progress=lambda i, mode: log.info("calibrating %d/%d: tta=%s", i, len(calibration.TTA_MODES), mode),
    )
    model.temperatures = {mode: r["temperature"] for mode, r in report.items()}
    r = report[model.tta]
    title = f"{model.net_spec['arch']}, PrivateTest, tta={model.tta}: temperature {r['temperature']:.2f} fitted on PublicTest"
    plots.save(plots.reliability_figure(r["reliability"], r["reliability_calibrated"], title), run_dir / "reliability.png")
    if best_ckpt:
        update_meta(best_ckpt, temperature=model.temperatures)
        report["stored_in"] = str(best_ckpt)
    elif cfg.ckpt_path and not cfg.train:
        copy = save_slim(
            cfg.ckpt_path, run_dir / "checkpoints" / "calibrated.ckpt", meta_updates={"temperature": model.temperatures}
        )
        report["stored_in"] = str(copy)
        log.info("calibrated copy of %s: %s", cfg.ckpt_path, copy)
    return report


def _evaluated_faces(datamodule, split: str, limit):
    """The faces of a split that trainer.test/validate see under limit_*_batches: (uint8 images, labels)."""
    data = datamodule.splits[split]
    n = _seen(len(data), limit, datamodule.eval_batch_size)
    return data.images[:n], data.labels[:n]


def _metrics_json(cfg, model, trainer, test_ckpt: str | None, train_eval, wall) -> dict:
    history = model.history
    best = max((h for h in history if "val/acc" in h), key=lambda h: h["val/acc"], default=None)
    test = model.test_results
    return {
        "model": model.net_spec["arch"],
        "train": {
            "acc": train_eval["acc"] if train_eval else None,
            "acc_augmented_last_epoch": history[-1]["train/acc"] if history else None,
        },
        "val": {
            "acc": best["val/acc"] if best else None,
            "f1_macro": best["val/f1_macro"] if best else None,
            "best_epoch": best["epoch"] + 1 if best else None,
        },
        "test": {
            "acc": test["test/acc"],
            "f1_macro": test["test/f1_macro"],
            "loss": test["test/loss"],
            "recall": test["recall"],
            "confusion_matrix": test["confmat"],
            "checkpoint": str(test_ckpt or cfg.ckpt_path or ""),
            "tta": model.tta,
        },
        "class_names": model.class_names,
        "epochs": len(history),
        "evaluated_only": not cfg.train,  # then epochs and history are the checkpoint's training, wall time this evaluation's
        "wall_time_s": round(wall, 1),
        "device": runinfo.device_description(str(trainer.strategy.root_device)),
        "precision": trainer.precision,
        "seed": cfg.seed,
        "overrides": list(HydraConfig.get().overrides.task),
        "git_commit": runinfo.git_commit(),
        "versions": runinfo.versions(),
        "history": history,
    }


def _save_figures(run_dir: Path, model: EmotionClassifier):
    if model.history:
        plots.save(
            plots.curves_figure(model.history, f"{model.net_spec['arch']}: accuracy and loss per epoch"), run_dir / "curves.png"
        )
    acc = model.test_results["test/acc"]
    fig = plots.confusion_figure(
        model.test_results["confmat"], model.class_names, f"{model.net_spec['arch']}, test (PrivateTest) accuracy {acc:.1%}"
    )
    plots.save(fig, run_dir / "confusion_test.png")


def _calibration_line(report: dict | None) -> str:
    if not report:
        return ""
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


def _print_summary(run_dir: Path, m: dict):
    def pct(x):
        return "-" if x is None else f"{100 * x:.2f}%"

    # Through logging, one record a line: Hydra's handlers print it and write it to train.log.
    text = (
        f"{m['model']}: train {pct(m['train']['acc'])}  val {pct(m['val']['acc'])} (epoch {m['val']['best_epoch']})  "
        f"test {pct(m['test']['acc'])}  test macro-F1 {pct(m['test']['f1_macro'])}  "
        f"{_duration_text(m)}{_calibration_line(m.get('calibration'))}\nrun dir: {run_dir}"
    )
    for line in text.splitlines():
        log.info(line)
