"""infer.py's body: the config's plain values -> the pipeline's objects -> one run -> a summary."""

import importlib.util
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fer.errors import FerError, user_error
from fer.infer.align import FaceAligner
from fer.infer.classify import FaceClassifier
from fer.infer.pipeline import Pipeline, RunSummary
from fer.infer.sinks import (
    IMAGE_OUTPUTS,
    VIDEO_CODECS,
    FolderSink,
    ImageFileSink,
    PredictionsFile,
    VideoFileSink,
    Window,
    folder_target,
    refuse_to_replace_inputs,
    wants_window,
)
from fer.infer.sources import ImageSource, VideoSource, open_source
from fer.paths import in_project
from fer.tta import check_mode

log = logging.getLogger("fer.infer")
NEEDS_CHECKPOINT = (
    "no model given: pass ckpt_path=PATH to a checkpoint from `python train.py` "
    "(outputs/runs/<date>/<time>/checkpoints/best-epoch<NN>-acc<val>.ckpt), "
    "or to a .onnx from `python export.py` with backend=onnx"
)
BACKENDS = ("auto", "torch", "onnx")
Source = ImageSource | VideoSource


def resolve_checkpoint(ckpt_path: str | None) -> Path:
    # conf/infer.yaml names the shipped model; a relative path the working directory lacks is
    # looked for in the project, so infer.py works from any directory.
    if not ckpt_path:
        raise FerError(NEEDS_CHECKPOINT)
    return in_project(ckpt_path)


def open_classifier(backend: str, path: Path, threads: int | None, tta: str = "none"):
    """The network that classifies the faces: a .ckpt run by PyTorch, or an exported .onnx run by onnxruntime.

    auto (the default): a .onnx on onnxruntime; a .ckpt with tta=none exported in memory at start and run on
    onnxruntime too (the same probabilities to 1e-4, checked on every start, at under half the time a face);
    with TTA views, or where the export is not possible, on PyTorch."""
    if backend not in BACKENDS:
        raise FerError(f"backend must be {', '.join(BACKENDS[:-1])} or {BACKENDS[-1]}, not {backend!r}")
    tta = check_mode(tta)
    if backend == "auto":
        is_onnx = path.suffix.lower() == ".onnx" or importlib.util.find_spec("torch") is None
        backend = "onnx" if is_onnx else "torch"
        if backend == "torch" and tta == "none":
            return _on_onnxruntime(FaceClassifier.from_checkpoint(path, threads, tta), threads)
    if backend == "torch":
        if path.suffix.lower() == ".onnx":
            raise FerError(
                f"{path} is an ONNX model: run it with backend=onnx (backend=torch runs a .ckpt from `python train.py`)"
            )
        if importlib.util.find_spec("torch") is None:
            raise FerError("backend=torch needs PyTorch, which is not installed; run an exported model with backend=onnx")
        return FaceClassifier.from_checkpoint(path, threads, tta)
    if tta != "none":
        raise FerError(f"tta={tta} runs with backend=torch; an exported ONNX model holds the centre crop only (tta=none)")
    try:  # imported here: the torch backend must not need onnxruntime, nor this one torch
        from fer.infer.onnx_backend import OnnxFaceClassifier
    except ImportError as e:
        raise FerError(f"backend=onnx needs onnxruntime ({e}): pip install onnxruntime") from None
    return OnnxFaceClassifier.from_file(path, threads)


def _on_onnxruntime(classifier: FaceClassifier, threads: int | None):
    """The same network as an in-memory ONNX graph on onnxruntime; the PyTorch one where that cannot be done."""
    try:
        from fer.export import FaceProbabilities, checked_graph
        from fer.infer.onnx_backend import OnnxFaceClassifier, open_session
    except ImportError as e:  # onnx or onnxruntime missing: PyTorch gives the same answers, only slower
        log.info("backend: torch (%s; backend=auto runs the model on onnxruntime when it is installed)", e)
        return classifier
    model = FaceProbabilities(classifier.net, classifier.mean, classifier.std, classifier.input_size, classifier.temperature)
    try:
        proto, _ = checked_graph(model, classifier.image_size, len(classifier.class_names), type(classifier.net).__name__)
    except FerError as e:
        log.info("backend: torch (the in-memory ONNX export failed: %s)", e)
        return classifier
    session = open_session(proto.SerializeToString(), threads)
    return OnnxFaceClassifier(
        session,
        classifier.class_names,
        classifier.mean,
        classifier.std,
        classifier.input_size,
        classifier.image_size,
        classifier.face,
    )


def given_face_keys(overrides: Iterable[str]) -> set[str]:
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
    """The face preparation the model was trained with (its checkpoint), except what the command line sets.
    (The faces' size is no setting: it is the model's, from its checkpoint.)"""
    settings = {**configured, **(stored or {})}
    settings.update({k: v for k, v in configured.items() if k in given or "*" in given})
    return settings


def is_video(source: Source) -> bool:
    return source.kind in ("video", "camera", "stream")


def output_sink(path: Path, source: Source, overwrite: bool):
    """The annotated output that fits the source: a video, an image, or a folder of images."""
    suffix = path.suffix.lower()
    inputs = [*getattr(source, "paths", []), *([source.root] if getattr(source, "root", None) else [])]
    if source.kind == "video":  # a video file (cameras and streams are no file)
        inputs.append(Path(source.describe()))
    if any(path.resolve() == p.resolve() for p in inputs):
        raise FerError(f"output={path} is the source itself; choose another name")
    if is_video(source):
        if suffix not in VIDEO_CODECS:
            endings = ", ".join(sorted(VIDEO_CODECS))
            raise FerError(f"a video source writes a video: output= must end in {endings}, not {path.name!r}")
        refuse_to_replace_inputs([path], inputs, "output=")
        return VideoFileSink(path, source.fps, source.size, overwrite)
    if source.kind == "image" and suffix in IMAGE_OUTPUTS:
        refuse_to_replace_inputs([path], inputs, "output=")
        return ImageFileSink(path, overwrite)
    if source.kind == "image" and suffix in VIDEO_CODECS:
        endings = ", ".join(sorted(IMAGE_OUTPUTS))
        raise FerError(
            f"an image source writes an image: output= must end in {endings}, not {path.name!r} "
            "(a video output needs a video source)"
        )
    if suffix in IMAGE_OUTPUTS or suffix in VIDEO_CODECS:
        raise FerError(f"a folder source writes a folder: output={path} should be a folder name such as annotated/")
    names = [p.relative_to(source.root).as_posix() if source.root else p.name for p in source.paths]
    refuse_to_replace_inputs([folder_target(path, n) for n in names], inputs, "the output image")
    return FolderSink(path, names, overwrite)


def open_sinks(output: str | None, predictions: str | None, overwrite: bool, source: Source, class_names: list[str]) -> list:
    """The files a run writes; each refuses to replace an existing file unless overwrite=true."""
    sinks = []
    try:
        if output:
            sinks.append(output_sink(Path(str(output)).expanduser(), source, overwrite))
        if predictions:
            with_file = source.kind in ("image", "folder")
            sinks.append(PredictionsFile(Path(str(predictions)).expanduser(), class_names, with_file, overwrite))
    except BaseException as e:
        for sink in sinks:  # a file just created must not block the next try as "already exists"
            sink.close()
            sink.path.unlink(missing_ok=True)
        if isinstance(e, OSError):  # a folder that cannot be created, a file that cannot be written
            raise FerError(f"cannot write {e.filename or 'the output'}: {e.strerror or e}") from None
        raise
    return sinks


def make_detector(settings: DictConfig, still: bool = False):
    """conf/detector/'s choice; a setting it refuses is the user's error (one line), not Hydra's traceback.

    still: the frames are photos, not video. A detector's `still_scale` (where it has one) then
    replaces its `scale`: with no frame rate to keep, photos are searched at full resolution."""
    settings = OmegaConf.to_container(settings, resolve=True)
    still_scale = settings.pop("still_scale", None)
    if still and still_scale is not None:
        settings["scale"] = still_scale
    try:
        return instantiate(settings)
    except InstantiationException as e:
        raise (user_error(e) or e) from None


def build_pipeline(cfg: DictConfig, source: Source, classifier: FaceClassifier, settings: Mapping) -> Pipeline:
    video = is_video(source)
    detector = make_detector(cfg.detector, still=not video) if cfg.detect else None
    aligner = FaceAligner(settings["align"], settings["margin"], eye_cascade=cfg.eye_cascade) if cfg.detect else None
    annotator = instantiate(cfg.draw, class_names=classifier.class_names, show_ids=cfg.draw.show_ids and video)
    window = Window() if wants_window(cfg.display) else None
    try:
        sinks = open_sinks(cfg.output, cfg.predictions, cfg.overwrite, source, classifier.class_names)
    except BaseException:
        if window is not None:
            window.close()
        raise
    if not sinks and window is None and video:
        log.info("note: no output=, predictions= or window (display is off): this run only prints a summary")
    return Pipeline(
        classifier,
        annotator,
        aligner,
        detector,
        gamma=settings["gamma"],
        tracker=instantiate(cfg.tracker) if video else None,
        detect_every=cfg.detect_every,
        sinks=sinks,
        window=window,
        max_frames=cfg.max_frames,
        enlarge_small_images=not video,
        print_faces=not video and not cfg.predictions,
    )


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def report(summary: RunSummary, source: Source, sinks: list) -> list[str]:
    unit = "frame" if is_video(source) else "image"
    lines = [
        f"{source.describe()}: {plural(summary.frames, unit)} in {summary.seconds:.1f} s ({summary.fps:.1f} per second); "
        f"{plural(summary.faces, 'face')}, {plural(summary.frames_without_faces, unit)} without a face"
    ]
    if summary.labels:
        lines.append("labels: " + ", ".join(f"{name} {n}" for name, n in summary.labels.most_common()))
    if source.skipped and is_video(source):
        lines.append(f"skipped {plural(source.skipped, 'corrupt frame')}")
    elif source.skipped:
        more = " ..." if source.skipped > 5 else ""
        lines.append(f"skipped {plural(source.skipped, 'unreadable file')}: {', '.join(source.unreadable[:5])}{more}")
    if summary.stopped_early:
        lines.append(f"stopped early: {summary.stopped_early}")
    lines += [f"wrote {sink.path}" for sink in sinks]
    return lines


def run(cfg: DictConfig, given_keys: Iterable[str] = ()) -> RunSummary:
    classifier = open_classifier(cfg.backend, resolve_checkpoint(cfg.ckpt_path), cfg.threads, cfg.tta)
    settings = face_settings(classifier.face, OmegaConf.to_container(cfg.preprocess), set(given_keys))
    source = open_source(cfg.source)
    try:
        pipeline = build_pipeline(cfg, source, classifier, settings)
    except BaseException:
        source.close()
        raise
    summary = pipeline.run(source)
    for line in report(summary, source, pipeline.sinks):
        log.info(line)
    return summary
