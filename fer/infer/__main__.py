"""`python -m fer.infer`: the same command as `python infer.py` (fer/cli/infer.py), from any directory."""

from fer.cli.infer import main

main()
