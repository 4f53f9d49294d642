"""Export a trained model to ONNX, to run it without PyTorch (infer.py backend=onnx, or onnxruntime anywhere).

    python export.py ckpt_path=outputs/runs/<date>/<time>/checkpoints/best-epoch41-acc0.6642.ckpt  # .onnx beside it
    python export.py ckpt_path=fer/weights/fer2013_regularized.ckpt output=deploy/fer.onnx overwrite=true
"""

import logging
import sys

import hydra
from omegaconf import DictConfig

from fer.errors import FerError, exit_on_user_error

log = logging.getLogger("fer.export")


def fail(message: str):
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


@hydra.main(config_path="conf", config_name="export", version_base="1.3")
def main(cfg: DictConfig):
    try:
        from fer.export import export_onnx  # heavy imports after Hydra has parsed the command line

        path, facts = export_onnx(cfg.ckpt_path, cfg.output, cfg.overwrite, cfg.opset)
    except ModuleNotFoundError as e:
        if e.name not in ("onnx", "onnxruntime"):
            raise
        fail(f"export needs {e.name}: pip install onnx onnxruntime")
    except FerError as e:  # inside Hydra's task, or Hydra would print it with a traceback
        fail(str(e))
    log.info(f"wrote {path}: {facts['net'].get('arch')}, classes {', '.join(facts['class_names'])}; "
             f"largest difference to PyTorch {facts['difference']:.1e}")
    log.info(f"run it: python infer.py backend=onnx ckpt_path={path} source=0")


if __name__ == "__main__":
    with exit_on_user_error():
        main()
