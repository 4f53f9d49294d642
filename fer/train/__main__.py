"""`python -m fer.train`: the same command as `python train.py` (fer/cli/train.py), from any directory."""

from fer.cli.train import main

if __name__ == "__main__":
    main()
