"""Hyper-parameter search with Optuna: `python train.py -m hparams_search=optuna`.

space: Hydra sweep overrides (interval, tag(log, ...), choice, range) as Optuna distributions.
study: the sweeper's ask/tell loop over Hydra jobs, its study kept in a database and resumed.
pruning: the Lightning callback inside a trial's training job that reports val/acc each epoch.
The Hydra-facing class lives in hydra_plugins.fer_optuna (fer/search/hydra_plugin/), where Hydra
looks for plugins; it hands everything to study.
"""
