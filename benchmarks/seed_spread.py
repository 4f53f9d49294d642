"""Mean and spread over seeds of one recipe, for the README's results table.

    python train.py -m experiment=vgg_wide seed=42,43,44 hydra.sweep.dir=outputs/sweeps/vgg_wide_seeds
    python benchmarks/seed_spread.py vgg_wide outputs/sweeps/vgg_wide_seeds [RUN_DIR ...] [--recorded FILE]

Each path is a sweep dir (every finished job in it) or a run dir (its metrics.json). --recorded
adds seeds measured in an earlier session whose run dirs are gone (outputs/ does not outlive a
session): a JSON list of fer.train.sweep.seed_figures dicts, each with its "seed" and a "source" line.
Writes benchmarks/results/seeds_<NAME>.json and prints a row per seed and their mean. Figures as in a sweep's
summary: test_acc without TTA, macro-F1 and ECE (after temperature scaling) with the run's model.tta.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fer.train.sweep import SPREAD_FIGURES, format_spread, read_job, seed_figures, spread, summarize_sweep  # noqa: E402


def runs_in(path: Path) -> list[dict]:
    if (path / "metrics.json").exists():  # one run dir
        rows, source = [read_job(path)], lambda r: str(path)
    else:
        rows, source = summarize_sweep(path), lambda r: f"{path}/{r['job']}"
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        sys.exit(f"error: no finished run (metrics.json) in {path}")
    return [{"seed": r["seed"], "source": source(r), **seed_figures(r)} for r in ok]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="the recipe, e.g. vgg_wide: names the JSON file")
    parser.add_argument("paths", nargs="+", type=Path, help="sweep dirs or run dirs")
    parser.add_argument("--recorded", type=Path, help="JSON list of seeds measured earlier")
    args = parser.parse_args()
    seeds = json.loads(args.recorded.read_text()) if args.recorded else []
    for path in args.paths:
        if not path.is_dir():
            sys.exit(f"error: {path} is not a directory; give a sweep dir or a run dir of train.py")
        seeds += runs_in(path)
    numbers = [s["seed"] for s in seeds]
    if len(set(numbers)) != len(numbers):
        sys.exit(f"error: a seed is given twice ({numbers}); each seed once")
    result = {
        "recipe": args.name,
        "seeds": sorted(seeds, key=lambda s: s["seed"]),
        "spread": {k: spread([s.get(k) for s in seeds]) for k in SPREAD_FIGURES},
    }
    out = ROOT / "benchmarks" / "results" / f"seeds_{args.name}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")

    def row(first: str, group: list[dict]) -> str:
        return f"| {first} | " + " | ".join(format_spread(k, [s.get(k) for s in group]) for k in SPREAD_FIGURES) + " |"

    print("| seed | " + " | ".join(SPREAD_FIGURES) + " |\n|" + "---|" * (1 + len(SPREAD_FIGURES)))
    for s in result["seeds"]:
        print(row(str(s["seed"]), [s]))
    print(row("mean ± sd", seeds))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
