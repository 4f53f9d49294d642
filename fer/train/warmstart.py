"""`init_from=CKPT`: start a run from a trained model's weights.

Only the network's weights (and the normalisation they were trained with) are taken; the optimizer,
the LR schedule and the epoch count start afresh. That is the difference from `ckpt_path=`, which
resumes a run exactly where it stopped. Two uses: fine-tuning the shipped model on a user's own
faces, and training cycles that restart a schedule from the best weights so far.
"""

import logging
from pathlib import Path

import lightning as L

from fer.errors import FerError
from fer.runs.checkpoint import net_weights, read_checkpoint, weight_differences
from fer.runs.meta import ModelMeta
from fer.train.calibration import split_logits

log = logging.getLogger(__name__)


def load_initial_weights(model, path: str | Path) -> dict:
    """Copy the network weights of checkpoint `path` into `model` (an EmotionClassifier); returns its ModelMeta.
    A checkpoint of another architecture, shape or class list is refused with one line."""
    ckpt = read_checkpoint(path)
    meta = ModelMeta.from_dict(ckpt["fer"], path)
    stored, ours = dict(meta.net), model.net_spec
    if stored.get("arch") != ours["arch"]:
        raise FerError(
            f"init_from={path} holds a {stored.get('arch')!r} network, but this run builds {ours['arch']!r}; "
            f"add model={stored.get('arch')} (a warm start needs the same architecture)"
        )
    if list(meta.class_names) != list(model.class_names):
        raise FerError(
            f"init_from={path} was trained on the classes {list(meta.class_names)}, this run has {model.class_names}; "
            "a warm start needs the same class list"
        )
    weights = net_weights(ckpt["state_dict"])
    try:
        model.net.load_state_dict(weights)
    except RuntimeError:
        settings = [
            f"{k}: {stored.get(k)} in the checkpoint, {ours.get(k)} here"
            for k in sorted(set(stored) | set(ours))
            if k != "dropout" and stored.get(k) != ours.get(k)
        ]
        differ = "; ".join(settings) or weight_differences(weights, model.net.state_dict())
        raise FerError(
            f"init_from={path}: its weights do not fit this run's {ours['arch']!r} network ({differ}); "
            "use the checkpoint's settings"
        ) from None
    log.info("warm start: network weights from %s (optimizer, schedule and epochs start afresh)", path)
    return meta


class FreezeFeatures(L.Callback):
    """callbacks=freeze_features (conf/callbacks/freeze_features.yaml): the convolutional part keeps its
    weights and its BatchNorm statistics; only the fully connected head trains (fewer faces needed, less forgetting)."""

    def on_fit_start(self, trainer, pl_module):
        for p in pl_module.net.features.parameters():
            p.requires_grad_(False)
        trainable = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        log.info(
            "callbacks=freeze_features: %d of %d parameters train", trainable, sum(p.numel() for p in pl_module.parameters())
        )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        # Lightning puts the whole module back in train mode after each validation; frozen
        # BatchNorm layers must keep using (and not update) their running statistics.
        pl_module.net.features.eval()


def test_accuracy(path: str | Path, images, labels, tta: str) -> float:
    """Accuracy of the checkpoint a run started from on this run's test faces (uint8 images, labels),
    normalised as that checkpoint was trained: the figure a fine-tuned model is compared with."""
    from fer.train.module import EmotionClassifier

    start = EmotionClassifier.from_checkpoint(path)
    logits = split_logits(start, images, float(start.pixel_mean), float(start.pixel_std), start.input_size, tta)
    return float((logits.argmax(1) == labels).double().mean()) if len(labels) else float("nan")
