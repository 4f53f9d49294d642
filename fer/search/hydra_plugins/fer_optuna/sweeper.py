"""hydra/sweeper=optuna (conf/hydra/sweeper/optuna.yaml): fer.search.study.Search behind Hydra's Sweeper."""

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    def __init__(self, sampler, pruner, direction, storage, study_name, n_trials, n_jobs, params):
        from fer.search.study import Search  # Optuna only when a search runs, not at every Hydra start

        self.search = Search(sampler, pruner, direction, storage, study_name, n_trials, n_jobs, params)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]):
        return self.search.sweep(arguments)
