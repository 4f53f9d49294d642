"""Export a trained model to ONNX: `python export.py`, `python -m fer.export`, `fer-export`."""

import logging

import hydra
from omegaconf import DictConfig

from fer.errors import FerError, exit_on_user_error, hydra_errors_raise, task_exits_on_user_error
from fer.paths import CONF_DIR

log = logging.getLogger("fer.export")


@hydra.main(config_path=str(CONF_DIR), config_name="export", version_base="1.3")
@task_exits_on_user_error
def task(cfg: DictConfig):
    from fer.config import check_export

    check_export(cfg)
    try:
        from fer.export import export_onnx  # heavy imports after Hydra has parsed the command line

        path, facts = export_onnx(cfg.ckpt_path, cfg.output, cfg.overwrite, cfg.opset)
    except ModuleNotFoundError as e:
        if e.name not in ("onnx", "onnxruntime"):
            raise
        raise FerError(f"export needs {e.name}: pip install onnx onnxruntime") from None
    log.info(
        f"wrote {path}: {facts['net'].get('arch')}, classes {', '.join(facts['class_names'])}; "
        f"largest difference to PyTorch {facts['difference']:.1e}"
    )
    log.info(f"run it: python infer.py backend=onnx ckpt_path={path} source=0")


def main():
    with exit_on_user_error(), hydra_errors_raise():
        task()
