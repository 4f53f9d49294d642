"""The commands outside the checkout: `python -m fer.train|infer|export` from any directory, and the
package built as a wheel (what `pip install .` installs) carrying the configs and the shipped model."""

import csv
import importlib.util
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import cv2
import pytest

from fer.data.labels import EMOTIONS

from conftest import ROOT, run_cli

DETECTORS = sorted(p.stem for p in (ROOT / "conf" / "detector").glob("*.yaml"))  # the options conf/ offers

SHIPPED = "fer/weights/fer2013_regularized.ckpt"


def only_on_path(pythonpath: Path) -> dict:
    # Only `pythonpath` is searched before the interpreter's own site-packages: the checkout is not on the path.
    return {"PYTHONPATH": str(pythonpath)}


@pytest.mark.parametrize("command", ["fer.train", "fer.infer", "fer.export"])
def test_each_command_composes_its_config_from_another_directory(command, tmp_path):
    r = run_cli(["-m", command, "--cfg", "all"], cwd=tmp_path, env=only_on_path(ROOT))
    assert r.returncode == 0, r.stderr[-2000:]
    # Hydra names the job after the module: train.log in a training run dir, as before
    assert f"name: {command.split('.')[1]}\n" in r.stdout
    assert not list(tmp_path.iterdir())  # --cfg writes nothing


def test_the_module_and_the_script_report_a_users_error_alike(tmp_path):
    for args in (["-m", "fer.infer"], [str(ROOT / "infer.py")]):
        r = run_cli([*args, "detector=nope"], cwd=tmp_path, env=only_on_path(ROOT))
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [
            f"error: detector=nope: no such detector; choose one of {', '.join(DETECTORS)} (conf/detector/)"
        ], r.stderr[-2000:]


# --- the wheel ----------------------------------------------------------------------------------


def _builds_wheels_offline() -> bool:
    # This environment's setuptools can build the wheel: 70.1+ builds wheels itself, 68+ (pyproject's floor)
    # with the wheel package. A fresh venv's bundled setuptools (65 with Python 3.11) cannot.
    try:
        major, minor = (int(part) for part in version("setuptools").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (70, 1) or (major >= 68 and importlib.util.find_spec("wheel") is not None)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip install .` builds, from a copy of the files it needs (no build/ left in the checkout).
    With setuptools in this environment it is built without an isolated build environment: no network."""
    tmp = tmp_path_factory.mktemp("wheel")
    src, dist = tmp / "src", tmp / "dist"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("fer", "conf"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    offline = ["--no-build-isolation"] if _builds_wheels_offline() else []  # else pip fetches setuptools
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", *offline, "-w", str(dist), "-q"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (whl,) = dist.glob("fer-*.whl")
    return whl


@pytest.mark.xdist_group("wheel")  # its module-scoped wheel, made once, on one worker
@pytest.mark.slow
def test_the_wheel_carries_every_module_config_and_the_shipped_model(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    # fer/search/hydra_plugins ships as the hydra_plugins namespace (pyproject's package-dir), where Hydra finds sweepers
    modules = {
        p.relative_to(ROOT).as_posix().replace("fer/search/hydra_plugins/", "hydra_plugins/")
        for p in (ROOT / "fer").rglob("*.py")
    }
    assert not modules - names, (
        f"missing from the wheel (add the package to [tool.setuptools] packages): {sorted(modules - names)}"
    )
    configs = {"fer/conf/" + p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*.yaml")}
    assert not configs - names, sorted(configs - names)
    assert {"fer/conf/train.yaml", "fer/conf/infer.yaml", "fer/conf/export.yaml", "fer/conf/hydra/job_logging/fer.yaml"} <= names
    assert {SHIPPED, "fer/weights/README.md"} <= names
    assert not [n for n in names if n.endswith("scenes.py")]  # test helpers stay in tests/
    assert "hydra_plugins/__init__.py" not in names  # a namespace other plugins share
    page = {p.relative_to(ROOT).as_posix() for p in (ROOT / "fer" / "serve" / "static").iterdir()}  # serve.py's page
    assert page and not page - names, sorted(page - names)
    for command in ("train", "infer", "export", "serve"):
        assert f"fer-{command} = fer.cli.{command}:main" in entry_points


@pytest.mark.xdist_group("wheel")  # its module-scoped wheel, made once, on one worker
@pytest.mark.slow
def test_the_installed_wheel_runs_inference_outside_the_checkout(wheel, tmp_path, real_faces):
    site, work = tmp_path / "site", tmp_path / "work"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel), "-q"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    work.mkdir()
    cv2.imwrite(str(work / "face.png"), real_faces[0][3])  # a Happy face, 48x48, as detect=false expects

    where = run_cli(
        ["-c", "import fer, fer.paths; print(fer.__file__); print(fer.paths.CONF_DIR)"], cwd=work, env=only_on_path(site)
    )
    assert where.stdout.split() == [str(site / "fer" / "__init__.py"), str(site / "fer" / "conf")], where.stdout + where.stderr

    # Hydra finds fer's Optuna sweeper in the installed package (hparams_search=optuna)
    discover = (
        "from hydra.core.plugins import Plugins; from hydra.plugins.sweeper import Sweeper; "
        "import hydra_plugins.fer_optuna as p; "
        "print(p.__file__, *(c.__module__ for c in Plugins.instance().discover(Sweeper)))"
    )
    found = run_cli(["-c", discover], cwd=work, env=only_on_path(site))
    assert found.stdout.split()[0] == str(site / "hydra_plugins" / "fer_optuna" / "__init__.py"), found.stdout + found.stderr
    assert "hydra_plugins.fer_optuna.sweeper" in found.stdout.split()[1:]

    # conf/infer.yaml's default model (fer/weights/...) is the installed package's file
    r = run_cli(["-m", "fer.infer", "source=face.png", "detect=false", "predictions=p.csv"], cwd=work, env=only_on_path(site))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = list(csv.DictReader((work / "p.csv").read_text().splitlines()))
    assert len(rows) == 1 and rows[0]["file"] == "face.png" and rows[0]["label"] in EMOTIONS
    assert sum(float(rows[0][c]) for c in EMOTIONS) == pytest.approx(1, abs=1e-3)

    # the console script pip wrote runs the same command
    r = run_cli(
        [str(site / "bin" / "fer-infer"), "source=face.png", "detect=false", "predictions=q.csv"],
        cwd=work,
        env=only_on_path(site),
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert [row["label"] for row in csv.DictReader((work / "q.csv").read_text().splitlines())] == [rows[0]["label"]]
    assert sorted(p.name for p in work.iterdir()) == ["face.png", "p.csv", "q.csv"]


@pytest.mark.slow
def test_ddp_workers_relaunch_python_m_fer_train(tiny_csv, tmp_path):
    # Lightning starts rank 1 with `python -m fer.train ...` (rank 0's __main__ module), from rank 0's directory.
    run_dir = tmp_path / "run"
    r = run_cli(
        [
            "-m",
            "fer.train",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            f"data.path={tiny_csv}",
            "data.batch_size=4",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            "eval_train_split=false",
            "calibrate=false",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        env={**only_on_path(ROOT), "MPLBACKEND": "Agg"},
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "rank 1 of 2:" in out and (run_dir / "train.log").exists() and (run_dir / "metrics.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tiny.csv"]  # nothing else in the working directory
