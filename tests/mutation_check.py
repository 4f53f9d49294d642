"""Before you trust a green run: break each feature on purpose and check that a quick test notices.

    python tests/mutation_check.py                 # every mutant; exit 1 if any survives
    python tests/mutation_check.py freeze_nothing  # the named ones
    python tests/mutation_check.py --list
    python tests/mutation_check.py --json benchmarks/results/mutation_check.json

Each mutant is a text substitution in the product's source. The tree (git's tracked and untracked, not
ignored files) is copied to a scratch folder first, and the mutants are applied there one at a time,
each undone before the next (also on Ctrl-C), so the real tree is never touched. For each mutant the
few quick tests that should fail run in one pytest process (`-x`: the first failure ends it); it prints
one line per mutant: `killed by <test>` or `SURVIVED`. The tests are first run on the unmutated copy:
a test that fails there proves nothing, and the check stops with exit 2.

The parsed FER2013 is cached across the runs (FER_TEST_CACHE_DIR, a folder under the system's temp dir).
"""

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # relative to the project root
    edits: tuple[tuple[str, str], ...]  # (text that occurs exactly once, what replaces it)
    tests: tuple[str, ...]  # pytest node ids, cheapest first


MUTANTS = [
    Mutant(
        "init_from_copies_no_weights",
        "fer/train/warmstart.py",
        (("        model.net.load_state_dict(weights)", "        weights"),),
        ("tests/test_finetune.py::test_init_from_copies_every_network_tensor_of_the_checkpoint",),
    ),
    Mutant(
        "freeze_does_nothing",
        "fer/train/warmstart.py",
        (("            p.requires_grad_(False)", "            p.requires_grad_(True)"),),
        ("tests/test_finetune.py::test_freeze_features_keeps_the_convolutions_bit_identical_and_trains_the_head",),
    ),
    Mutant(
        # what any checkpoint loads into is an untrained network: infer.py's default model among them
        "default_model_untrained",
        "fer/runs/checkpoint.py",
        (('        net.load_state_dict(net_weights(ckpt["state_dict"]))', '        net_weights(ckpt["state_dict"])'),),
        (
            "tests/test_shipped_model.py::test_infer_by_default_gives_the_shipped_models_recorded_predictions",
            "tests/test_backend_auto.py::test_auto_runs_the_shipped_checkpoint_on_onnxruntime_with_torchs_probabilities",
        ),
    ),
    Mutant(
        "export_mean_std_swapped",
        "fer/export/__init__.py",
        (
            (
                "to_network_input(faces, self.mean, self.std, self.input_size)",
                "to_network_input(faces, self.std, self.mean, self.input_size)",
            ),
        ),
        (
            "tests/test_export.py::test_a_trained_models_export_gives_torchs_probabilities_and_a_wrong_normalisation_would_show",
            "tests/test_backend_auto.py::test_the_shipped_models_export_py_file_gives_torchs_probabilities_on_real_faces",
        ),
    ),
    Mutant(
        "export_mean_off",  # the default 0.5 instead of the training split's statistic
        "fer/export/__init__.py",
        (
            (
                "to_network_input(faces, self.mean, self.std, self.input_size)",
                "to_network_input(faces, 0.5, self.std, self.input_size)",
            ),
        ),
        (
            "tests/test_export.py::test_a_trained_models_export_gives_torchs_probabilities_and_a_wrong_normalisation_would_show",
            "tests/test_backend_auto.py::test_the_shipped_models_export_py_file_gives_torchs_probabilities_on_real_faces",
        ),
    ),
    Mutant(
        "cache_never_read",
        "fer/data/cache.py",
        (("    if file.exists():", "    if False:"),),
        ("tests/test_reader.py::test_the_second_load_reads_the_cache_and_parses_nothing",),
    ),
    Mutant(
        "tta_flip_not_flipped",
        "fer/tta.py",
        (("    return crops + [c.flip(-1) for c in crops]", "    return crops + [c for c in crops]"),),
        ("tests/test_calibration.py::test_views_are_the_centre_crop_its_mirror_and_the_corners",),
    ),
    Mutant(
        "tta_ten_crop_corners_wrong",
        "fer/tta.py",
        (("corners = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size)]", "corners = [(0, 0)] * 4"),),
        ("tests/test_calibration.py::test_views_are_the_centre_crop_its_mirror_and_the_corners",),
    ),
    Mutant(
        "tracker_ids_new_every_frame",
        "fer/infer/track.py",
        (("            if track.id < 0:", "            if True:"),),
        ("tests/test_infer_parts.py::test_tracker_keeps_ids_and_smooths",),
    ),
    Mutant(
        "atomic_write_in_place",
        "fer/runs/atomic.py",
        (
            ('    part = path.with_name(f".{path.name}.{os.getpid()}.part")', "    part = path"),
            ("        part.unlink(missing_ok=True)", "        pass"),
        ),
        ("tests/test_run_safety.py::test_replace_atomically_keeps_the_old_file_when_the_write_fails",),
    ),
    Mutant(
        "ddp_eval_sampler_gives_every_rank_all_faces",
        "fer/data/datamodule.py",
        (
            (
                "        return iter(range(self.rank, len(self.dataset), self.num_replicas))",
                "        return iter(range(len(self.dataset)))",
            ),
        ),
        ("tests/test_scaling.py::test_eval_shards_cover_every_face_exactly_once",),
    ),
    Mutant(
        # DDP's gradient averaging replaced by torch's no-op communication hook: each rank steps on its own gradients
        "ddp_ranks_not_synchronised",
        "fer/train/module.py",
        (
            (
                "    def on_train_start(self):\n",
                "    def on_train_start(self):\n"
                "        if self.trainer.world_size > 1:\n"
                "            from torch.distributed.algorithms.ddp_comm_hooks.debugging_hooks import noop_hook\n\n"
                "            self.trainer.strategy.model.register_comm_hook(None, noop_hook)\n",
            ),
        ),
        ("tests/test_scaling.py::test_ddp_ranks_end_training_with_bit_identical_weights",),
    ),
    Mutant(
        "resume_does_not_restore_the_optimizer",
        "fer/train/module.py",
        (
            (
                "        self.temperatures = dict(meta.temperature)\n",
                "        self.temperatures = dict(meta.temperature)\n"
                '        checkpoint["optimizer_states"] = [{**s, "state": {}} for s in checkpoint.get("optimizer_states", [])]\n',
            ),
        ),
        ("tests/test_resume_state.py::test_resume_restores_weights_and_optimizer_state_bit_for_bit",),
    ),
    Mutant(
        "resume_restores_nothing",
        "fer/train/run.py",
        (("ckpt_path=cfg.ckpt_path if resuming else None", "ckpt_path=None"),),
        ("tests/test_resume_state.py::test_resume_restores_weights_and_optimizer_state_bit_for_bit",),
    ),
    Mutant(
        "inference_normalises_unlike_training",
        "fer/infer/classify.py",
        (
            (
                "normalize(torch.from_numpy(np.ascontiguousarray(faces)), self.mean, self.std)",
                "normalize(torch.from_numpy(np.ascontiguousarray(faces)), 0.5, self.std)",
            ),
        ),
        (
            "tests/test_infer_parts.py::test_inference_gives_the_training_tensor_for_the_same_face",
            "tests/test_shipped_model.py::test_infer_by_default_gives_the_shipped_models_recorded_predictions",
        ),
    ),
]


def scratch_copy() -> Path:
    """The working tree as git sees it (tracked and untracked files, not ignored ones) in a new temp folder."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    scratch = Path(tempfile.mkdtemp(prefix="fer-mutants-"))
    for name in filter(None, listed.split("\0")):
        src = ROOT / name
        if src.is_file():
            (scratch / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, scratch / name)
    return scratch


def apply(mutant: Mutant, tree: Path) -> str:
    """Apply the mutant's edits in `tree`; returns the file's original text (to put back)."""
    path = tree / mutant.file
    original = text = path.read_text()
    for old, new in mutant.edits:
        if text.count(old) != 1:
            raise SystemExit(f"mutant {mutant.name}: {old!r} occurs {text.count(old)} times in {mutant.file}, not once")
        text = text.replace(old, new)
    path.write_text(text)
    return original


def run_tests(tree: Path, tests: list[str], env: dict) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "pytest", "-n", "0", "-x", "-q", "-rfE", "-p", "no:cacheprovider", *tests]
    r = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def first_failure(output: str) -> str | None:
    m = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    return m.group(1) if m else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutants to apply (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and their tests")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    unknown = set(args.names) - {m.name for m in MUTANTS}
    if unknown:
        print(f"unknown mutants: {', '.join(sorted(unknown))} (see --list)", file=sys.stderr)
        return 2
    if args.list:
        for m in chosen:
            print(f"{m.name}: {m.file}; {' '.join(m.tests)}")
        return 0

    tree = scratch_copy()
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "FER_TEST_CACHE_DIR": os.environ.get("FER_TEST_CACHE_DIR", str(Path(tempfile.gettempdir()) / "fer-mutation-cache")),
        "MPLBACKEND": "Agg",
    }
    results, survived = {}, []
    try:
        tests = list(dict.fromkeys(t for m in chosen for t in m.tests))
        code, output = run_tests(tree, tests, env)
        if code != 0:
            print(f"the tests fail without a mutant ({first_failure(output)}): fix that first\n{output[-3000:]}")
            return 2
        for m in chosen:
            t0 = time.perf_counter()
            original = apply(m, tree)
            try:
                code, output = run_tests(tree, list(m.tests), env)
            finally:
                (tree / m.file).write_text(original)
            seconds = round(time.perf_counter() - t0, 1)
            killer = first_failure(output) if code == 1 else None
            if killer is None and code != 0:  # not a failing test: an error of pytest's own (collection, usage)
                killer = f"pytest exit {code}: {output.strip().splitlines()[-1] if output.strip() else ''}"
            if killer is None:
                survived.append(m.name)
            results[m.name] = {"file": m.file, "killed_by": killer, "seconds": seconds}
            print(f"{m.name}: {'killed by ' + killer if killer else 'SURVIVED'} ({seconds} s)", flush=True)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    summary = f"{len(chosen) - len(survived)} of {len(chosen)} mutants killed"
    print(summary + (f"; survived: {', '.join(survived)}" if survived else ""))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "command": "python tests/mutation_check.py " + " ".join(sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "killed": len(chosen) - len(survived),
            "mutants": results,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
