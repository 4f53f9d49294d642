"""`python -m fer.export`: the same command as `python export.py` (fer/cli/export.py), from any directory.
onnx is imported only once the command runs: without it, the command's one-line "pip install onnx"."""

from fer.cli.export import main

if __name__ == "__main__":
    main()
