"""One job of a run or a sweep, and the table a sweep leaves behind.

In a multirun, a failing job is written down (error.txt in its dir) and the sweep goes on; at the
end SweepSummary ranks the jobs by validation accuracy, test accuracy beside it (never the ranking key).
"""

import csv
import importlib.metadata
import importlib.util
import json
import logging
import shlex
import statistics
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from fer.errors import FerError, user_error

log = logging.getLogger(__name__)


def run_job(cfg: DictConfig):
    from fer.config import check_train
    from fer.runs import rundir
    from fer.runs.resume import resumes_in
    from fer.train.distributed import job_scope
    from fer.train.run import quiet_lightning, run  # imports torch and lightning

    quiet_lightning()

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        rundir.require_claim(run_dir)  # before anything: a dir that is another run's is left as it is
    except rundir.RunDirTaken as e:
        if not multirun:
            raise
        print(f"error: this job was refused: {e}", file=sys.stderr, flush=True)  # its log file is the other run's
        return None
    try:
        check_train(cfg, hydra_cfg.runtime.choices)
        if multirun and cfg.train and cfg.ckpt_path and not resumes_in(cfg, run_dir):  # the Optuna sweeper's reruns do
            raise FerError(f"a sweep does not resume runs: resume each on its own (python train.py ckpt_path={cfg.ckpt_path})")
        with job_scope():  # a DDP job's processes and environment end with it, not with the sweep
            metrics = run(cfg)
        return metrics.get("val", {}).get("acc")  # what a sweeper (e.g. Optuna) maximises
    except Exception as e:
        user = user_error(e)  # a FerError, or one Hydra wrapped while building an object from the config
        if rundir.rank() == 0:
            rundir.record_failure(run_dir, str(user) if user else f"{type(e).__name__}: {e}")
        if not multirun:
            raise  # the entry point's exit_on_user_error: a user's error on one line, exit 2
        if user is not None:
            log.error("this job failed: %s", user)
            return None
        # a bug or a crash in one job must not take the other jobs down
        log.error("job failed:\n%s", traceback.format_exc())
    return None


# Options that Hydra plugins (or other optional packages) provide. Without the plugin Hydra only says it
# cannot find, say, hydra/launcher/submitit_slurm; this names the package to install.
PLUGIN_OPTIONS = {
    "hydra/launcher=slurm": "hydra-submitit-launcher",
    "hydra/launcher=submitit_slurm": "hydra-submitit-launcher",
    "hydra/launcher=submitit_local": "hydra-submitit-launcher",
    "hydra/launcher=joblib": "hydra-joblib-launcher",
    "hydra/sweeper=optuna": "optuna",  # the sweeper is fer's own (fer/search), Optuna the one thing it needs
    "hparams_search=optuna": "optuna",
}


def require_plugins(argv: list[str]):
    """Before Hydra composes anything: every plugin the command line asks for is installed."""
    for arg in argv[1:]:
        option = arg.lstrip("+")
        package = PLUGIN_OPTIONS.get(option)
        if package == "optuna":
            _require_search(option)
        elif package and importlib.util.find_spec("hydra_plugins." + package.replace("-", "_")) is None:
            raise FerError(f"{option} needs the Hydra plugin {package}, which is not installed: pip install {package}")


def _require_search(option: str):
    """fer's Optuna sweeper: Optuna 4 or later, its hydra_plugins.fer_optuna, and not the old plugin, whose
    configs (hydra/sweeper/optuna, hydra/sweeper/sampler/tpe) Hydra would check ours against and refuse."""
    if importlib.util.find_spec("optuna") is None:
        raise FerError(f"{option} needs optuna, which is not installed: pip install 'optuna>=4'")
    version = importlib.metadata.version("optuna")
    if int(version.split(".")[0]) < 4:
        raise FerError(f"{option} needs optuna 4 or later, not {version}: pip install -U 'optuna>=4'")
    if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None:
        raise FerError(
            f"{option} runs fer's own Optuna sweeper, whose configs the installed hydra-optuna-sweeper shadows: "
            "pip uninstall hydra-optuna-sweeper"
        )
    if importlib.util.find_spec("hydra_plugins.fer_optuna") is None:
        raise FerError(f"{option} needs hydra_plugins.fer_optuna, which this install of fer predates: pip install -e . (again)")


COLUMNS = [
    "rank",
    "job",
    "overrides",
    "status",
    "val_acc",
    "val_f1_macro",
    "test_acc",
    "test_f1_macro",
    "train_acc",
    "epochs",
    "minutes",
]


# What fer.search.pruning writes into a run the Optuna pruner stopped: one line, which becomes the job's status.
PRUNED_FILE = "pruned.txt"


def read_job(job_dir: Path) -> dict:
    """One run dir of train.py as a summary row: its overrides, status and, when it finished, its figures."""
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    overrides = " ".join(OmegaConf.load(overrides_file)) if overrides_file.exists() else ""
    row = {"job": job_dir.name, "overrides": overrides}
    if (job_dir / "metrics.json").exists():
        m = json.loads((job_dir / "metrics.json").read_text())
        row.update(
            status="ok",
            val_acc=m["val"]["acc"],
            val_f1_macro=m["val"]["f1_macro"],
            test_acc=m["test"]["acc"],
            test_f1_macro=m["test"]["f1_macro"],
            train_acc=m["train"]["acc"],
            epochs=m["epochs"],
            minutes=round(m["wall_time_s"] / 60, 1),
            recall=m["test"]["recall"],
            history=m["history"],
            calibration=m.get("calibration"),
            seed=m.get("seed"),
            tta=m["test"].get("tta"),
        )
    elif (job_dir / "error.txt").exists():
        # The job's own one-line message, whole: a refusal cut mid-sentence no longer says what to do.
        row.update(status="failed: " + ((job_dir / "error.txt").read_text().strip().splitlines() or ["no message"])[0])
    else:
        row.update(status="did not finish")
    if (job_dir / PRUNED_FILE).exists():  # stopped early on purpose: its figures are those of a shortened run
        row.update(status=(job_dir / PRUNED_FILE).read_text().strip() or "pruned")
    return row


# Overrides that say how a job ran inside a sweep, not what it trained: the search's config group (in one
# run it would only configure a sweeper nobody uses) and the checkpoint an interrupted trial went on from.
_NOT_REPRODUCED = ("hparams_search", "ckpt_path")


def reproduce_command(overrides: list[str]) -> str:
    """The one-run command that trains what a sweep's job trained."""
    kept = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] not in _NOT_REPRODUCED]
    return " ".join(["python train.py", *map(shlex.quote, kept)])


def refused_jobs(sweep_dir: Path) -> list[dict]:
    """Jobs refused because their dir was another run's (fer.runs.rundir writes them down in the sweep dir)."""
    from fer.runs.rundir import REFUSED

    path = sweep_dir / REFUSED
    lines = path.read_text().splitlines() if path.is_file() else []
    return [{"job": name, "overrides": "", "status": "refused: " + why} for name, _, why in (x.partition("\t") for x in lines)]


def summarize_sweep(sweep_dir: Path) -> list[dict]:
    rows = [read_job(d) for d in sorted((d for d in sweep_dir.iterdir() if (d / ".hydra").is_dir()), key=job_number)]
    rows += refused_jobs(sweep_dir)
    ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: -(r["val_acc"] or 0))
    rest = [r for r in rows if r["status"] != "ok"]
    for i, r in enumerate(ok, 1):
        r["rank"] = i
    return ok + rest


def split_label(split: str, split_names: Mapping | None) -> str:
    """ "validation (PublicTest)" for a data set that names its splits (conf/data/*.yaml split_names), else "validation"."""
    what = {"val": "validation", "test": "test"}[split]
    own = (split_names or {}).get(split)
    return f"{what} ({own})" if own and own != what else what


def write_summary(sweep_dir: Path, rows: list[dict], split_names: Mapping | None = None) -> str:
    val, test = split_label("val", split_names), split_label("test", split_names)
    # Per-class test recall: what class weighting or balanced sampling changes (Disgust above all).
    classes = next((list(r["recall"]) for r in rows if r.get("recall")), [])
    recall_columns = [f"test_recall_{c}" for c in classes]
    for r in rows:
        r.update({f"test_recall_{c}": v for c, v in (r.get("recall") or {}).items()})
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS + recall_columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)

    def cell(r, c):
        v = r.get(c)
        if v is None:
            return ""
        return f"{100 * v:.2f}%" if c.endswith("_acc") or c.endswith("f1_macro") or c.startswith("test_recall_") else str(v)

    def table(columns, header):
        return [
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(columns),
            *("| " + " | ".join(cell(r, c) for c in columns) + " |" for r in rows),
        ]

    lines = table(COLUMNS, COLUMNS)
    if classes:
        lines += [
            "",
            f"{test[0].upper() + test[1:]} recall per class:",
            "",
            *table(["rank", "job", *recall_columns], ["rank", "job", *classes]),
        ]
    groups = seed_spread(rows)
    if groups:
        lines += [
            "",
            "Mean ± sample standard deviation over seeds, for jobs that differ only in `seed` "
            "(test_acc without TTA; macro-F1 and ECE with the job's model.tta):",
            "",
            "| overrides | seeds | " + " | ".join(SPREAD_FIGURES) + " |",
            "|" + "---|" * (2 + len(SPREAD_FIGURES)),
            *(
                f"| {g['overrides'] or '(none)'} | {', '.join(map(str, g['seeds']))} | "
                + " | ".join(format_spread(k, g[k]) for k in SPREAD_FIGURES)
                + " |"
                for g in groups
            ),
        ]
        (sweep_dir / "seeds.json").write_text(json.dumps(groups, indent=2) + "\n")
    best = next((r for r in rows if r.get("rank") == 1), None)
    if best:
        saved = sweep_dir / best["job"] / ".hydra" / "overrides.yaml"
        overrides = OmegaConf.load(saved) if saved.is_file() else shlex.split(best.get("overrides") or "")
        lines = [
            f"Best: job {best['job'].split('_', 1)[0]} ({cell(best, 'val_acc')} val accuracy), trained again by",
            "",
            f"    {reproduce_command(list(overrides))}",
            "",
            *lines,
        ]
    text = f"Ranked by {val} accuracy; {test} is reported, never used to rank.\n\n" + "\n".join(lines) + "\n"
    (sweep_dir / "summary.md").write_text(text)
    ok = [r for r in rows if r["status"] == "ok"]
    if ok:
        from fer.train import plots  # matplotlib only when there is something to draw

        jobs = dict(zip(_distinguishing_labels(ok), ok))
        plots.save(plots.sweep_figure(jobs, classes, f"sweep {sweep_dir.name}", val, test), sweep_dir / "summary.png")
    return text


# What a seed group reports: the selection figure, the test accuracy for each TTA mode (from the
# calibration report, which evaluates every mode), and macro-F1 and calibration error after
# temperature scaling with the job's own TTA (model.tta), and the cost: the epochs' time (with
# validation), not the whole run's, which adds data loading, test and calibration.
SPREAD_FIGURES = [
    "val_acc",
    "test_acc",
    "test_acc_flip",
    "test_acc_ten_crop",
    "test_f1_macro",
    "test_ece_calibrated",
    "train_minutes",
]


def seed_figures(row: dict) -> dict:
    """One finished job's figures for a seed group; test_acc is without TTA whatever the job's tta."""
    cal = row.get("calibration") or {}
    own = cal.get(row.get("tta") or "none") or {}
    history = row.get("history") or []
    return {
        "val_acc": row.get("val_acc"),
        "test_acc": (cal.get("none") or {}).get("acc", row.get("test_acc")),
        "test_acc_flip": (cal.get("flip") or {}).get("acc"),
        "test_acc_ten_crop": (cal.get("ten_crop") or {}).get("acc"),
        "test_f1_macro": row.get("test_f1_macro"),
        "test_ece_calibrated": (own.get("reliability_calibrated") or {}).get("ece"),
        "train_minutes": round(history[-1]["time_s"] / 60, 1) if history and "time_s" in history[-1] else None,
    }


def seed_spread(rows: list[dict]) -> list[dict]:
    """Groups of two or more finished jobs whose overrides differ only in seed: each figure's values."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["status"] == "ok":
            key = " ".join(o for o in r["overrides"].split() if not o.lstrip("+").startswith("seed="))
            groups.setdefault(key, []).append(r)
    out = []
    for key, members in groups.items():
        if len(members) < 2:
            continue
        figures = [seed_figures(m) for m in members]
        out.append(
            {"overrides": key, "seeds": [m.get("seed") for m in members], **{k: [f[k] for f in figures] for k in SPREAD_FIGURES}}
        )
    return out


def spread(values: list) -> dict | None:
    """Mean, sample standard deviation and range of the values given (None where a job lacks one)."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {
        "mean": statistics.mean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def format_spread(figure: str, values: list) -> str:
    """`values` of one of SPREAD_FIGURES as mean ± sd: fractions in percent, minutes as they are."""
    s = spread(values)
    if s is None:
        return ""
    scale, unit = (1, "") if figure.endswith("minutes") else (100, "%")
    if s["n"] == 1:  # one value has no spread; "± 0.00" would claim one
        return f"{scale * s['mean']:.2f}{unit}"
    return f"{scale * s['mean']:.2f} ± {scale * s['sd']:.2f}{unit}"


def _distinguishing_labels(rows: list[dict]) -> list[str]:
    """Each job named by the overrides in which it differs from the others (model.net.dropout=0.2)."""
    overrides = [dict(o.split("=", 1) for o in r["overrides"].split() if "=" in o) for r in rows]
    keys = [k for k in dict.fromkeys(k for o in overrides for k in o) if len({o.get(k) for o in overrides}) > 1]
    return [" ".join(f"{k}={o.get(k)}" for k in keys) or r["job"] for o, r in zip(overrides, rows)]


def job_number(d: Path) -> int:
    """A sweep job dir's number (3 of 3_dropout-0.35, or of 3 when the sweep varies nothing); 10**9 for other dirs."""
    head = d.name.split("_", 1)[0]
    return int(head) if head.isdigit() else 10**9


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs):
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = summarize_sweep(sweep_dir)
        split_names = OmegaConf.select(config, "data.split_names")
        print(
            "\n"
            + write_summary(sweep_dir, rows, split_names)
            + f"\nsweep dir: {sweep_dir} (summary.csv, summary.md, summary.png)",
            flush=True,
        )
        refused = [r for r in rows if r["status"].startswith("refused")]
        failed = [r for r in rows if r["status"] != "ok" and not r["status"].startswith("pruned") and r not in refused]
        if failed or refused:
            parts = [f"{len(failed)} of {len(rows)} jobs failed; see error.txt in their run dirs"] if failed else []
            parts += (
                [f"{len(refused)} of {len(rows)} jobs were refused (their dir was another run's); see summary.md"]
                if refused
                else []
            )
            print("error: " + "; ".join(parts), file=sys.stderr, flush=True)
            sys.exit(1)
