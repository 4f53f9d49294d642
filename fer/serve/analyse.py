"""infer.py's pipeline, one image at a time: the models load once (`Analyser.load`), then any number of
threads call `analyse` at once.

Everything is built by fer.infer.app's own functions (the classifier, the detector, the face settings
and alignment), so an image gives the same faces and probabilities here as `python infer.py source=photo.jpg`.
"""

import logging
import queue
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from fer.errors import FerError
from fer.infer.align import FaceAligner
from fer.infer.app import face_settings, make_detector, open_classifier, resolve_checkpoint
from fer.infer.draw import Annotator
from fer.infer.pipeline import Pipeline

log = logging.getLogger("fer.serve")


def validation_accuracy(path: Path) -> float | None:
    """A checkpoint's best validation (PublicTest) accuracy, from the history it stores; None for an ONNX export."""
    if path.suffix.lower() != ".ckpt":
        return None
    from fer.runs.checkpoint import read_checkpoint

    history = read_checkpoint(path)["fer"].get("history") or []
    scores = [h["val/acc"] for h in history if isinstance(h, dict) and "val/acc" in h]
    return round(float(max(scores)), 4) if scores else None


def hex_rgb(bgr) -> str:
    return "#{:02x}{:02x}{:02x}".format(*reversed(bgr))


@dataclass
class Analyser:
    classifier: object  # FaceClassifier or OnnxFaceClassifier: one, shared (its forward pass is thread-safe)
    # (detector, aligner) pairs, one per image analysed at once: OpenCV's cascades (detector=haar, the
    # aligner's eye finder) keep scratch buffers inside and must not serve two threads together.
    tools: queue.Queue
    gamma: float | str | None
    detect: bool  # the default of a request's detect=
    info: dict  # what GET /info shows

    @classmethod
    def load(cls, cfg: DictConfig, given_face_keys: Iterable[str] = ()) -> "Analyser":
        """The model, and `cfg.concurrency` detectors and aligners, as infer.py builds them; FerError if the config is wrong."""
        path = resolve_checkpoint(cfg.ckpt_path)
        classifier = open_classifier(cfg.backend, path, cfg.threads, cfg.tta)
        settings = face_settings(classifier.face, OmegaConf.to_container(cfg.preprocess), set(given_face_keys))
        if cfg.concurrency < 1 or cfg.threads < 1:
            raise FerError(f"concurrency and threads must be at least 1, not {cfg.concurrency} and {cfg.threads}")
        tools = queue.Queue()
        for _ in range(cfg.concurrency):
            # Uploads are photos (or a page's frames, one request each): searched as infer.py searches photos.
            detector = make_detector(cfg.detector, still=True)
            tools.put((detector, FaceAligner(settings["align"], settings["margin"], eye_cascade=cfg.eye_cascade)))
        colours = Annotator(classifier.class_names).colours  # infer.py's drawing colours, BGR
        info = {
            "model": path.name,
            "backend": cfg.backend,
            "classes": classifier.class_names,
            "colours": {n: hex_rgb(c) for n, c in zip(classifier.class_names, colours)},
            "validation_accuracy": validation_accuracy(path),
            "image_size": classifier.image_size,
            "tta": cfg.tta,
            "detector": cfg.detector._target_.rsplit(".", 1)[-1],
            "face": settings,
            "uncertain_below": cfg.uncertain_below,
        }
        log.info(f"loaded {path} ({cfg.backend}), detector {info['detector']}")
        return cls(classifier, tools, settings["gamma"], bool(cfg.detect), info)

    def analyse(self, image: np.ndarray, detect: bool | None = None) -> dict:
        """One image (as decoded) -> the JSON answer of POST /predict."""
        detect = self.detect if detect is None else detect
        tools = self.tools.get()  # never waits: the server runs at most `concurrency` analyses at once
        try:
            # A Pipeline per request: a few references, whose stopwatch and frame count stay the request's own.
            # No tracker: every image stands alone, so nothing is kept between requests.
            detector, aligner = tools if detect else (None, None)
            faces = Pipeline(self.classifier, None, aligner, detector, gamma=self.gamma).analyse(image)
        finally:
            self.tools.put(tools)
        names = self.classifier.class_names
        return {
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "faces": [
                {
                    "box": [int(v) for v in f.box],
                    "label": names[f.label],
                    "score": round(f.confidence, 4),
                    "probabilities": {n: round(float(p), 4) for n, p in zip(names, f.probs)},
                    "landmarks": None if f.landmarks is None else np.round(f.landmarks, 1).tolist(),
                }
                for f in faces
            ],
        }


def versions() -> Mapping[str, str]:
    import importlib.metadata as md

    found = {}
    for name in ("fer", "torch", "onnxruntime", "opencv-python", "fastapi", "uvicorn"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return found
