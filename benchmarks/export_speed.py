"""PyTorch against onnxruntime for the same model: classification latency at batch 1, throughput
at batch 64, and infer.py's end-to-end frame rate with each backend on the same 640x480 one-face
video (the one benchmarks/infer_speed.py builds from real FER2013 faces).

    python benchmarks/export_speed.py                     # writes benchmarks/results/export_speed.json
    python benchmarks/export_speed.py --ckpt best.ckpt --threads 2 --repeats 5

Without --ckpt the network is the regularized model with untrained weights: the same computation,
so the same speed. Both backends get the same number of threads (default 1, infer.py's default),
and their measurements are interleaved so a change in load hits both alike.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from infer_speed import FRAMES, ROOT, machine, make_videos, median_run, random_checkpoint, write_result  # noqa: E402  (puts ROOT on sys.path)

BACKENDS = ("torch", "onnx")


def classifiers(ckpt: Path, model: Path, threads: int) -> dict:
    from fer.infer.classify import FaceClassifier
    from fer.infer.onnx_backend import OnnxFaceClassifier

    return {"torch": FaceClassifier.from_checkpoint(ckpt, threads), "onnx": OnnxFaceClassifier.from_file(model, threads)}


def seconds_per_call(classify, faces, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        classify(faces)
        times.append(time.perf_counter() - start)
    return times


def classification(models: dict, rounds: int) -> dict:
    """Median seconds a call, batch 1 and batch 64, the backends taking turns round by round."""
    import numpy as np

    rng = np.random.default_rng(0)
    one, many = rng.integers(0, 256, (1, 48, 48), dtype=np.uint8), rng.integers(0, 256, (64, 48, 48), dtype=np.uint8)
    times = {name: {"1": [], "64": []} for name in models}
    for classify in models.values():  # warm-up: first calls allocate and pick kernels
        seconds_per_call(classify, one, 20)
        seconds_per_call(classify, many, 3)
    for _ in range(rounds):
        for name, classify in models.items():
            times[name]["1"] += seconds_per_call(classify, one, 100)
            times[name]["64"] += seconds_per_call(classify, many, 5)
    result = {}
    for name, t in times.items():
        batch1, batch64 = statistics.median(t["1"]), statistics.median(t["64"])
        result[name] = {
            "batch1_ms": round(1000 * batch1, 3),
            "batch64_ms": round(1000 * batch64, 2),
            "batch64_faces_per_s": round(64 / batch64),
        }
    return result


def run_infer(video: Path, model: Path, backend: str, threads: int, out: Path) -> dict:
    from hydra import compose, initialize_config_dir

    from fer.infer.app import run

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        overrides = [
            f"source={video}",
            f"ckpt_path={model}",
            f"backend={backend}",
            f"threads={threads}",
            f"output={out}",
            "overwrite=true",
            "display=false",
        ]
        summary = run(compose("infer", overrides=overrides))
    return {"frames": summary.frames, "faces": summary.faces, "seconds": summary.seconds, "stages": summary.stages}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", help="checkpoint to time (default: the regularized model, untrained)")
    parser.add_argument("--frames", type=int, default=FRAMES)
    parser.add_argument("--repeats", type=int, default=3, help="end-to-end runs per backend, interleaved; the median is kept")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of classification timing per backend, interleaved")
    parser.add_argument("--threads", type=int, default=1, help="threads for either backend (infer.py's default is 1)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "export_speed.json"))
    args = parser.parse_args()

    import cv2
    import onnxruntime
    import torch

    from fer.export import export_onnx

    workdir = Path(tempfile.mkdtemp(prefix="fer-export-bench-"))
    ckpt = Path(args.ckpt) if args.ckpt else random_checkpoint(workdir)
    model, facts = export_onnx(ckpt, output=str(workdir / "model.onnx"))
    video = make_videos(workdir, args.frames)[1]

    before = machine()
    result = {
        "machine": before,
        "threads": args.threads,
        "checkpoint": str(ckpt) if args.ckpt else "regularized, untrained weights (same speed)",
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "opencv": cv2.__version__},
        "export_largest_difference": facts["difference"],
    }
    result["classification"] = classification(classifiers(ckpt, model, args.threads), args.rounds)
    runs = {name: [] for name in BACKENDS}
    for _ in range(args.repeats):
        for name in BACKENDS:
            runs[name].append(run_infer(video, ckpt if name == "torch" else model, name, args.threads, workdir / f"{name}.mp4"))
    result["end_to_end"] = {
        "video": {"size": [640, 480], "frames": args.frames, "faces": 1},
        **{name: median_run(r) for name, r in runs.items()},
    }
    write_result(result, before, args.out, summary_table)


def summary_table(result: dict) -> str:
    c, e = result["classification"], result["end_to_end"]
    lines = [f"{'':8} {'batch 1 ms':>11} {'batch 64 faces/s':>17} {'end-to-end fps':>15}   ({result['threads']} thread(s))"]
    for name in BACKENDS:
        lines.append(f"{name:8} {c[name]['batch1_ms']:>11} {c[name]['batch64_faces_per_s']:>17} {e[name]['fps']:>15}")
    lines.append(
        f"load average before/after: {result['machine']['load_average_1_5_15'][0]} / "
        f"{result['machine_after']['load_average_1_5_15'][0]} on {result['machine']['cpus']} CPUs"
        + ("" if result["quiet"] else "  (NOT quiet: figures are pessimistic)")
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
