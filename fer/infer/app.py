"""infer.py's body: the config's plain values -> the pipeline's objects -> one run -> a summary."""

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fer.errors import FerError
from fer.infer.align import FaceAligner
from fer.infer.classify import FaceClassifier
from fer.infer.pipeline import Pipeline, RunSummary
from fer.infer.sinks import (IMAGE_OUTPUTS, VIDEO_CODECS, FolderSink, ImageFileSink, PredictionsFile, VideoFileSink, Window,
                             wants_window)
from fer.infer.sources import ImageSource, VideoSource, open_source
from fer.preprocess import IMAGE_SIZE

log = logging.getLogger("fer.infer")
NEEDS_CHECKPOINT = (
    "no model given: pass ckpt_path=PATH to a checkpoint from `python train.py` "
    "(outputs/runs/<date>/<time>/checkpoints/best.ckpt)"
)


def require_checkpoint(ckpt_path: str | None) -> Path:
    # When a trained model ships, conf/infer.yaml's ckpt_path default names it and this never fires.
    if not ckpt_path:
        raise FerError(NEEDS_CHECKPOINT)
    return Path(str(ckpt_path)).expanduser()


def given_preprocess_keys(overrides: Iterable[str]) -> set[str]:
    """The preprocess.* keys set on the command line (those win over the checkpoint's settings)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = set()
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        name = override.key_or_group
        if name == "preprocess":
            keys.add("*")
        elif name.startswith("preprocess."):
            keys.add(name.split(".", 1)[1])
    return keys


def face_settings(stored: Mapping | None, configured: Mapping, given: set[str]) -> dict:
    """The face pipeline the model was trained with (its checkpoint), except what the command line sets."""
    settings = {**configured, **(stored or {})}
    settings.update({k: v for k, v in configured.items() if k in given or "*" in given})
    if int(settings.get("image_size", IMAGE_SIZE)) != IMAGE_SIZE:
        raise FerError(f"preprocess.image_size is {settings['image_size']}, but faces are prepared at {IMAGE_SIZE}x{IMAGE_SIZE} (FER2013's size)")
    return settings


def open_sinks(cfg: DictConfig, source: ImageSource | VideoSource, class_names: list[str]) -> list:
    """The outputs a run writes; each refuses to replace an existing file unless overwrite=true."""
    sinks = []
    try:
        if cfg.output:
            sinks.append(output_sink(Path(str(cfg.output)).expanduser(), source, cfg.overwrite))
        if cfg.predictions:
            with_file = source.kind in ("image", "folder")
            sinks.append(PredictionsFile(Path(str(cfg.predictions)).expanduser(), class_names, with_file, cfg.overwrite))
    except BaseException:
        for sink in sinks:  # an output just created must not block the next try as "already exists"
            sink.close()
            sink.path.unlink(missing_ok=True)
        raise
    return sinks


def output_sink(path: Path, source: ImageSource | VideoSource, overwrite: bool):
    suffix = path.suffix.lower()
    source_paths = getattr(source, "paths", [])
    if any(path.resolve() == p.resolve() for p in source_paths) or (source.kind == "folder" and path.resolve() == source.root.resolve()):
        raise FerError(f"output={path} is the source itself; choose another name")
    if source.kind in ("video", "camera", "stream"):
        if suffix not in VIDEO_CODECS:
            raise FerError(f"a video source writes a video: output= must end in {', '.join(sorted(VIDEO_CODECS))}, not {path.name!r}")
        return VideoFileSink(path, source.fps, source.size, overwrite)
    if source.kind == "image" and suffix in IMAGE_OUTPUTS:
        return ImageFileSink(path, overwrite)
    if suffix in IMAGE_OUTPUTS or suffix in VIDEO_CODECS:
        raise FerError(f"an image {source.kind} source writes {'an image or ' if source.kind == 'image' else ''}a folder: "
                       f"output={path} should be a folder name such as annotated/")
    names = [p.relative_to(source.root).as_posix() if source.root else p.name for p in source.paths]
    return FolderSink(path, names, overwrite)


def build_pipeline(cfg: DictConfig, source: ImageSource | VideoSource, classifier: FaceClassifier, settings: Mapping) -> Pipeline:
    video = source.kind in ("video", "camera", "stream")
    window = Window() if wants_window(cfg.display) else None
    try:
        sinks = open_sinks(cfg, source, classifier.class_names)
    except BaseException:
        if window is not None:
            window.close()
        raise
    if not sinks and window is None and video:
        log.info("note: no output=, predictions= or window (display is off): this run only prints a summary")
    return Pipeline(
        classifier=classifier,
        annotator=instantiate(cfg.draw, class_names=classifier.class_names, show_ids=cfg.draw.show_ids and video),
        aligner=FaceAligner(settings["align"], settings["margin"], eye_cascade=cfg.eye_cascade) if cfg.detect else None,
        detector=instantiate(cfg.detector) if cfg.detect else None,
        gamma=settings["gamma"],
        tracker=instantiate(cfg.tracker) if video else None,
        detect_every=cfg.detect_every,
        sinks=sinks,
        window=window,
        max_frames=cfg.max_frames,
        enlarge_small_images=not video,
        print_faces=not video and not cfg.predictions,
    )


def report(summary: RunSummary, source: ImageSource | VideoSource, pipeline: Pipeline) -> list[str]:
    what = getattr(source, "description", None) or (str(source.root) if source.kind == "folder" else str(source.paths[0]))
    unit = "images" if source.kind in ("image", "folder") else "frames"
    lines = [f"{what}: {summary.frames} {unit} in {summary.seconds:.1f} s ({summary.fps:.1f} per second); "
             f"{summary.faces} faces, {summary.frames_without_faces} {unit} without a face"]
    if summary.labels:
        lines.append("labels: " + ", ".join(f"{name} {n}" for name, n in summary.labels.most_common()))
    skipped = source.skipped if isinstance(source.skipped, int) else len(source.skipped)
    if skipped:
        detail = "" if isinstance(source.skipped, int) else ": " + ", ".join(source.skipped[:5]) + (" ..." if skipped > 5 else "")
        lines.append(f"skipped {skipped} {'corrupt frames' if unit == 'frames' else 'unreadable files'}{detail}")
    if summary.stopped_early:
        lines.append(f"stopped early: {summary.stopped_early}")
    for sink in pipeline.sinks:
        lines.append(f"wrote {sink.path}")
    return lines


def run(cfg: DictConfig, given_keys: set[str] = frozenset()) -> RunSummary:
    ckpt = require_checkpoint(cfg.ckpt_path)
    classifier = FaceClassifier.from_checkpoint(ckpt, cfg.threads)
    settings = face_settings(classifier.preprocess, OmegaConf.to_container(cfg.preprocess), set(given_keys))
    source = open_source(cfg.source)
    try:
        pipeline = build_pipeline(cfg, source, classifier, settings)
    except BaseException:
        source.close()
        raise
    summary = pipeline.run(source)
    for line in report(summary, source, pipeline):
        log.info(line)
    return summary
