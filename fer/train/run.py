"""What `python train.py` does: build data, model, callbacks, loggers and trainer -> fit -> test the best
checkpoint. The reports after the test are callbacks (fer/train/callbacks/, conf/callbacks/default.yaml)."""

import errno
import logging
import shlex
import shutil
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from fer.errors import FerError
from fer.paths import in_project
from fer.runs import resume, rundir
from fer.runs.checkpoint import read_checkpoint
from fer.runs.meta import ModelMeta
from fer.runs.saving import AtomicCheckpointIO
from fer.train import distributed, precision, warmstart
from fer.train.instantiators import instantiate_callbacks, instantiate_loggers
from fer.train.interrupt import CtrlCIsNeverLost
from fer.train.module import EmotionClassifier
from fer.tta import check_mode

log = logging.getLogger(__name__)


def quiet_lightning():
    """What the train entry point sets once, before a run: never at import, so importing fer changes nothing."""
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
    # The model summary knows no mixed precision and counts the weights at 32 bits, which is what mixed precision
    # keeps them in (only the steps compute in bf16 or fp16): its size is right, its notice wrong. Other precisions
    # it does not know (none that this project trains in) still warn.
    warnings.filterwarnings("ignore", message=r"Precision (bf16|16)-mixed is not supported by the model summary")
    chatter = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropLightningChatter) for f in chatter.filters):
        chatter.addFilter(_DropLightningChatter())


class _DropLightningChatter(logging.Filter):
    # Lines that say nothing about this run: Lightning's start-up tip to install its cloud logger
    # (litlogger), and its notice that it loads the training data early when configure_optimizers asks
    # for the run's length (which every run with a schedule does).
    NOT_THE_USERS_BUSINESS = ("litlogger", "Loading `train_dataloader` to estimate number of stepping batches")

    def filter(self, record):
        return not any(s in record.getMessage() for s in self.NOT_THE_USERS_BUSINESS)


def run(cfg: DictConfig) -> dict:
    """Build data, model, callbacks, loggers and trainer; fit; test. What comes after the test (the
    Training split's score, calibration, the warm-start comparison, figures, metrics.json) is done by
    callbacks (conf/callbacks/). Returns the run's metrics (metrics.json's content)."""
    run_dir = _start(cfg)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    datamodule = _build_data(cfg)
    model, _ = _build_model(cfg, datamodule)
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer = _build_trainer(cfg, callbacks, loggers)
    test_ckpt = _fit(cfg, trainer, model, datamodule, run_dir) if cfg.train else None
    _test(trainer, model, datamodule, test_ckpt, run_dir)
    if not trainer.is_global_zero:
        return {}
    metrics = model.reports.get("metrics") or _headline(model)
    _log_hyperparams(trainer.loggers, cfg, metrics)
    return metrics


def _headline(model: EmotionClassifier) -> dict:
    # What a sweeper ranks and the loggers record, when the metrics_json callback is switched off.
    best = max((h["val/acc"] for h in model.history if "val/acc" in h), default=None)
    return {"val": {"acc": best}, "test": {"acc": model.test_results["test/acc"]}}


def _start(cfg: DictConfig) -> Path:
    """Checks that need no data, the DDP workers briefed, the seed set: the run dir."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if cfg.train:
        _check_epochs(cfg.trainer.max_epochs)
    distributed.keep_log_files_to_rank_zero()
    rundir.require_claim(run_dir)  # claimed by fer.runs.rundir.RunDirGuard when the job started
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
            resume.check_init_from(cfg)
        elif init_from:
            start = warmstart.load_initial_weights(model, init_from)
            # The weights expect the faces normalised as they were trained; keep that, not this data's statistics.
            datamodule.pin_preprocessing(start.mean, start.std, model.input_size)
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


def _build_trainer(cfg: DictConfig, callbacks: list, loggers: list) -> L.Trainer:
    """The Trainer with the callbacks and loggers of the config groups (conf/callbacks, conf/logger)."""
    chosen_precision, why = precision.choose(cfg.trainer.precision, cfg.trainer.accelerator)
    log.info("precision: %s (%s)", chosen_precision, why)
    # AtomicCheckpointIO: a kill while a checkpoint is written leaves the previous one whole.
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=[*callbacks, CtrlCIsNeverLost()],
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
        _disk_full_says_how_to_resume(run_dir, model),
    ):
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path if resuming else None)
    checkpoint = _best_checkpoint(trainer)
    best = checkpoint.best_model_path if checkpoint else ""
    if not best:
        log.warning("no best checkpoint was written (fast_dev_run or no validation); testing the last weights")
    return best or None


def _test(trainer: L.Trainer, model: EmotionClassifier, datamodule, test_ckpt: str | None, run_dir: Path):
    if trainer.is_global_zero:
        datamodule.setup("test")  # loaded by fit already; an evaluation-only run loads it here to count the faces
        log.info(
            "testing %s on %s: %d faces%s",
            test_ckpt or "the model",
            datamodule.split_names["test"],
            len(datamodule.evaluated_faces("test", trainer.limit_test_batches, trainer.world_size)[1]),
            f", tta={model.tta}" if model.tta != "none" else "",
        )
    with _ctrl_c_exits_130(
        trainer,
        lambda: "interrupted while testing; training had finished, its checkpoints are in " + str(run_dir / "checkpoints"),
    ):
        trainer.test(model, datamodule=datamodule, ckpt_path=test_ckpt, verbose=False)


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


@contextmanager
def _disk_full_says_how_to_resume(run_dir: Path, model: EmotionClassifier):
    """A full disk while a checkpoint is written: one line, in train.log too, with the resume command. The
    write that failed left the previous last.ckpt as it was (fer.runs.atomic), so the hint holds."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = e.filename or run_dir
        message = f"no space left on the disk writing {where}; free some, then: {_resume_hint(run_dir, model)}"
        if distributed.is_rank_zero():
            log.error(message)
        raise FerError(message) from None


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


def _check_resumable(ckpt_path: str, model: EmotionClassifier):
    ckpt = read_checkpoint(ckpt_path)
    meta = ModelMeta.from_dict(ckpt["fer"], ckpt_path)
    if meta.net != model.net_spec:
        arch = meta.arch
        raise FerError(
            f"{ckpt_path} holds a {arch!r} network with {meta.net}, but this config builds {model.net_spec}; "
            f"resume with the run's own settings (model={arch} and its overrides)"
        )
    if not {"pytorch-lightning_version", "optimizer_states", "loops"} <= ckpt.keys():
        raise FerError(
            f"{ckpt_path} is a slim model (weights and meta, no training state), not a run to resume: evaluate it with "
            f"train=false ckpt_path={ckpt_path}, or start a new run from its weights with init_from={ckpt_path}"
        )
