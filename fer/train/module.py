"""The LightningModule: loss, optimisation, metrics and logging around a plain network from fer.models."""

import inspect
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.exceptions import MisconfigurationException
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score, MulticlassRecall

from fer.errors import FerError
from fer.models import build_net
from fer.runs.checkpoint import mismatch, read_checkpoint
from fer.runs.meta import ModelMeta
from fer.train.plots import confusion_figure
from fer.tta import check_mode, eval_logits

log = logging.getLogger(__name__)


def _stage_metrics(num_classes: int) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "f1_macro": MulticlassF1Score(num_classes, average="macro"),
            "recall": MulticlassRecall(num_classes, average=None),
            "confmat": MulticlassConfusionMatrix(num_classes),
        }
    )


def _check_learning_rate(lr):
    # Checked when the model is built, before any data is loaded: torch would say only "Invalid
    # learning rate", or, for a string, compare it with 0.0 and fail with a TypeError.
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf):
        raise FerError(f"model.optimizer.lr must be a positive number (e.g. 0.05), not {lr!r}")


class EmotionClassifier(L.LightningModule):
    def __init__(
        self,
        net: Mapping,
        class_names: Sequence[str],  # from the data config (data.class_names): the label order
        image_size: int,  # the side of the data set's square grey faces (data.image_size), of which input_size is a crop
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
        input_size: int = 48,
        label_smoothing: float = 0.0,
        class_weights: str | Sequence[float] | None = None,
        channels_last: bool = False,
        tta: str = "none",
    ):
        super().__init__()
        # `net` is a plain spec such as {"arch": "regularized", "widths": [...], "dropout": 0.4}
        # (conf/model/<arch>.yaml); the input size and class count come from the data.
        spec = {**net, "input_size": input_size, "num_classes": len(class_names)}
        self.net_spec = spec
        self.net = build_net(**spec)
        _check_learning_rate(getattr(optimizer, "keywords", {}).get("lr"))
        self.optimizer_factory, self.scheduler_factory, self.scheduler_interval = optimizer, scheduler, scheduler_interval
        self.input_size, self.label_smoothing, self.class_weights = input_size, label_smoothing, class_weights
        self.channels_last = channels_last
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.class_names = list(class_names)
        self.image_size = int(image_size)
        # Test-time augmentation for the test split (fer.tta); validation stays on the centre crop,
        # cheap every epoch and the same for every setting, so model selection does not depend on it.
        self.tta = check_mode(tta)
        # Temperature per TTA mode, fitted on PublicTest after training (fer.train.calibration); 1 = as trained.
        self.temperatures: dict[str, float] = {}
        # Stored in every checkpoint: the training split's statistics and the loss weights.
        self.register_buffer("pixel_mean", torch.tensor(0.5))
        self.register_buffer("pixel_std", torch.tensor(0.25))
        self.register_buffer("class_weight", torch.ones(len(class_names)))

        n = len(class_names)
        self.train_metrics = MetricCollection({"acc": MulticlassAccuracy(n, average="micro")})
        self.val_metrics, self.test_metrics = _stage_metrics(n), _stage_metrics(n)
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.history: list[dict] = []  # one row per epoch; kept in checkpoints so resumed runs plot whole curves
        self.test_results: dict = {}
        self.test_logits: list[torch.Tensor] = []  # the last test's (B, classes) logits per batch: calibration reuses them
        self.reports: dict = {}  # what the callbacks that run after the test found (fer/train/callbacks/), for metrics.json
        self._epoch_started: float | None = None

    # --- building from a checkpoint -------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path) -> "EmotionClassifier":
        ckpt = read_checkpoint(path)
        meta = ModelMeta.from_dict(ckpt["fer"], path)
        arch = {k: v for k, v in meta.net.items() if k not in ("input_size", "num_classes")}
        model = cls(net=arch, input_size=meta.input_size, class_names=list(meta.class_names), image_size=meta.image_size)
        try:
            missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
        except RuntimeError as e:  # a tensor of another shape than the stored spec builds
            raise FerError(f"{path}: weights do not fit the stored architecture {meta.arch!r} ({mismatch(e)})") from None
        if any(k.startswith("net.") for k in missing + unexpected):
            raise FerError(f"{path}: weights do not fit the stored architecture {meta.arch!r}")
        # The stored statistics are the truth: a slim checkpoint (the shipped model) keeps no buffers,
        # and evaluating with the defaults would normalise differently from training.
        model.pixel_mean.fill_(meta.mean)
        model.pixel_std.fill_(meta.std)
        model.history = list(meta.history)
        model.temperatures = dict(meta.temperature)
        return model

    def fer_meta(self, face: dict | None = None) -> dict:
        """The checkpoint's "fer" entry: what rebuilds this model without Hydra (fer.runs.meta.ModelMeta)."""
        return ModelMeta(
            net=self.net_spec,
            class_names=tuple(self.class_names),
            mean=float(self.pixel_mean),
            std=float(self.pixel_std),
            input_size=self.input_size,
            image_size=self.image_size,
            face=face,
            history=tuple(self.history),
            temperature=dict(self.temperatures),
        ).to_dict()

    def on_save_checkpoint(self, checkpoint):
        # Callbacks write their part first (fer.runs.saving.FaceSettings: "face"); the module writes the rest.
        checkpoint["fer"] = self.fer_meta(face=checkpoint.get("fer", {}).get("face"))

    def on_load_checkpoint(self, checkpoint):
        meta = ModelMeta.from_dict(checkpoint.get("fer", {}), "the checkpoint")
        if meta.net != self.net_spec:
            raise FerError(f"the checkpoint holds a different network ({meta.net}) than the config ({self.net_spec})")
        # A resumed run takes the history it continues; the best checkpoint, loaded for the test, holds
        # the history as of its epoch, and the run's whole history (this one, longer) stays.
        if len(meta.history) >= len(self.history):
            self.history = list(meta.history)
        self.temperatures = dict(meta.temperature)

    # --- setup ----------------------------------------------------------------------------------
    def setup(self, stage: str):
        dm = getattr(self.trainer, "datamodule", None)
        if stage != "fit" or dm is None:
            return
        self.pixel_mean.fill_(dm.mean)
        self.pixel_std.fill_(dm.std)
        if self.class_weights == "balanced":  # n / (k * n_c): each class weighs as much in the loss
            counts = dm.class_counts().float().clamp(min=1)
            self.class_weight.copy_(counts.sum() / (len(counts) * counts))
        elif self.class_weights is not None:
            self.class_weight.copy_(torch.as_tensor(list(self.class_weights), dtype=torch.float))

    # --- steps ----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)  # (B, 7) logits

    def _loss(self, logits, y):
        # y: class indices, or a probability vector per face (distillation's targets); cross_entropy takes both
        weight = self.class_weight if self.class_weights is not None else None
        return F.cross_entropy(logits, y, weight=weight, label_smoothing=self.label_smoothing)

    def training_step(self, batch, batch_idx):
        x, y, *targets = batch  # targets: the distilled ones (fer/train/callbacks/distill.py), else the labels
        logits = self(x)
        loss = self._loss(logits, targets[0] if targets else y)
        if not torch.isfinite(loss):
            raise FerError(
                f"the training loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step}; "
                "lower the learning rate (model.optimizer.lr=...) or check the data"
            )
        self.train_loss.update(loss.detach(), weight=len(y))
        self.train_metrics.update(logits.detach(), y)
        self.log("train/loss_step", loss.detach(), prog_bar=True, logger=False)
        return loss

    def _eval_step(self, batch, loss_metric, metrics, tta: str = "none"):
        x, y = batch  # (B, 1, 48, 48) normalised: the views (centre crop, or TTA) are taken here
        # Always in fp32, whatever trainer.precision trains in: validation picks the checkpoint and
        # test reports it, so their figures must mean the same under bf16 as under fp32 (and as infer.py).
        with torch.autocast(x.device.type, enabled=False):
            logits = eval_logits(self, x.float(), self.input_size, tta)
        loss_metric.update(F.cross_entropy(logits, y), weight=len(y))
        metrics.update(logits, y)
        return logits

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, self.val_loss, self.val_metrics)

    def on_test_epoch_start(self):
        self.test_logits = []

    def test_step(self, batch, batch_idx):
        self.test_logits.append(self._eval_step(batch, self.test_loss, self.test_metrics, self.tta).cpu())

    # --- epoch ends: compute once, log scalars, draw the confusion matrix -------------------------
    def _finish(self, stage: str, loss_metric, metrics) -> dict:
        values = metrics.compute()
        result = {
            f"{stage}/loss": float(loss_metric.compute()),
            f"{stage}/acc": float(values["acc"]),
            f"{stage}/f1_macro": float(values["f1_macro"]),
        }
        recall = values["recall"].tolist()
        per_class = {f"{stage}/recall/{c}": r for c, r in zip(self.class_names, recall)}
        confmat = values["confmat"].long().tolist()
        metrics.reset()
        loss_metric.reset()
        self.log_dict({**result, **per_class}, sync_dist=False)  # already synced by torchmetrics
        return {**result, "recall": dict(zip(self.class_names, recall)), "confmat": confmat}

    def _log_confusion(self, tag: str, confmat):
        # To every logger that takes figures (TensorBoard); others (logger=csv) have no place for one.
        if not self.trainer.is_global_zero:
            return
        for logger in self.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_figure"):
                fig = confusion_figure(confmat, self.class_names, f"{tag} (epoch {self.current_epoch + 1})")
                experiment.add_figure(tag, fig, global_step=self.current_epoch, close=True)

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            self.val_metrics.reset()
            self.val_loss.reset()
            return
        val = self._finish("val", self.val_loss, self.val_metrics)
        self._log_confusion("val/confusion_matrix", val["confmat"])
        if self.trainer.state.fn == "fit":
            # Close the epoch here, not in on_train_epoch_end: checkpoints are written right after
            # validation, and the history they carry must include this epoch.
            self._close_epoch(val)

    def on_train_epoch_start(self):
        self._epoch_started = time.monotonic()

    def on_train_epoch_end(self):
        if not self.history or self.history[-1]["epoch"] != self.current_epoch:  # no validation this epoch
            self._close_epoch({})

    def _close_epoch(self, val: dict):
        train_acc = float(self.train_metrics.compute()["acc"])
        train_loss = float(self.train_loss.compute())
        self.train_metrics.reset()
        self.train_loss.reset()
        lr = self.trainer.optimizers[0].param_groups[0]["lr"] if self.trainer.optimizers else math.nan
        self.log_dict({"train/loss": train_loss, "train/acc": train_acc, "train/lr": lr})
        # Wall time of training and validation so far, summed over resumed sessions: the x axis of
        # the accuracy-vs-time curves that compare recipes.
        epoch_s = time.monotonic() - self._epoch_started if self._epoch_started is not None else 0.0
        elapsed = (self.history[-1].get("time_s", 0.0) if self.history else 0.0) + epoch_s
        row = {
            "epoch": self.current_epoch,
            "train/loss": train_loss,
            "train/acc": train_acc,
            "lr": lr,
            "time_s": round(elapsed, 1),
        }
        row.update({k: v for k, v in val.items() if k.startswith("val/")})
        self.history.append(row)
        if self.trainer.is_global_zero:
            val_part = (
                f"  val loss {row['val/loss']:.4f} acc {row['val/acc']:.4f} f1 {row['val/f1_macro']:.4f}"
                if "val/acc" in row
                else ""
            )
            log.info(
                f"epoch {self.current_epoch + 1}/{self.trainer.max_epochs}: "
                f"train loss {train_loss:.4f} acc {train_acc:.4f}{val_part}  lr {lr:.4g}"
            )

    def on_test_epoch_end(self):
        self.test_results = self._finish("test", self.test_loss, self.test_metrics)
        self._log_confusion("test/confusion_matrix", self.test_results["confmat"])

    # --- optimisation -----------------------------------------------------------------------------
    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise FerError("no optimizer configured (model.optimizer)")
        try:
            optimizer = self.optimizer_factory(params=self.parameters())
        except (TypeError, ValueError) as e:  # e.g. momentum=-1: torch names the value it refuses
            raise FerError(f"model.optimizer: {e}") from None
        try:
            steps = self.trainer.estimated_stepping_batches  # optimizer steps of the whole run
        except MisconfigurationException as e:  # e.g. a limit_train_batches fraction below one batch: Lightning says which
            raise FerError(str(e)) from None
        if steps < 1:  # 0, or -1 when limit_train_batches=0 turns training off
            raise FerError(self._no_step_message())
        if self.scheduler_factory is None:
            return optimizer
        length = int(steps) if self.scheduler_interval == "step" else self.trainer.max_epochs
        scheduler = self.scheduler_factory(optimizer, **self._schedule_length(length))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval, "monitor": "val/acc"},
        }

    def _schedule_length(self, length: int) -> dict:
        # Schedules that need the run's length (OneCycleLR, CosineAnnealingLR) get it from the trainer.
        accepts = inspect.signature(self.scheduler_factory).parameters
        given = getattr(self.scheduler_factory, "keywords", {})
        kwargs = {k: length for k in ("total_steps", "T_max") if k in accepts and k not in given}
        if "total_steps" in kwargs and "pct_start" in accepts:
            kwargs.update(_one_cycle_warmup(given.get("pct_start", accepts["pct_start"].default), length))
        return kwargs

    def on_train_start(self):
        self._fit_schedule_to_run()

    def _fit_schedule_to_run(self):
        """A resume with a longer run than the one saved (trainer.max_epochs=100 on a run begun with
        50) restores a one-cycle schedule that still counts the old length, and torch stops at its end
        ("Tried to step N+1 times"). Stretch it to this run's length from the step it had reached."""
        steps = int(self.trainer.estimated_stepping_batches)
        for config in self.trainer.lr_scheduler_configs:
            old = config.scheduler
            if not isinstance(old, torch.optim.lr_scheduler.OneCycleLR) or old.total_steps == steps:
                continue
            done = old.last_epoch  # steps taken, the initial one included
            if done >= steps:
                raise FerError(
                    f"this run has made {done} training steps of a {old.total_steps}-step schedule; "
                    f"trainer.max_epochs={self.trainer.max_epochs} gives only {steps}: resume with a longer run"
                )
            config.scheduler = self.scheduler_factory(old.optimizer, last_epoch=done - 1, **self._schedule_length(steps))
            log.info(
                "one-cycle schedule stretched from %d to %d steps (trainer.max_epochs=%d), continuing at step %d",
                old.total_steps,
                steps,
                self.trainer.max_epochs,
                done,
            )

    def _no_step_message(self) -> str:
        trainer, dm = self.trainer, getattr(self.trainer, "datamodule", None)
        faces = len(dm.splits["train"]) if dm is not None and "train" in getattr(dm, "splits", {}) else "?"
        batch = getattr(dm, "batch_size", "?")
        return (
            "this run would make no training step "
            f"({faces} Training faces, data.batch_size={batch}, trainer.limit_train_batches={trainer.limit_train_batches}); "
            "give trainer.limit_train_batches 1 or more batches (or lower data.batch_size)"
        )


def _one_cycle_warmup(pct_start: float, total_steps: int) -> dict:
    """OneCycleLR divides by the length of its warm-up, pct_start * total_steps - 1 steps, which is 0
    when the warm-up is exactly one step (4 steps at pct_start=0.25: ZeroDivisionError). Such a
    warm-up then ends a millionth of a step after step 0 instead of on it: the same schedule, defined."""
    if float(pct_start * total_steps) - 1 == 0:  # the expression torch computes
        return {"pct_start": pct_start * (1 + 1e-6)}
    return {}
