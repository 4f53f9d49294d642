"""The HTTP service and its webcam page: `python serve.py`, `python -m fer.serve`, `fer-serve`."""

import os
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from fer.errors import exit_on_user_error, hydra_errors_raise, task_exits_on_user_error
from fer.paths import CONF_DIR

# How the parent hands its config to the processes uvicorn starts for workers > 1 (each loads its own models).
CONFIG_VAR, FACE_KEYS_VAR = "FER_SERVE_CONFIG", "FER_SERVE_FACE_KEYS"


def app_for(cfg: DictConfig, face_keys, analyser=None):
    from fer.serve.analyse import Analyser
    from fer.serve.app import create_app

    load = (lambda: analyser) if analyser is not None else (lambda: Analyser.load(cfg, face_keys))
    return create_app(load, cfg.concurrency, cfg.max_upload_mb, cfg.max_pixels)


def worker_app():
    """uvicorn's app factory in each worker process (workers > 1)."""
    cfg = OmegaConf.create(os.environ[CONFIG_VAR])
    return app_for(cfg, [k for k in os.environ.get(FACE_KEYS_VAR, "").split(",") if k])


@hydra.main(config_path=str(CONF_DIR), config_name="serve", version_base="1.3")
@task_exits_on_user_error
def task(cfg: DictConfig):
    from hydra.core.hydra_config import HydraConfig

    if "cv2" not in sys.modules:  # OpenCV reads its pixel limit once, when imported: formats whose header fer does not read
        os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(cfg.max_pixels))
    import uvicorn

    from fer.config import check_serve
    from fer.infer.app import given_face_keys  # heavy imports after Hydra has parsed the command line
    from fer.serve.analyse import Analyser

    check_serve(cfg, HydraConfig.get().runtime.choices)
    face_keys = given_face_keys(HydraConfig.get().overrides.task)
    analyser = Analyser.load(cfg, face_keys)  # a wrong ckpt_path or setting: one line here, before serving
    print(f"fer: serving on http://{cfg.host}:{cfg.port} (the page), /docs (the API)", flush=True)
    if cfg.workers == 1:
        uvicorn.run(app_for(cfg, face_keys, analyser), host=cfg.host, port=cfg.port, log_level="warning")
        return
    del analyser  # each worker process loads its own
    os.environ[CONFIG_VAR] = OmegaConf.to_yaml(cfg, resolve=True)
    os.environ[FACE_KEYS_VAR] = ",".join(sorted(face_keys))
    uvicorn.run("fer.cli.serve:worker_app", factory=True, host=cfg.host, port=cfg.port, workers=cfg.workers, log_level="warning")


def main():
    with exit_on_user_error(), hydra_errors_raise():
        task()
