"""Training speed of the framework against a bare PyTorch loop, data loading times and peak memory.

    python benchmarks/train_throughput.py [--steps 40] [--out benchmarks/results/train_throughput.json]

Both loops train the same network (built from the same Hydra config) with the same batch size,
in-memory data and batch augmentation; the difference is Lightning, torchmetrics and our hooks.
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

from fer.data.cache import load_fer2013  # noqa: E402
from fer.preprocess import normalize  # noqa: E402


def data_times(path: str) -> dict:
    with tempfile.TemporaryDirectory() as d:
        os.environ["FER_CACHE_DIR"] = d
        t = time.perf_counter()
        load_fer2013(path)
        first = time.perf_counter() - t
        t = time.perf_counter()
        load_fer2013(path)
        cached = time.perf_counter() - t
    del os.environ["FER_CACHE_DIR"]
    return {"first_parse_s": round(first, 2), "cached_load_s": round(cached, 3)}


def build(model_name: str, data_path: str):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model_name}", f"data.path={data_path}"])
    model, dm = instantiate(cfg.model), instantiate(cfg.data)
    dm.setup("fit")
    return model, dm


def bare_loop(model, dm, steps: int, warmup: int) -> float:
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


def framework_loop(model, dm, steps: int, warmup: int) -> float:
    """images/s of the same training through Trainer.fit (metrics, logging hooks, batch transfer)."""
    timer = _Timer(warmup)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=warmup + steps, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    trainer.fit(model, datamodule=dm)
    return timer.n / (timer.t1 - timer.t0)


def peak_memory_mb(data_path: str, steps: int) -> float:
    """Peak resident memory of a real `python train.py` run (1 epoch of `steps` batches + validation + test)."""
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, str(ROOT / "train.py"), f"data.path={data_path}", "trainer.max_epochs=1",
                        f"trainer.limit_train_batches={steps}", "trainer.enable_progress_bar=false", f"hydra.run.dir={d}/run"],
                       cwd=ROOT, check=True, capture_output=True)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--data", default=None, help="FER2013 (default: $FER2013_PATH, else data/fer2013.csv, as train.py)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/train_throughput.json"))
    args = ap.parse_args()
    if args.data is None:
        from fer.data.reader import default_data_path

        args.data = str(default_data_path(ROOT))

    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
              "steps": args.steps, "data": data_times(args.data), "models": {}}
    for name in ("baseline", "regularized"):
        model, dm = build(name, args.data)
        torch.manual_seed(0)
        # alternate the two loops so drift in machine load hits both alike
        bare = [bare_loop(model, dm, args.steps, args.warmup)]
        fw = [framework_loop(model, dm, args.steps, args.warmup)]
        bare.append(bare_loop(model, dm, args.steps, args.warmup))
        fw.append(framework_loop(model, dm, args.steps, args.warmup))
        b, f = max(bare), max(fw)
        epoch_min = len(dm.splits["train"]) / f / 60
        result["models"][name] = {"batch_size": dm.batch_size, "input_size": dm.input_size,
                                  "bare_images_per_s": round(b, 1), "framework_images_per_s": round(f, 1),
                                  "framework_overhead_pct": round(100 * (b - f) / b, 2), "minutes_per_epoch": round(epoch_min, 2)}
        print(name, result["models"][name], flush=True)
    result["peak_memory_mb_train_run"] = round(peak_memory_mb(args.data, 20), 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
