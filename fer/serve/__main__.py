"""`python -m fer.serve`: the same command as `python serve.py` (fer/cli/serve.py), from any directory."""

from fer.cli.serve import main

main()
