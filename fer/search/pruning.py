"""Inside a trial's training job: each epoch's val/acc to the Optuna trial, and a stop when the pruner says so.

The sweeper (fer/search/study.py) launches trial N as job N, so the job finds its trial from its
storage, study name and hydra.job.num (conf/hparams_search/optuna.yaml passes them). The pruner is
built from the same config as the sweeper's: a study loaded from storage has no pruner of its own.
A pruned run stops after that epoch and is tested as any other (its numbers are what it reached); the
trial learns it was pruned from the attribute set here and pruned.txt in the run dir tells the summary.
"""

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from fer.train.sweep import PRUNED_FILE

log = logging.getLogger(__name__)

PRUNED_ATTR = "pruned_after_epoch"  # a trial user attribute: the sweeper tells the study PRUNED


class OptunaPruning(Callback):
    def __init__(self, storage: str | None, study_name: str, trial: int | None, pruner, run_dir: str, monitor: str = "val/acc"):
        self.storage, self.study_name, self.trial_number = storage, study_name, trial
        self.pruner, self.run_dir, self.monitor = pruner, Path(run_dir), monitor
        self._trial = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str):
        # A job outside a search (no trial number, no study to report to) trains as usual.
        if stage != "fit" or self.trial_number is None or self.storage is None or not trainer.is_global_zero:
            return
        import optuna

        storage = optuna.storages.get_storage(self.storage)
        study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=self.pruner)
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(self.study_name), self.trial_number
        )
        self._trial = optuna.trial.Trial(study, trial_id)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule):
        if trainer.sanity_checking:
            return
        prune = False
        value = trainer.callback_metrics.get(self.monitor)
        if self._trial is not None and value is not None:
            epoch = trainer.current_epoch
            self._trial.report(float(value), step=epoch)
            prune = self._trial.should_prune()
            if prune:
                self._trial.set_user_attr(PRUNED_ATTR, epoch)
                message = f"pruned by Optuna after epoch {epoch}: {self.monitor} {float(value):.4f}"
                (self.run_dir / PRUNED_FILE).write_text(message + "\n")
                log.info("%s; the run stops here", message)
        # Under DDP every process stops with rank 0, which alone talks to the study.
        if trainer.strategy.broadcast(prune, src=0):
            trainer.should_stop = True
