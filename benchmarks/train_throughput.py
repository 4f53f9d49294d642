"""Training speed of the framework against a bare PyTorch loop, in fp32 and bf16, data loading times
and peak memory.

    python benchmarks/train_throughput.py [--steps 40] [--models baseline regularized vgg]
                                          [--out benchmarks/results/train_throughput.json]

Both loops train the same network (built from the same Hydra config) with the same batch size,
in-memory data and batch augmentation; the difference is Lightning, torchmetrics and our hooks.
Each is timed in fp32 and in bf16 mixed precision (autocast), alternating, so the ratio between
them is measured under the same load. bf16 is timed only where the CPU has it natively (AVX-512
BF16 or AMX); elsewhere it is emulated and `trainer.precision=auto` does not choose it.
Run it on a quiet machine: on 2 cores anything else running shows up directly in the figures.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lightning as L  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from fer.data.cache import load  # noqa: E402
from fer.data.reader import Fer2013, fer2013_settings  # noqa: E402
from fer.preprocess import normalize  # noqa: E402
from fer.runs.runinfo import cpu_model  # noqa: E402
from fer.train import precision  # noqa: E402


def data_times(path: str) -> dict:
    with tempfile.TemporaryDirectory() as d:
        os.environ["FER_CACHE_DIR"] = d
        t = time.perf_counter()
        load(fer2013_settings(path), Fer2013())
        first = time.perf_counter() - t
        t = time.perf_counter()
        load(fer2013_settings(path), Fer2013())
        cached = time.perf_counter() - t
    del os.environ["FER_CACHE_DIR"]
    return {"first_parse_s": round(first, 2), "cached_load_s": round(cached, 3)}


def build(model_name: str, data_path: str):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model_name}", f"data.path={data_path}"])
    model, dm = instantiate(cfg.model), instantiate(cfg.data)
    dm.setup("fit")
    return model, dm


def bare_loop(model, dm, steps: int, warmup: int, bf16: bool = False) -> float:
    """images/s of a plain PyTorch loop: index a batch, normalise, augment, step."""
    net = model.net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    faces = dm.splits["train"]
    bs = dm.batch_size
    g = torch.Generator().manual_seed(0)
    t0 = None
    for step in range(warmup + steps):
        if step == warmup:
            t0 = time.perf_counter()
        idx = torch.randint(0, len(faces), (bs,), generator=g)
        x = normalize(faces.images[idx], dm.mean, dm.std)
        x = dm.augment(x, dm.input_size) if dm.augment is not None else x
        if model.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(x), faces.labels[idx], label_smoothing=model.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * bs / (time.perf_counter() - t0)


class _Timer(L.Callback):
    def __init__(self, warmup):
        self.warmup, self.t0, self.t1, self.n = warmup, None, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx >= self.warmup:
            self.n += len(batch[1])
            self.t1 = time.perf_counter()


def framework_loop(model, dm, steps: int, warmup: int, bf16: bool = False) -> float:
    """images/s of the same training through Trainer.fit (metrics, logging hooks, batch transfer)."""
    timer = _Timer(warmup)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        precision="bf16-mixed" if bf16 else "32-true",
        limit_train_batches=warmup + steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(model, datamodule=dm)
    return timer.n / (timer.t1 - timer.t0)


def peak_memory_mb(data_path: str, steps: int) -> float:
    """Peak resident memory of a real `python train.py` run (1 epoch of `steps` batches + validation + test)."""
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "train.py"),
                f"data.path={data_path}",
                "trainer.max_epochs=1",
                f"trainer.limit_train_batches={steps}",
                "trainer.enable_progress_bar=false",
                f"hydra.run.dir={d}/run",
            ],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--models", nargs="+", default=["baseline", "regularized", "vgg"])
    ap.add_argument("--data", default=None, help="FER2013 (default: $FER2013_PATH, else data/fer2013.csv, as train.py)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/train_throughput.json"))
    args = ap.parse_args()
    if args.data is None:
        from fer.data.reader import default_data_path

        args.data = str(default_data_path(ROOT))

    native_bf16 = precision.cpu_has_native_bfloat16()
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native_bf16,
        "auto_precision": precision.choose("auto", "cpu")[0],
        "steps": args.steps,
        "data": data_times(args.data),
        "models": {},
    }
    modes = (False, True) if native_bf16 else (False,)
    for name in args.models:
        model, dm = build(name, args.data)
        torch.manual_seed(0)
        # alternate the loops and precisions twice so drift in machine load hits all alike; best of two
        runs = {(loop, bf16): [] for loop in ("bare", "framework") for bf16 in modes}
        for _ in range(2):
            for bf16 in modes:
                runs[("bare", bf16)].append(bare_loop(model, dm, args.steps, args.warmup, bf16))
                runs[("framework", bf16)].append(framework_loop(model, dm, args.steps, args.warmup, bf16))
        best = {key: max(v) for key, v in runs.items()}
        b, f = best[("bare", False)], best[("framework", False)]
        row = {
            "batch_size": dm.batch_size,
            "input_size": dm.input_size,
            "bare_images_per_s": round(b, 1),
            "framework_images_per_s": round(f, 1),
            "framework_overhead_pct": round(100 * (b - f) / b, 2),
            "minutes_per_epoch": round(len(dm.splits["train"]) / f / 60, 2),
        }
        if native_bf16:
            fb = best[("framework", True)]
            row.update(
                {
                    "bf16_bare_images_per_s": round(best[("bare", True)], 1),
                    "bf16_framework_images_per_s": round(fb, 1),
                    "bf16_speedup": round(fb / f, 2),
                    "bf16_minutes_per_epoch": round(len(dm.splits["train"]) / fb / 60, 2),
                }
            )
        result["models"][name] = row
        print(name, row, flush=True)
    result["peak_memory_mb_train_run"] = round(peak_memory_mb(args.data, 20), 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
