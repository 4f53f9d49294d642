"""The HTTP API and the webcam page, on infer.py's pipeline.

    python serve.py                                  # http://127.0.0.1:8000
    python serve.py host=0.0.0.0 port=8080 workers=2
    python serve.py backend=onnx ckpt_path=deploy/fer.onnx

The same command as `python -m fer.serve` and `fer-serve` (fer/cli/serve.py), which work from any directory.
"""

from fer.cli.serve import main

if __name__ == "__main__":
    main()
