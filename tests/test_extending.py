"""docs/extending.md, followed literally: in a scratch copy of the project, the code blocks it shows
(a model, a data set with a reader of its own, a face detector, a callback) are written where their
first line says, and nothing else is edited. The copy then trains the new model on the new data set
(`debug=smoke`), classifies a picture with the new detector, exports to ONNX, and passes its own
configs, models, detector and packaging tests, whose option lists come from conf/ and the registries."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

BLOCK = re.compile(r"```(?:python|yaml)\n# ((?:fer|conf)/\S+\.(?:py|yaml))\n(.*?)```", re.S)
TOP_LEFT_OUT = {"outputs", "multirun", "data", ".git", ".venv", "build", "dist"}  # run outputs, FER2013, the environment
EVERYWHERE_LEFT_OUT = shutil.ignore_patterns("__pycache__", ".pytest_cache", "*.egg-info")


def documented_files() -> dict[str, str]:
    """{path: content} of every code block in docs/extending.md that names its file on its first line."""
    return {path: f"# {path}\n{body}" for path, body in BLOCK.findall((ROOT / "docs" / "extending.md").read_text())}


@pytest.fixture(scope="module")
def extended(tmp_path_factory):
    copy = tmp_path_factory.mktemp("extended") / "project"
    shutil.copytree(ROOT, copy, ignore=_left_out)
    files = documented_files()
    for path, content in files.items():
        assert not (copy / path).exists(), f"extending.md shows {path} as a new file, but the project has one"
        (copy / path).write_text(content)
    return copy, files


def _left_out(folder, names):
    top = TOP_LEFT_OUT & set(names) if Path(folder) == ROOT else set()
    return top | EVERYWHERE_LEFT_OUT(folder, names)


def run(copy, *args, timeout=900):
    # A Python of its own, importing the copy's fer (never this checkout's).
    env = {**os.environ, "PYTHONPATH": str(copy), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, *args], cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)


def npz_faces(path, n_per_split=(24, 6, 6), size=48):
    """Three classes of generated faces (light, dark, striped) in the layout NpzFaces reads."""
    rng = np.random.default_rng(0)
    images, labels, splits = [], [], []
    for split, n in enumerate(n_per_split):
        for i in range(n):
            label = i % 3
            base = [200, 60, 128][label]
            picture = rng.normal(base, 20, (size, size))
            if label == 2:
                picture[::4] = 0
            images.append(np.clip(picture, 0, 255).astype(np.uint8))
            labels.append(label)
            splits.append(split)
    np.savez(path, images=np.stack(images), labels=np.array(labels), splits=np.array(splits))
    return path


def test_the_page_shows_one_python_file_and_one_yaml_for_each_addition():
    files = documented_files()
    assert {"fer/models/tiny.py", "conf/model/tiny.yaml"} <= set(files)
    assert {"fer/data/npz.py", "conf/data/npz.yaml"} <= set(files)
    assert {"fer/infer/centre.py", "conf/detector/centre.yaml"} <= set(files)


def test_a_new_model_data_set_and_detector_train_infer_and_export(extended, tmp_path):
    copy, _ = extended
    data = npz_faces(tmp_path / "faces.npz")
    run_dir = tmp_path / "run"
    r = run(
        copy,
        "train.py",
        "model=tiny",
        "data=npz",
        f"data.path={data}",
        "data.class_names=[light,dark,striped]",
        "data.image_size=48",
        "data.batch_size=8",
        "debug=smoke",
        f"hydra.run.dir={run_dir}",
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    best = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    assert (run_dir / "metrics.json").is_file()

    photo = np.full((240, 320, 3), 128, np.uint8)
    cv2.imwrite(str(tmp_path / "photo.png"), photo)
    r = run(
        copy,
        "infer.py",
        "detector=centre",
        f"ckpt_path={best}",
        "draw.uncertain_below=0",  # a model trained for a few batches is rarely sure; the label is what is checked
        f"source={tmp_path / 'photo.png'}",
        f"output={tmp_path / 'out.png'}",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "out.png").is_file()
    assert re.search(r"light|dark|striped", r.stdout + r.stderr), r.stdout[-2000:]

    r = run(copy, "export.py", f"ckpt_path={best}", f"output={tmp_path / 'tiny.onnx'}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "tiny.onnx").is_file()


def test_the_copys_own_tests_pass_with_the_additions(extended):
    copy, _ = extended
    tests = ["tests/test_configs.py", "tests/test_models.py", "tests/test_detector.py", "tests/test_packaging.py"]
    r = run(copy, "-m", "pytest", "-n", "0", "-q", "-p", "no:cacheprovider", "-m", "not slow", *tests, timeout=1500)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
