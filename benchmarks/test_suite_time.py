"""How long the test suite takes: the quick selection (-m "not slow") and the full run, each timed
as the README runs it, with the machine it ran on and how busy that machine was.

    python benchmarks/test_suite_time.py                 # writes benchmarks/results/test_suite_time.json
    python benchmarks/test_suite_time.py --workers 0     # one process (-n 0) instead of pyproject's -n auto
    python benchmarks/test_suite_time.py --only quick    # the quick selection alone

The goal: the quick selection under 3 minutes and the full run under 10 on a 2-core
machine. Other work on the machine slows both: the load average before and after each run is
recorded beside its time, so a figure taken on a busy machine reads as such.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

from fer.runs.runinfo import cpu_model

ROOT = Path(__file__).resolve().parents[1]
SELECTIONS = {"quick": ["-m", "not slow"], "full": []}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def time_pytest(args: list[str]) -> dict:
    """One `python -m pytest ARGS` in the project root: wall and CPU seconds, and pytest's summary line."""
    before, start = load(), time.perf_counter()
    children = os.times()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    after = os.times()
    cpu = (after.children_user - children.children_user) + (after.children_system - children.children_system)
    summary = next(
        (line.strip("= ") for line in reversed(done.stdout.splitlines()) if re.search(r"\d+ (passed|failed)", line)), ""
    )
    return {
        "command": " ".join(["python -m pytest", *args]),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "exit_code": done.returncode,
        "summary": summary,
        "load_average_before": before,
        "load_average_after": load(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workers", type=int, default=None, help="pytest-xdist workers (-n N; 0: one process); default: pyproject's -n auto"
    )
    parser.add_argument("--only", choices=sorted(SELECTIONS), help="time one selection (default: both)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "test_suite_time.json")
    args = parser.parse_args()

    workers = [] if args.workers is None else ["-n", str(args.workers)]
    runs = {}
    for name, selection in SELECTIONS.items():
        if args.only in (None, name):
            runs[name] = time_pytest([*workers, *selection])
            print(
                f"{name}: {runs[name]['wall_s']:.0f} s ({runs[name]['summary']}), load {runs[name]['load_average_before']}",
                flush=True,
            )
    result = {
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "workers": "auto: " + str(min(os.cpu_count() or 1, 4)) if args.workers is None else args.workers,
        "goal_s": {"quick": 180, "full": 600},
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    sys.exit(max((r["exit_code"] for r in runs.values()), default=0))


if __name__ == "__main__":
    main()
