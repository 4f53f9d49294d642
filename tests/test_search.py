"""Hyper-parameter search: `python train.py -m hparams_search=optuna`, fer's own sweeper on Optuna >= 4."""

import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from fer.errors import FerError
from fer.search.space import grid, parse_space
from fer.train import sweep

from conftest import ROOT, SHRINK, run_cli

CONF = ROOT / "conf"


def make(overrides):
    with initialize_config_dir(str(CONF), version_base="1.3", job_name="train"):
        return compose("train", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("model", ["baseline", "regularized"])
def test_the_search_space_is_the_chosen_models(model):
    sweeper = make([f"model={model}", "hparams_search=optuna"]).hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.fer_optuna.sweeper.OptunaSweeper" and sweeper.direction == "maximize"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed == 42
    assert sweeper.pruner._target_ == "optuna.pruners.MedianPruner"
    assert sweeper.storage.startswith("sqlite:///") and sweeper.storage.endswith("/optuna.db")  # in the sweep dir
    space, fixed = parse_space([f"{k}={v}" for k, v in sweeper.params.items()])
    assert sorted(k.lstrip("+") for k in space) == ["model.net.dropout", "model.optimizer.lr", "model.optimizer.weight_decay"]
    assert not fixed and space["model.optimizer.lr"].log and not space["model.net.dropout"].log
    # an experiment that picks the model picks its search space too
    assert (
        make(["experiment=paper_baseline", "hparams_search=optuna"]).hydra.sweeper.params
        == make(["model=baseline", "hparams_search=optuna"]).hydra.sweeper.params
    )


@pytest.mark.parametrize("sampler", ["tpe", "random", "grid"])
def test_every_sampler_option_composes(sampler):
    cfg = make(["hparams_search=optuna", f"hydra/sweeper/sampler={sampler}", "hydra/sweeper/pruner=none"]).hydra.sweeper
    assert cfg.sampler._target_.startswith("optuna.samplers.") and cfg.pruner._target_ == "optuna.pruners.NopPruner"


def test_hydras_sweep_syntax_becomes_optuna_distributions():
    space, fixed = parse_space(
        [
            "a=interval(0.1, 0.5)",
            "b=tag(log, interval(1e-5, 1e-2))",
            "c=interval(2, 8)",
            "d=choice(sgd, adam)",
            "e=range(1, 10, 3)",
            "f=range(0.0, 0.3, 0.1)",
            "g=5",
            "a=0.2",  # the command line fixes what the space file sweeps
        ]
    )
    assert fixed == {"g": "5", "a": "0.2"} and "a" not in space
    assert space["b"] == FloatDistribution(1e-5, 1e-2, log=True)
    assert space["c"] == FloatDistribution(2, 8)  # Hydra reads interval bounds as floats: range() for ints
    assert space["d"] == CategoricalDistribution(["sgd", "adam"])
    assert space["e"] == IntDistribution(1, 7, step=3)  # 1, 4, 7: range() stops before its end, as Python's
    assert space["f"].step == pytest.approx(0.1) and space["f"].high == pytest.approx(0.2)
    points = grid({k: space[k] for k in ("d", "e")})
    assert points == {"d": ["sgd", "adam"], "e": [1, 4, 7]}
    with pytest.raises(FerError, match="b is a continuous interval"):
        grid(space)


def test_what_a_search_needs_is_named_in_one_line(monkeypatch):
    real_find_spec = sweep.importlib.util.find_spec

    def installed_except(*missing, present=()):
        monkeypatch.setattr(
            sweep.importlib.util,
            "find_spec",
            lambda name: object() if name in present else None if name in missing else real_find_spec(name),
        )

    installed_except("optuna")
    with pytest.raises(FerError, match=r"^hparams_search=optuna needs optuna, which is not installed: pip install 'optuna>=4'$"):
        sweep.require_plugins(["train.py", "-m", "hparams_search=optuna"])
    installed_except(present=("hydra_plugins.hydra_optuna_sweeper",))  # the old plugin, upgraded from
    with pytest.raises(FerError, match="pip uninstall hydra-optuna-sweeper"):
        sweep.require_plugins(["train.py", "-m", "hparams_search=optuna"])
    installed_except("hydra_plugins.fer_optuna")  # fer installed before its sweeper existed
    with pytest.raises(FerError, match=r"pip install -e \."):
        sweep.require_plugins(["train.py", "-m", "hydra/sweeper=optuna"])
    installed_except()
    monkeypatch.setattr(sweep.importlib.metadata, "version", lambda name: "2.10.1")
    with pytest.raises(FerError, match="needs optuna 4 or later, not 2.10.1"):
        sweep.require_plugins(["train.py", "-m", "hparams_search=optuna"])


def _search(data: Path, sweep_dir: Path, *extra: str):
    # the tiny run of the tests (SHRINK), two epochs, so that a pruned trial shows it stopped early
    shrink = {**SHRINK, "trainer.max_epochs": "2"}
    args = ["train.py", "-m", "hparams_search=optuna", "model=baseline", f"data.path={data}"]
    args += [f"{k}={v}" for k, v in shrink.items()] + ["trainer.enable_progress_bar=false", f"hydra.sweep.dir={sweep_dir}"]
    r = run_cli([*args, *extra])
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return r


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.slow
def test_a_tiny_study_resumes_after_an_interruption_prunes_and_names_the_best(tiny_csv, tmp_path):
    sweep_dir = tmp_path / "search"
    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"  # the default: in the sweep dir

    # two trials run to the end
    _search(tiny_csv, sweep_dir, "hydra.sweeper.n_trials=2", "hydra/sweeper/pruner=none")
    study = optuna.load_study(study_name="fer", storage=storage)
    first = study.trials
    assert [t.state for t in first] == [TrialState.COMPLETE] * 2
    assert all(sorted(t.intermediate_values) == [0, 1] for t in first)  # val/acc after each epoch

    # a third trial was running when its sweeper was killed (its process is gone, no run dir yet)
    space, _ = parse_space(
        [f"{k}={v}" for k, v in make(["model=baseline", "hparams_search=optuna"]).hydra.sweeper.params.items()]
    )
    study.enqueue_trial({"model.optimizer.lr": 1e-3, "++model.optimizer.weight_decay": 1e-5, "model.net.dropout": 0.25})
    interrupted = study.ask(space)
    interrupted.set_user_attr("sweeper", f"{socket.gethostname()}:{_dead_pid()}")

    # The same command again, with n_trials=4 and a pruner that prunes every trial after its first epoch: the
    # finished trials are not run again; the interrupted one runs with its own values, then one new trial.
    r = _search(
        tiny_csv,
        sweep_dir,
        "hydra.sweeper.n_trials=4",
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
        "+hydra.sweeper.pruner.lower=1.1",  # no accuracy reaches it
    )
    study = optuna.load_study(study_name="fer", storage=storage)
    trials = study.trials
    assert len(trials) == 4 and trials[:2] == first  # unchanged: same values, same times
    assert trials[2].number == interrupted.number == 2
    assert trials[2].params == {"model.optimizer.lr": 1e-3, "++model.optimizer.weight_decay": 1e-5, "model.net.dropout": 0.25}
    assert [t.state for t in trials[2:]] == [TrialState.PRUNED] * 2
    assert all(list(t.intermediate_values) == [0] for t in trials[2:])  # stopped after their first epoch of two
    # the seeded sampler, started again, does not repeat the first session's draws
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4
    (job,) = sweep_dir.glob("2_*")
    assert "dropout-0.25" in job.name and "pruned by Optuna after epoch 0" in (job / "pruned.txt").read_text()
    assert yaml.safe_load((job / "metrics.json").read_text())["epochs"] == 1
    assert sorted(d.name.split("_")[0] for d in sweep_dir.iterdir() if d.is_dir()) == ["0", "1", "2", "3"]

    # the summary: the pruned trial marked, the best trial and the command that trains it again
    summary = (sweep_dir / "summary.md").read_text()
    assert "| pruned by Optuna after epoch 0" in summary
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_trial"] == study.best_trial.number and best["best_value"] == pytest.approx(study.best_value)
    assert best["trials"] == {"complete": 2, "pruned": 2, "fail": 0, "running": 0}
    command = best["command"]
    assert command.startswith("python train.py ") and "hparams_search" not in command and f"data.path={tiny_csv}" in command
    assert all(f"{k}={v}" in command for k, v in study.best_trial.params.items())
    assert f"Best: job {study.best_trial.number} " in summary and f"    {command}\n" in summary
    assert "jobs failed" not in r.stderr  # a pruned trial is no failure
