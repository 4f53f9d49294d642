"""How fast infer.py's whole loop runs (decode, detect, align, classify, track, draw, write; no
window) on a 640x480 video with one and with two faces, stage by stage, against the PyPI `fer`
package's pipeline on the same videos in the same run.

    python benchmarks/infer_speed.py                          # writes benchmarks/results/infer_speed.json
    python benchmarks/infer_speed.py --ckpt models/fer_regularized.ckpt --repeats 5
    python benchmarks/infer_speed.py --detector haar          # one detector (default: retinaface and haar)

For each detector it also times detection stage by stage on one frame, measures how often each
finds the faces of tests/hard_scenes.py (turned, covered, small; benchmarks/results/detection_rate.json)
and what detecting every Nth frame (tracking between) does to the hit rate on moving turned faces.

The videos are built from real FER2013 test faces ($FER2013_PATH, else data/fer2013.csv, as train.py), so
the cascade has real faces to find. Without --ckpt the network is the paper's regularized model
with untrained weights: the same computation, so the same speed.

The `fer` package is optional. It needs TensorFlow and its own top-level `fer` module, so it lives
in its own virtual environment, found with --fer-python (default $FER_PYPI_PYTHON, else
/opt/fer-pypi/bin/python):
    python -m venv /opt/fer-pypi && /opt/fer-pypi/bin/pip install fer --no-deps
    /opt/fer-pypi/bin/pip install tensorflow-cpu "opencv-contrib-python<5" pandas requests tqdm matplotlib Pillow "setuptools<81"
When it is missing the benchmark says so and measures ours alone.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the test scenes: tests/scenes.py, tests/hard_scenes.py

FRAMES = 300  # 10 s at 30 fps
FPS = 30.0
TARGETS = {1: 60.0, 2: 40.0}  # the project's live-speed goals, frames per second by number of faces
SPEEDUP_OVER_FER = 3.0

# Runs inside the `fer` package's environment, isolated (-I) from this repository's own `fer`.
FER_PACKAGE_LOOP = r"""
import json, sys, time
import cv2
from fer.fer import FER
from fer.utils import draw_annotations

video, out = sys.argv[1], sys.argv[2]
detector = FER()  # its defaults: Haar cascade on the full frame, quantised CNN run by TensorFlow Lite
cap = cv2.VideoCapture(video)
fps, size = cap.get(cv2.CAP_PROP_FPS), (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
writer = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
ok, frame = cap.read()
detector.detect_emotions(frame)  # warm-up: the interpreter's first call
cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
stages = dict(decode=0.0, detect=0.0, classify=0.0, draw=0.0, write=0.0)
frames = faces = 0
start = last = time.perf_counter()
def lap(stage):
    global last
    now = time.perf_counter(); stages[stage] += now - last; last = now
while True:
    ok, frame = cap.read()
    lap("decode")
    if not ok:
        break
    boxes = detector.find_faces(frame)
    lap("detect")
    result = detector.detect_emotions(frame, face_rectangles=boxes)  # crop, resize, normalise, classify
    lap("classify")
    draw_annotations(frame, result)
    lap("draw")
    writer.write(frame)
    lap("write")
    frames += 1
    faces += len(result)
seconds = time.perf_counter() - start
writer.release()
print(json.dumps({"frames": frames, "faces": faces, "seconds": seconds, "stages": stages}))
"""


def test_faces():
    from fer.data.cache import load
    from fer.data.reader import Fer2013, default_data_path, fer2013_settings

    return load(fer2013_settings(default_data_path(ROOT)), Fer2013()).split("test")[0]


def make_videos(folder: Path, n_frames: int) -> dict[int, Path]:
    """Videos with 1 and 2 real FER2013 faces drifting across a 640x480 frame: faces both detectors find."""
    from fer.infer.detect import FaceDetector
    from fer.infer.retinaface import RetinaFaceDetector

    from scenes import detectable, drifting_faces, write_video

    images = test_faces()
    faces = detectable(detectable(images[:100], FaceDetector(), 12), RetinaFaceDetector(threshold=0.8), 3)
    videos = {}
    for n, chosen in ((1, faces[:1]), (2, faces[1:3])):
        frames, _ = drifting_faces(chosen, n_frames, step=1)
        videos[n] = write_video(folder / f"{n}_face.mp4", frames, FPS)
    return videos


def random_checkpoint(folder: Path, model_name: str = "regularized") -> Path:
    """An untrained checkpoint of conf/model/<model_name>.yaml's network: the same computation, the same speed."""
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from fer.train.module import EmotionClassifier

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model_name}"])
    torch.manual_seed(0)
    net = OmegaConf.to_container(cfg.model.net)
    model = EmotionClassifier(
        net=net, class_names=list(cfg.data.class_names), image_size=cfg.data.image_size, input_size=cfg.model.input_size
    )
    path = folder / f"{model_name}_untrained.ckpt"
    face = OmegaConf.to_container(cfg.preprocess)
    torch.save({"fer": {**model.fer_meta(), "face": face}, "state_dict": model.state_dict()}, path)
    return path


def run_ours(video: Path, ckpt: Path, out: Path, tta: str = "none", detector: str = "retinaface") -> dict:
    from hydra import compose, initialize_config_dir

    from fer.infer.app import run

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        overrides = [
            f"source={video}",
            f"ckpt_path={ckpt}",
            f"output={out}",
            "overwrite=true",
            "display=false",
            f"tta={tta}",
            f"detector={detector}",
        ]
        cfg = compose("infer", overrides=overrides)
    summary = run(cfg)
    return {"frames": summary.frames, "faces": summary.faces, "seconds": summary.seconds, "stages": summary.stages}


def run_fer_package(python: Path, video: Path, out: Path, workdir: Path) -> dict:
    script = workdir / "fer_package_loop.py"
    script.write_text(FER_PACKAGE_LOOP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    done = subprocess.run(
        [str(python), "-I", str(script), str(video), str(out)], cwd=workdir, env=env, capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit code {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fer_package_python(given: str | None) -> tuple[Path | None, str]:
    candidate = Path(given or os.environ.get("FER_PYPI_PYTHON") or "/opt/fer-pypi/bin/python")
    if not candidate.exists():
        return None, f"not installed: no {candidate} (see this file's docstring to install it)"
    check = "import fer.fer, importlib.metadata as m; print(m.version('fer'))"
    probe = subprocess.run(
        [str(candidate), "-I", "-c", check],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    if probe.returncode != 0:
        return None, f"not usable: {candidate} cannot import the fer package"
    return candidate, f"fer {probe.stdout.strip().splitlines()[-1]}"


def per_frame(run: dict) -> dict:
    ms = {stage: round(1000 * s / run["frames"], 3) for stage, s in run["stages"].items()}
    return {"fps": round(run["frames"] / run["seconds"], 1), "frames": run["frames"], "faces": run["faces"], "ms_per_frame": ms}


def median_run(runs: list[dict]) -> dict:
    """The run with the median frame rate, and every run's rate beside it."""
    rated = sorted((r["frames"] / r["seconds"], i) for i, r in enumerate(runs))
    chosen = per_frame(runs[rated[len(rated) // 2][1]])
    chosen["fps_all_runs"] = [round(f, 1) for f, _ in sorted(rated, key=lambda x: x[1])]
    return chosen


def network_ms_per_face(ckpt: Path, tta: str = "none", calls: int = 300) -> float:
    """One face through the network on one core (torch threads = 1): the median of `calls` calls."""
    import numpy as np
    import torch

    from fer.infer.classify import FaceClassifier

    torch.set_num_threads(1)
    classifier = FaceClassifier.from_checkpoint(ckpt, tta=tta)
    face = np.random.default_rng(0).integers(0, 256, (1, 48, 48), dtype=np.uint8)
    for _ in range(20):
        classifier(face)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        classifier(face)
        times.append(time.perf_counter() - t)
    return round(1000 * statistics.median(times), 3)


def busy_cores(seconds: float = 2.0) -> float | None:
    """How many cores other work keeps busy now (/proc/stat over `seconds`): unlike the load average,
    which trails by a minute, this says whether the machine is quiet when the timing starts."""
    stat = Path("/proc/stat")
    if not stat.exists():
        return None

    def sample():
        fields = [int(x) for x in stat.read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all jiffies, idle + iowait

    (total0, idle0), _ = sample(), time.sleep(seconds)
    total1, idle1 = sample()
    return round((os.cpu_count() or 1) * (1 - (idle1 - idle0) / max(total1 - total0, 1)), 2)


def machine() -> dict:
    from fer.runs.runinfo import cpu_model

    load = os.getloadavg()
    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "busy_cores": busy_cores(),
        "load_average_1_5_15": [round(x, 2) for x in load],
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


DETECTORS = sorted(p.stem for p in (ROOT / "conf" / "detector").glob("*.yaml"))
INTERVALS = (1, 2, 3, 5, 10)  # detect_every values tried for the hit rate


def make_detector(name: str, **overrides):
    """conf/detector/<name>.yaml's detector, one thread, with overrides (scale=1.0, ...)."""
    from hydra import compose, initialize_config_dir

    from fer.infer.app import make_detector as build

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("infer", overrides=[f"detector={name}", *(f"detector.{k}={v}" for k, v in overrides.items())])
    return build(cfg.detector)  # video settings (retinaface: scale, not still_scale)


def median_ms(fn, calls: int = 40) -> float:
    fn()
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(1000 * statistics.median(times), 3)


def detection_stages(name: str, frame, boxes) -> dict:
    """Milliseconds per call of each part of one detection on a 640x480 frame (median of 40 calls)."""
    import cv2

    detector = make_detector(name)
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    if name == "retinaface":
        from fer.infer.retinaface import MEAN_BGR, to_bgr

        small = cv2.resize(to_bgr(frame), None, fx=detector.scale, fy=detector.scale, interpolation=cv2.INTER_AREA)
        blob = (small.astype("float32") - MEAN_BGR).transpose(2, 0, 1)[None]  # (1, 3, H, W), as detect() makes it
        stages = {
            "shrink": median_ms(
                lambda: cv2.resize(to_bgr(frame), None, fx=detector.scale, fy=detector.scale, interpolation=cv2.INTER_AREA)
            ),
            "network": median_ms(lambda: detector.session.run(None, {"input": blob})),
            "whole detection": median_ms(lambda: detector.detect(frame)),
        }
        stages["decode and NMS"] = round(stages["whole detection"] - stages["shrink"] - stages["network"], 3)
        return stages
    cascade = detector.cascade
    return {
        "new faces, whole frame": median_ms(lambda: cascade.detect(grey)),
        "tracked faces, near their box (each)": median_ms(lambda: cascade.find_near(grey, boxes[0])),
        "whole detection, faces tracked": median_ms(lambda: detector.detect(grey, known=boxes)),
    }


def detection_rates(images, n_scenes: int = 150, seed: int = 0) -> dict:
    """How many planted faces of tests/hard_scenes.py each detector finds (IoU >= 0.5 with the square
    the pipeline cuts the face from), overall and by condition, and its false boxes."""
    import cv2
    import numpy as np

    from fer.infer.align import FaceAligner

    from hard_scenes import hard_scenes, matches

    scenes = hard_scenes(images, n_scenes, seed)
    aligner = FaceAligner()
    variants = {
        "retinaface, half size (detector.scale=0.5 detector.roi_px=0: the old video default)": (
            "retinaface",
            {"scale": 0.5, "roi_px": 0},
        ),
        "retinaface, full size without second looks (detector.roi_px=0: the old photo default)": ("retinaface", {"roi_px": 0}),
        "retinaface, full size, weak boxes a second look (the default, photos and video)": ("retinaface", {}),
        "haar": ("haar", {}),
    }
    result = {"scenes": n_scenes, "seed": seed, "faces": sum(len(s.faces) for s in scenes), "min_iou": 0.5, "detectors": {}}
    for label, (name, overrides) in variants.items():
        detector = make_detector(name, **overrides)
        rows, false, start = [], 0, time.perf_counter()
        for scene in scenes:
            frame = scene.frame if detector.colour else cv2.cvtColor(scene.frame, cv2.COLOR_BGR2GRAY)
            squares = [aligner.place(d)[0] for d in detector.detect(frame)]
            hits = matches(scene.faces, squares)
            rows += [(f.box[2], abs(f.angle), f.covered, hit is not None) for f, hit in zip(scene.faces, hits)]
            false += len(squares) - sum(h is not None for h in hits)
        ms = 1000 * (time.perf_counter() - start) / n_scenes
        r = np.array(rows, float)
        groups = {
            "all": r[:, 0] > 0,
            "upright (under 10 deg)": r[:, 1] < 10,
            "turned 10-20 deg": (r[:, 1] >= 10) & (r[:, 1] < 20),
            "turned 20-30 deg": r[:, 1] >= 20,
            "mouth covered": r[:, 2] == 1,
            "60-99 px": r[:, 0] < 100,
            "100-179 px": (r[:, 0] >= 100) & (r[:, 0] < 180),
            "180-300 px": r[:, 0] >= 180,
        }
        result["detectors"][label] = {
            "found": {k: round(float(r[m, 3].mean()), 3) for k, m in groups.items()},
            "faces": {k: int(m.sum()) for k, m in groups.items()},
            "false_boxes": false,
            "ms_per_frame": round(ms, 2),
        }
    return result


def hit_rate_by_interval(images, detectors: list[str], n_frames: int = 90) -> dict:
    """Detecting every Nth frame and tracking between: the share of (frame, face) pairs with a box on
    the face (IoU >= 0.5), and detection + tracking milliseconds per frame, on two turned faces moving
    2 and 1.5 px a frame."""
    import numpy as np

    from fer.infer.align import FaceAligner
    from fer.infer.detect import iou
    from fer.infer.draw import Annotator
    from fer.infer.pipeline import Pipeline
    from fer.infer.track import FaceTracker

    from hard_scenes import SIZE, plant
    from scenes import background

    class FixedClassifier:  # the network does not change where faces are found
        class_names = ["a", "b"]
        image_size = 48  # the side of the square faces it takes

        def __call__(self, faces):
            return np.tile([0.6, 0.4], (len(faces), 1))

    frames, truth = [], []
    for t in range(n_frames):
        frame = background(SIZE)
        boxes = [plant(frame, images[1], (120 + 2 * t, 200), 150, 18), plant(frame, images[4], (520, 130 + 1.5 * t), 140, -12)]
        frames.append(frame)
        truth.append(boxes)
    result = {
        "frames": n_frames,
        "faces": "two FER2013 faces, 150 and 140 px, turned 18 and -12 degrees, moving 2 and 1.5 px a frame",
    }
    for name in detectors:
        result[name] = {}
        for every in INTERVALS:
            pipeline = Pipeline(
                FixedClassifier(),
                Annotator(["a", "b"]),
                FaceAligner(),
                make_detector(name),
                tracker=FaceTracker(),
                detect_every=every,
            )
            hits = 0
            for frame, boxes in zip(frames, truth):
                found = [r.box for r in pipeline.analyse(frame)]
                hits += sum(max((iou(f, b) for f in found), default=0) >= 0.5 for b in boxes)
            seconds = pipeline.watch.seconds
            ms = 1000 * (seconds["detect"] + seconds["track"]) / n_frames
            result[name][f"every {every}"] = {
                "hit_rate": round(hits / (2 * n_frames), 3),
                "detect_track_ms_per_frame": round(ms, 2),
            }
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", help="checkpoint to time (default: --model's network, untrained)")
    parser.add_argument("--model", default="regularized", help="without --ckpt: the conf/model/ network to time, untrained")
    parser.add_argument("--tta", default="none", help="infer.py's tta= (none, flip, ten_crop)")
    parser.add_argument(
        "--detector", nargs="+", default=DETECTORS, choices=DETECTORS, help="infer.py's detector= (default: each)"
    )
    parser.add_argument("--frames", type=int, default=FRAMES)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each pipeline per video, interleaved; the median is kept")
    parser.add_argument("--fer-python", help="python of the venv holding the PyPI fer package")
    parser.add_argument("--scenes", type=int, default=150, help="hard scenes for the detection rate (0: skip it)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "infer_speed.json"))
    parser.add_argument("--rates-out", default=str(ROOT / "benchmarks" / "results" / "detection_rate.json"))
    args = parser.parse_args()

    import cv2
    import torch

    from scenes import place_faces

    workdir = Path(tempfile.mkdtemp(prefix="fer-bench-"))
    videos = make_videos(workdir, args.frames)
    ckpt = Path(args.ckpt) if args.ckpt else random_checkpoint(workdir, args.model)
    fer_python, fer_note = fer_package_python(args.fer_python)
    print(f"PyPI fer package: {fer_note}", flush=True)

    before = machine()
    video = {"size": [640, 480], "fps": FPS, "frames": args.frames, "faces": "FER2013 test faces, enlarged 4x"}
    result = {
        "machine": before,
        "video": video,
        "checkpoint": str(ckpt) if args.ckpt else f"{args.model}, untrained weights (same speed)",
        "tta": args.tta,
        "backend": "infer.py's default (conf/infer.yaml backend=auto: onnxruntime)",
        "torch": torch.__version__,
        "opencv": cv2.__version__,
        "fer_package": fer_note,
        "detectors": args.detector,
        "runs": {},
    }
    result["network_ms_per_face_one_core"] = network_ms_per_face(ckpt, args.tta)
    for n_faces, video in videos.items():
        ours, theirs = {name: [] for name in args.detector}, []
        for _ in range(args.repeats):  # interleaved, so a change in load hits all alike
            for name in args.detector:
                ours[name].append(run_ours(video, ckpt, workdir / f"ours_{n_faces}.mp4", args.tta, name))
            if fer_python:
                try:
                    theirs.append(run_fer_package(fer_python, video, workdir / f"theirs_{n_faces}.mp4", workdir))
                except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
                    fer_python, result["fer_package"] = None, f"failed: {e}"
        entry = {"target_fps": TARGETS[n_faces]}
        for name in args.detector:
            entry[name] = median_run(ours[name])
            entry[name]["meets_target"] = entry[name]["fps"] >= TARGETS[n_faces]
        if theirs:
            entry["fer_package"] = median_run(theirs)
            for name in args.detector:
                entry[name]["speedup_over_fer_package"] = round(entry[name]["fps"] / entry["fer_package"]["fps"], 2)
                entry[name]["meets_3x"] = entry[name]["speedup_over_fer_package"] >= SPEEDUP_OVER_FER
        result["runs"][f"{n_faces}_face" + ("s" if n_faces > 1 else "")] = entry

    images = test_faces()
    one, placed_one = place_faces(images[1:2], [(224, 144)])
    two, placed_two = place_faces(images[1:3], [(60, 140), (380, 140)])
    result["detection_ms"] = {
        name: {"1_face": detection_stages(name, one, placed_one), "2_faces": detection_stages(name, two, placed_two)}
        for name in args.detector
    }
    result["hit_rate_by_detect_every"] = hit_rate_by_interval(images, args.detector)
    write_result(result, before, args.out, summary_table)
    if args.scenes:
        rates = {"machine": machine(), **detection_rates(images, args.scenes)}
        Path(args.rates_out).write_text(json.dumps(rates, indent=2) + "\n")
        for label, entry in rates["detectors"].items():
            print(
                f"{label}: "
                + ", ".join(f"{k} {v:.2f}" for k, v in entry["found"].items())
                + f"; false boxes {entry['false_boxes']}"
            )
        print(f"wrote {args.rates_out}")


def write_result(result: dict, before: dict, out: str, summarize) -> None:
    """Record the load after the run (a busy machine makes the figures pessimistic), write the JSON, print the table."""
    result["machine_after"] = machine()
    machines = (before, result["machine_after"])
    busy = [m["busy_cores"] if m["busy_cores"] is not None else m["load_average_1_5_15"][0] for m in machines]
    result["quiet"] = max(busy) < 0.5 * (os.cpu_count() or 1)  # less than half the cores busy, before and after

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(summarize(result))
    print(f"wrote {out}")


def summary_table(result: dict) -> str:
    lines = [
        f"network, one face, one core: {result['network_ms_per_face_one_core']} ms",
        f"{result['machine']['cpu']}; cores busy before/after: {result['machine']['busy_cores']} / "
        f"{result['machine_after']['busy_cores']}"
        f" on {result['machine']['cpus']} CPUs" + ("" if result["quiet"] else "  (NOT quiet: figures are pessimistic)"),
    ]
    for name, entry in result["runs"].items():
        for detector in result["detectors"]:
            ours = entry[detector]
            stages = ", ".join(f"{k} {v:.2f}" for k, v in ours["ms_per_frame"].items() if v >= 0.005)
            line = f"{name}, detector={detector}: ours {ours['fps']} fps (target {entry['target_fps']})"
            if "fer_package" in entry:
                line += f"; fer package {entry['fer_package']['fps']} fps; {ours['speedup_over_fer_package']}x"
            lines += [line, f"  ours, ms per frame: {stages}"]
        if "fer_package" in entry:
            theirs = entry["fer_package"]["ms_per_frame"]
            lines.append("  fer package, ms per frame: " + ", ".join(f"{k} {v:.2f}" for k, v in theirs.items()))
    for detector, by_faces in result.get("detection_ms", {}).items():
        for faces, stages in by_faces.items():
            lines.append(f"detection, {detector}, {faces}, ms: " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
    for detector, by_n in result.get("hit_rate_by_detect_every", {}).items():
        if isinstance(by_n, dict):
            lines.append(
                f"detect_every, {detector}: "
                + "; ".join(f"{n}: hits {v['hit_rate']:.2f}, {v['detect_track_ms_per_frame']:.1f} ms" for n, v in by_n.items())
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
