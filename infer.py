"""Emotion recognition on a camera, a video, an image or a folder of images.

    python infer.py source=0 # first webcam, live window
    python infer.py source=clip.mp4 output=clip_annotated.mp4
    python infer.py source=photo.jpg output=photo_annotated.jpg
    python infer.py source=photos/ output=annotated/ predictions=preds.csv
    python infer.py source=crops/ detect=false predictions=preds.csv   # pre-cropped faces
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from fer.errors import FerError, exit_on_user_error
from fer.overrides import apply_renames


@hydra.main(config_path="conf", config_name="infer", version_base="1.3")
def main(cfg: DictConfig):
    from hydra.core.hydra_config import HydraConfig

    from fer.infer.app import given_face_keys, run  # heavy imports after Hydra has parsed the command line

    try:
        run(cfg, given_face_keys(HydraConfig.get().overrides.task))
    except FerError as e:  # inside Hydra's task, or Hydra would print it with a traceback
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


def require_known_detector(argv: list[str]):
    """detector=NAME must name a file in conf/detector/; checked before Hydra, whose own message is a page."""
    known = sorted(p.stem for p in (Path(__file__).resolve().parent / "conf" / "detector").glob("*.yaml"))
    for arg in argv[1:]:
        if arg.startswith("detector=") and arg.split("=", 1)[1] not in known:
            raise FerError(f"{arg}: no such detector; choose one of {', '.join(known)} (conf/detector/)")


if __name__ == "__main__":
    sys.argv = apply_renames(sys.argv)
    with exit_on_user_error():
        require_known_detector(sys.argv)
        main()
