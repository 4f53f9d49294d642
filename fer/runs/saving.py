"""How a run writes its checkpoints so that no fault loses the run.

- AtomicCheckpointIO: every checkpoint Lightning writes (best, last) replaces the old file in one
  rename, on every file system (fer.runs.atomic); Lightning's own writer moves a temporary file from
  $TMPDIR, a copy when that is another file system, and a kill during it truncates last.ckpt.
- RunRecord: the overrides the run trained with, in every checkpoint: what a resume re-applies
  (fer.runs.resume), read from the checkpoint it continues rather than from .hydra/overrides.yaml, which
  any later command in the same dir can rewrite.
- FaceSettings: how inference is to prepare faces for this model (conf/preprocess), in every checkpoint's
  `fer` meta under "face": written here once, beside the model's own meta, not carried by the model.
- RunCheckpoint: the paths a ModelCheckpoint keeps in a checkpoint (best model, top k, last) are
  stored relative to its directory and re-rooted on loading, so a run dir that was moved or copied
  resumes into itself: it never tests, calibrates or deletes a file of the run it was copied from.
  A resume also sets aside (checkpoints/discarded/) the checkpoints the resumed state does not know:
  those of epochs after last.ckpt, written before a kill, which the resume trains again. On a
  validation split of fewer than `min_val_faces` faces it ranks epochs by val/loss (below).

What a checkpoint holds, and why last.ckpt is large: the weights, the optimizer's state (SGD's
momentum: one more copy of the weights; Adam's two moments: two more) and a few kB of loop, scheduler
and callback state and the `fer` meta. model=baseline (4.9M parameters, Adam) makes 59 MB, the default
model (1.5M, SGD) 12 MB. All of it is needed to resume exactly; slim copies for inference
(fer.runs.checkpoint.save_slim) keep the weights alone, in fp16.
"""

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from fer.runs.atomic import replace_atomically

log = logging.getLogger(__name__)

LOSS = "val/loss"  # what ranks epochs on a validation split too small for accuracy to tell them apart
DISCARDED = "discarded"  # in checkpoints/: what a resume set aside, kept rather than deleted


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        replace_atomically(path, lambda f: torch.save(checkpoint, f))


class RunCheckpoint(ModelCheckpoint):
    _PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")
    _restored = False  # whether a resume loaded this callback's state (load_state_dict)

    def __init__(self, *args, min_val_faces: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.min_val_faces = min_val_faces

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit" and self.monitor and self.monitor != LOSS and self.min_val_faces:
            self._rank_by_loss_on_few_faces(trainer)

    def _rank_by_loss_on_few_faces(self, trainer):
        """Accuracy on a few validation faces moves a whole face at a time: a fine-tune on a small folder kept
        tying its first epoch (the first of equals is kept), and so handed on the model it started from. The
        loss moves with every face's confidence, so it tells those epochs apart. Decided from the data alone,
        before a resume restores this callback's state, whose key holds the monitor: a resume decides the same."""
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "evaluated_faces"):
            return
        n = len(dm.evaluated_faces("val", trainer.limit_val_batches, trainer.world_size)[1])
        if n >= self.min_val_faces:
            return
        if trainer.is_global_zero:
            log.info(
                "best epoch by %s, not %s: on %d %s faces accuracy moves %.1f points a face and epochs tie "
                "(callbacks.best_checkpoint.min_val_faces=%d)",
                LOSS,
                self.monitor,
                n,
                dm.split_names["val"],
                100 / max(n, 1),
                self.min_val_faces,
            )
        self.monitor, self.mode, self.kth_value = LOSS, "min", torch.tensor(torch.inf)

    @property
    def state_key(self) -> str:
        # ModelCheckpoint's key, so checkpoints written before this class existed resume with their state.
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def format_checkpoint_name(self, metrics: dict, *args, **kwargs) -> str:
        # {epoch} in a file name counts as the log does: the first epoch's best is best-epoch01, "(epoch 1)".
        if "epoch" in metrics:
            metrics = {**metrics, "epoch": metrics["epoch"] + 1}
        return super().format_checkpoint_name(metrics, *args, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["dirpath"] = "."  # the directory is wherever the run is now
        for key in self._PATH_KEYS:
            state[key] = self._relative(state[key])
        state["best_k_models"] = {self._relative(p): score for p, score in state["best_k_models"].items()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Older checkpoints hold absolute paths (of wherever the run was): only the file names count,
        # since every file a ModelCheckpoint writes lies in its own directory.
        self._restored = True
        state = dict(state_dict)
        for key in self._PATH_KEYS:
            state[key] = self._here(state.get(key) or "")
        kept = {self._here(p): score for p, score in (state.get("best_k_models") or {}).items()}
        state["best_k_models"] = {p: score for p, score in kept.items() if p}
        if any(p and not Path(p).is_file() for p in (state["best_model_path"], *state["best_k_models"])):
            # The best checkpoint is gone (deleted, or not copied with the run): rank afresh from here
            # rather than test a file that does not exist.
            return
        state["dirpath"] = self.dirpath
        super().load_state_dict(state)

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        if self._restored and trainer.is_global_zero:
            self._set_aside_unknown_checkpoints(trainer)

    def _set_aside_unknown_checkpoints(self, trainer):
        """A kill after a new best checkpoint was written but before last.ckpt recorded it leaves that best of a
        timeline the resume discards (it trains those epochs again): it would stay beside the run's real best, and
        with top-k clean-up never reaching it, stay for good. Moved to checkpoints/discarded/, not deleted."""
        if not self.filename or not self.dirpath or not Path(self.dirpath).is_dir():
            return
        known = {Path(str(trainer.ckpt_path)).resolve()} if trainer.ckpt_path else set()
        for callback in trainer.checkpoint_callbacks:  # what every checkpoint callback of the run knows stays
            paths = [callback.best_model_path, callback.kth_best_model_path, callback.last_model_path]
            known |= {Path(p).resolve() for p in [*paths, *callback.best_k_models] if p}
        # This callback's own files: its file name with every {metric} a wildcard (and a -vN of a repeated name).
        pattern = re.sub(r"(\{[^}]*\})+\*?", "*", self.filename + "*") + self.FILE_EXTENSION
        unknown = sorted(p for p in Path(self.dirpath).glob(pattern) if p.is_file() and p.resolve() not in known)
        for path in unknown:
            target = _free_name(Path(self.dirpath) / DISCARDED / path.name)
            target.parent.mkdir(exist_ok=True)
            os.replace(path, target)
            log.warning(
                "%s was written after last.ckpt, by epochs this resume trains again (the run stopped before last.ckpt "
                "recorded it): moved to %s, so that it is not taken for this run's best",
                path.name,
                target,
            )

    def _relative(self, path: str) -> str:
        return Path(path).name if path else ""

    def _here(self, path: str) -> str:
        # A file name only, and one that stays in the directory: a crafted state naming ".." or another
        # folder must not make Lightning's top-k clean-up delete, or a save write, anything outside it.
        name = Path(str(path)).name
        return str(Path(self.dirpath) / name) if name not in ("", ".", "..") and self.dirpath else ""


def _free_name(path: Path) -> Path:
    """path, or path with -2, -3, ... before its suffix when that name is taken."""
    n, free = 1, path
    while free.exists():
        n += 1
        free = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return free


class RunRecord(Callback):
    def __init__(self, overrides: list[str]):
        self.overrides = [str(o) for o in overrides]

    def state_dict(self) -> dict[str, Any]:
        return {"overrides": self.overrides}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass  # a resumed run records the overrides it runs with now (fer.runs.resume put the earlier ones first)


class FaceSettings(Callback):
    def __init__(self, face: Mapping):
        self.face = dict(face)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        # Lightning calls this before the module's own hook, which merges its meta into this entry.
        checkpoint.setdefault("fer", {})["face"] = dict(self.face)
