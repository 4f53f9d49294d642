"""The sweeper's loop: ask Optuna for trials, launch each as a Hydra job, tell the study what it returned.

Trial N is launched as job N (hydra.job.num), so its run dir is N_<its values> and its training job finds
the trial (fer/search/pruning.py). The study lives in `storage`; n_trials counts the study's trials, so
the same command on the same sweep dir goes on where an interrupted search stopped:
- finished trials (complete, pruned, failed) are not run again;
- a trial this machine's sweeper was running when it was killed (its process is gone) is run again in its
  own run dir, from its last checkpoint when it has one, or told from its metrics.json when its job had
  finished. A trial still running elsewhere (another machine sharing a database) is left to its sweeper.
"""

import json
import logging
import math
import os
import socket
from pathlib import Path

import optuna
from hydra.core.plugins import Plugins
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from fer.errors import FerError
from fer.search.pruning import PRUNED_ATTR
from fer.search.space import as_override, grid, parse_space, suggest
from fer.train.sweep import job_number, reproduce_command

log = logging.getLogger(__name__)

OWNER_ATTR = "sweeper"  # host:pid of the sweeper process that launched the trial
COMMAND_ATTR = "command"  # the one-run command that trains the trial again (also in optuna-dashboard)


class Search:
    def __init__(self, sampler, pruner, direction: str, storage: str | None, study_name: str, n_trials: int, n_jobs: int, params):
        self.sampler, self.pruner, self.direction = sampler, pruner, direction
        self.storage_url, self.study_name = storage, study_name
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.params = OmegaConf.to_container(params) if isinstance(params, DictConfig) else dict(params or {})
        if n_trials < 1 or n_jobs < 1:
            raise FerError(f"hydra.sweeper.n_trials ({n_trials}) and hydra.sweeper.n_jobs ({n_jobs}) must be at least 1")

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig):
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.sweep_dir = Path(config.hydra.sweep.dir)

    def sweep(self, arguments: list[str]):
        space, fixed = parse_space([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        self.space, self.fixed = space, [as_override(k, v) for k, v in fixed.items()]
        self.study = self._open_study()
        sampler, n_trials = self._sampler(space)
        self.study.sampler = sampler
        log.info("study %s in %s: %s, %s", self.study_name, self.storage_url, type(sampler).__name__, type(self.pruner).__name__)
        if self.storage_url is None:
            log.warning("hydra.sweeper.storage=null: the study lives in memory; no pruning, and nothing to resume")

        for trial in self._interrupted():
            self._resume(trial)
        while (to_go := n_trials - len(self.study.get_trials(deepcopy=False, states=_COUNTED))) > 0:
            trials = [self.study.ask() for _ in range(min(self.n_jobs, to_go))]
            self._run(trials, [self._overrides(t) for t in trials])
        return self._report()

    def _sampler(self, space: dict) -> tuple[optuna.samplers.BaseSampler, int]:
        """The sampler (conf/hydra/sweeper/sampler, given as a partial) and the trials it can give.
        A seeded study that goes on draws from seed + its trials so far: its first draws again would
        repeat the parameters of its first trials."""
        arguments, n_trials = {}, self.n_trials
        seed, done = self.sampler.keywords.get("seed"), len(self.study.get_trials(deepcopy=False))
        if seed is not None and done:
            arguments["seed"] = seed + done
        if self.sampler.func is optuna.samplers.GridSampler:  # its grid is the search space's values
            arguments["search_space"] = points = grid(space)
            n_trials = min(n_trials, math.prod(len(v) for v in points.values()))
        return self.sampler(**arguments), n_trials

    def _open_study(self) -> optuna.Study:
        if self.storage_url and self.storage_url.startswith("sqlite:///"):
            Path(self.storage_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.storage = optuna.storages.get_storage(self.storage_url)
        try:
            return optuna.create_study(
                storage=self.storage,
                study_name=self.study_name,
                pruner=self.pruner,
                direction=self.direction,
                load_if_exists=True,
            )
        except ValueError as e:  # e.g. a stored study of that name that minimises
            raise FerError(f"study {self.study_name} in {self.storage_url}: {e}") from e

    def _overrides(self, trial: optuna.trial.BaseTrial) -> list[str]:
        """What the job of `trial` is launched with: the command line's overrides, then the trial's values."""
        if isinstance(trial, optuna.trial.Trial):
            for key, d in self.space.items():
                suggest(trial, key, d)
        overrides = [*self.fixed, *(as_override(k, trial.params[k]) for k in self.space if k in trial.params)]
        if isinstance(trial, optuna.trial.Trial):
            trial.set_user_attr(OWNER_ATTR, _me())
            trial.set_user_attr(COMMAND_ATTR, reproduce_command(overrides))
        return overrides

    def _run(self, trials: list, overrides: list[list[str]]):
        """Launches trials (numbers in a row go together: job N is trial N) and tells the study each result."""
        start = 0
        while start < len(trials):
            end = start + 1
            while end < len(trials) and trials[end].number == trials[end - 1].number + 1:
                end += 1
            returns = self.launcher.launch(overrides[start:end], initial_job_idx=trials[start].number)
            for trial, ret in zip(trials[start:end], returns):
                self._tell(trial.number, _returned(ret))
            start = end

    def _tell(self, number: int, value):
        trial_id = self._trial_id(number)
        if PRUNED_ATTR in self.storage.get_trial_user_attrs(trial_id):
            state, values = TrialState.PRUNED, None
        elif value is None or not math.isfinite(value):
            state, values = TrialState.FAIL, None
        else:
            state, values = TrialState.COMPLETE, value
        try:
            self.study.tell(number, values, state=state)
        except RuntimeError as e:
            # GridSampler stops the study once every point is visited; outside study.optimize that is an error,
            # after the trial's state is stored.
            if "Study.stop" not in str(e):
                raise
        log.info("trial %d: %s%s", number, state.name.lower(), f", val/acc {value:.4f}" if state == TrialState.COMPLETE else "")

    def _trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.storage.get_study_id_from_name(self.study_name), number)

    def _interrupted(self) -> list[optuna.trial.FrozenTrial]:
        """Trials a sweeper of this machine left running when it was killed."""
        host = socket.gethostname()
        stale = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner_host, _, pid = str(t.user_attrs.get(OWNER_ATTR, "")).rpartition(":")
            if owner_host == host and pid.isdigit() and not _alive(int(pid)):
                stale.append(t)
        return stale

    def _resume(self, trial: optuna.trial.FrozenTrial):
        job_dir = next(
            (d for d in sorted(self.sweep_dir.iterdir()) if job_number(d) == trial.number and (d / ".hydra").is_dir()), None
        )
        if job_dir and (job_dir / "metrics.json").exists():  # the job had finished; its sweeper had not heard
            log.info("trial %d had finished before the interruption: told from %s", trial.number, job_dir / "metrics.json")
            self._tell(trial.number, json.loads((job_dir / "metrics.json").read_text())["val"]["acc"])
            return
        overrides = self._overrides(trial)
        last = job_dir / "checkpoints" / "last.ckpt" if job_dir else None
        if last and last.exists():
            overrides.append(f'ckpt_path="{last}"')  # quoted: a sweep dir the user named may hold commas
        log.info("trial %d was interrupted: run again%s", trial.number, f" from {last}" if last and last.exists() else "")
        self.storage.set_trial_user_attr(self._trial_id(trial.number), OWNER_ATTR, _me())
        self._run([trial], [overrides])

    def _report(self):
        completed = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        counts = {s.name.lower(): len(self.study.get_trials(deepcopy=False, states=(s,))) for s in _COUNTED}
        results = {"name": "optuna", "study": self.study_name, "storage": self.storage_url, "trials": counts}
        if completed:
            best = self.study.best_trial
            results.update(
                best_trial=best.number, best_value=best.value, best_params=best.params, command=best.user_attrs.get(COMMAND_ATTR)
            )
            log.info("best trial %d: val/acc %.4f; trained again by: %s", best.number, best.value, results["command"])
        else:
            log.warning("no trial of study %s completed", self.study_name)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / "optimization_results.yaml")
        return results


_COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


def _returned(ret):
    """A job's return value as a float, None when it failed (run_job records why; a launcher may raise)."""
    try:
        value = ret.return_value
    except Exception as e:
        log.error("a trial's job raised: %s", e)
        return None
    return float(value) if isinstance(value, (int, float)) else None


def _me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
