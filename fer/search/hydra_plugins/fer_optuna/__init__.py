# Installed as hydra_plugins.fer_optuna (pyproject's package-dir): Hydra instantiates sweepers only from
# the hydra_plugins namespace, and finds them by importing its modules at every start, so these stay
# small and import neither Optuna nor torch.
