"""Load on a real `python serve.py`: N concurrent clients (keep-alive connections) posting 640x480 JPEGs with one
real FER2013 face each, for a fixed time and then on to a number of requests; throughput, p50/p99 latency, errors,
and the server's resident memory at start, after warm-up and every 1,000 requests. Then `python infer.py` on the
same images in one process, for the throughput the server should keep (the goal: at least 80% of it).

    python benchmarks/serve_load.py                                   # 32 clients, 60 s, on to 10,000 requests
    python benchmarks/serve_load.py --duration 20 --requests 0        # a quick look: 20 s only
    python benchmarks/serve_load.py --serve-args concurrency=4 threads=1 --output benchmarks/results/mine.json

The clients are a small asyncio HTTP/1.1 loop (not httpx) so that they take little of the CPU the server needs;
they run on the same machine, so they still take some. Linux only (the memory is read from /proc).
"""

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import cv2

from fer.runs.runinfo import cpu_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the test scenes: tests/scenes.py
WARM_UP = 200  # requests before the memory baseline: allocators and caches settle first
RSS_EVERY = 1000


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (workers > 1), in MB."""
    pids = [pid, *(int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split())]
    total = 0
    for p in pids:
        status = Path(f"/proc/{p}/status")
        if status.exists():
            total += int(re.search(r"VmRSS:\s+(\d+)", status.read_text()).group(1))
    return round(total / 1024, 1)


def scenes(n: int) -> list[bytes]:
    """n JPEGs, 640x480, each with one real FER2013 test face that RetinaFace finds (tests/scenes.py)."""
    from fer.data.cache import load_fer2013
    from fer.data.reader import default_data_path
    from fer.infer.retinaface import RetinaFaceDetector

    from scenes import detectable, place_faces

    faces = load_fer2013(default_data_path(ROOT)).split("test")[0]
    found = detectable(faces[:400], RetinaFaceDetector(threshold=0.8, scale=1.0), n)
    return [cv2.imencode(".jpg", place_faces([f], [(224, 144)])[0])[1].tobytes() for f in found]


def infer_py(images: list[bytes], repeats: int, folder: Path) -> dict:
    """`python infer.py` over the same images (each `repeats` times) in one process: its own images per second."""
    for i in range(repeats):
        for j, data in enumerate(images):
            (folder / f"{i:03d}_{j:03d}.jpg").write_bytes(data)
    r = subprocess.run(
        [sys.executable, str(ROOT / "infer.py"), f"source={folder}", f"predictions={folder.parent / 'p.csv'}", "display=false"],
        capture_output=True,
        text=True,
        cwd=folder.parent,
    )
    found = re.search(r"(\d+) images in ([\d.]+) s \(([\d.]+) per second\)", r.stdout + r.stderr)
    if r.returncode != 0 or not found:
        raise SystemExit(f"infer.py failed: {(r.stdout + r.stderr)[-2000:]}")
    return {"images": int(found.group(1)), "seconds": float(found.group(2)), "images_per_second": float(found.group(3))}


class Load:
    def __init__(self, port: int, images: list[bytes], pid: int):
        self.port, self.images, self.pid = port, images, pid
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self.done = 0
        self.rss: list[tuple[int, float]] = []

    def request(self, data: bytes) -> bytes:
        head = f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
        return head.encode() + data

    async def client(self, k: int, stop):
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        i = k
        while not stop():
            data = self.images[i % len(self.images)]
            i += 1
            start = time.perf_counter()
            try:
                writer.write(self.request(data))
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
                body = await reader.readexactly(length)
                status = int(head.split(b" ", 2)[1])
                if status != 200 or b'"faces":[{' not in body:
                    key = f"{status}: {body[:120].decode(errors='replace')}"
                    self.errors[key] = self.errors.get(key, 0) + 1
            except (OSError, asyncio.IncompleteReadError) as e:
                self.errors[type(e).__name__] = self.errors.get(type(e).__name__, 0) + 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                continue
            self.latencies.append(time.perf_counter() - start)
            self.done += 1
            if self.done == WARM_UP or self.done % RSS_EVERY == 0:
                self.rss.append((self.done, rss_mb(self.pid)))
        writer.close()

    async def run(self, clients: int, duration: float, requests: int) -> float:
        start = time.perf_counter()

        def stop():
            return time.perf_counter() - start >= duration and self.done >= requests

        await asyncio.gather(*(self.client(k, stop) for k in range(clients)))
        return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, seconds: float = 300):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("serve.py exited before it was ready")
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"serve.py was not ready within {seconds:.0f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load at least")
    parser.add_argument("--requests", type=int, default=10_000, help="then on until this many requests (memory)")
    parser.add_argument("--images", type=int, default=20, help="distinct images, sent in turn")
    parser.add_argument("--infer-repeats", type=int, default=10, help="infer.py reads the images this many times each")
    parser.add_argument("--serve-args", nargs="*", default=[], help="overrides for serve.py (concurrency=4 ...)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "serve_load.json")
    args = parser.parse_args()

    images = scenes(args.images)
    port = free_port()
    command = [sys.executable, str(ROOT / "serve.py"), f"port={port}", *args.serve_args]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}", process)
        rss_start = rss_mb(process.pid)
        load_before = [round(x, 2) for x in os.getloadavg()]
        load = Load(port, images, process.pid)
        seconds = asyncio.run(load.run(args.clients, args.duration, args.requests))
        rss_end = rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(60)
    folder = Path(tempfile.mkdtemp()) / "images"
    folder.mkdir()
    try:
        infer = infer_py(images, args.infer_repeats, folder)
    finally:
        shutil.rmtree(folder.parent)
    lat = sorted(load.latencies)
    throughput = load.done / seconds
    warm = next((mb for n, mb in load.rss if n == WARM_UP), rss_start)
    result = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "serve": " ".join(["python serve.py", *args.serve_args]),
        "clients": args.clients,
        "requests": load.done,
        "seconds": round(seconds, 1),
        "throughput_per_s": round(throughput, 2),
        "latency_ms": {
            "p50": round(1000 * statistics.median(lat), 1),
            "p99": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1),
            "max": round(1000 * lat[-1], 1),
        },
        "errors": sum(load.errors.values()),
        "error_kinds": load.errors,
        "server_rss_mb": {
            "at_start": rss_start,
            f"after_{WARM_UP}": warm,
            "at_end": rss_end,
            "growth_after_warm_up_pct": round(100 * (rss_end - warm) / warm, 1),
            "by_requests": load.rss,
        },
        "infer_py_same_images": infer,
        "throughput_vs_infer_py": round(throughput / infer["images_per_second"], 2),
        "machine": {
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform(),
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("server_rss_mb",)}, indent=2))
    print(f"server RSS: start {rss_start} MB, after warm-up {warm} MB, end {rss_end} MB; wrote {args.output}")


if __name__ == "__main__":
    main()
