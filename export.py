"""Export a trained model to ONNX, to run it without PyTorch (infer.py backend=onnx, or onnxruntime anywhere).

    python export.py ckpt_path=outputs/runs/<date>/<time>/checkpoints/best-epoch41-acc0.6642.ckpt  # .onnx beside it
    python export.py ckpt_path=fer/weights/fer2013_regularized.ckpt output=deploy/fer.onnx overwrite=true

The same command as `python -m fer.export` and `fer-export` (fer/cli/export.py), which work from any directory.
"""

from fer.cli.export import main

if __name__ == "__main__":
    main()
