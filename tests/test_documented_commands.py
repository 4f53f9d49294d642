"""Every `python train.py|infer.py|export.py ...` command the documentation shows runs as written.

The commands are read from README.md, docs/*.md (fenced blocks and inline code) and the comments
of conf/**/*.yaml, so a command added to the docs is tested without touching this file. Each runs
in a fresh folder of its own, with the defaults it shows, made small:
- train.py: a few batches of one epoch, no train-split evaluation, no calibration (SHRINK); a sweep
  keeps two jobs (two values of its first axis). Run dirs are the command's own (relative ones land
  in the folder) or Hydra's default under the folder. Commands that differ only in what shrinking
  replaces, the run dir or the progress bar are run once.
- infer.py: the webcam (source=0) becomes a short generated video; files, folders and checkpoints
  the command names are made where it names them (real FER2013 faces, a tiny trained model).
- export.py: the checkpoint it names is the tiny model.
Each runs as conftest.run_cli runs the project's scripts: in this process, except a DDP command (a process of its own).
A documented refusal says so in its comment (`# refused: exit 2`); every other command must exit 0.
Commands that cannot run here are in SKIP, with the reason, and those another test runs as written
(with more checks) in ELSEWHERE, with that test; known failures that other work fixes
are in XFAIL (strict=False: remove the entry once the fix lands).
"""

import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest
import torch

from conftest import ROOT, SHRINK, run_cli  # SHRINK: the tests' shrinking of a training run

pytestmark = pytest.mark.slow

SCRIPTS = ("train.py", "infer.py", "export.py")
# python train.py, or the same command installed: python -m fer.train, fer-train (run as train.py: tests/test_packaging.py
# shows the three forms are one)
COMMAND = re.compile(
    r"\bpython (?:train|infer|export)\.py\b|\bpython -m fer\.(?:train|infer|export)\b|\bfer-(?:train|infer|export)\b"
)
INSTALLED = re.compile(r"^(?:python -m fer\.|fer-)(train|infer|export)\b")
SWEEP_VALUES = 2  # a sweep's first axis keeps this many of its values
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}

# (pattern in the command, why it is not run here)
SKIP = [
    (r"hydra/launcher=slurm", "submits to a SLURM cluster"),
    *([] if torch.cuda.is_available() else [(r"trainer=gpu", "needs a CUDA GPU; runs where torch.cuda.is_available()")]),
    (r"trainer=ddp trainer\.devices=4", "4 GPUs of one machine (its CPU form, 2 processes, is run)"),
    (r"source=rtsp://", "needs a live network camera"),
    (
        r"callbacks=distill",
        (
            "the teachers' ten-crop pass over all 28,709 Training faces takes minutes: "
            "tests/test_distill.py::test_train_py_distils_with_the_default_model runs the command on a small csv"
        ),
    ),
    (
        r"hparams_search=optuna (model=|hydra/sweeper/sampler=|hydra/launcher=)",
        (
            "the same search with another model, sampler or launcher: the plain search is run, and tests/test_search.py "
            "composes the search space of every model and every sampler"
        ),
    ),
]
# (the whole command, the test that runs it as written, shrunk alike, and checks more than its exit code)
ELSEWHERE = [
    ("python train.py", "tests/conftest.py's tiny_run, which most tests share"),
    ("python train.py debug=smoke", "tests/test_training.py::test_debug_smoke_checks_the_whole_path_of_every_model[default]"),
    (
        "python train.py model=vgg debug=smoke",
        "tests/test_training.py::test_debug_smoke_checks_the_whole_path_of_every_model[vgg]",
    ),
    (
        "python train.py trainer=ddp trainer.devices=2",  # on a machine without a GPU, as trainer.accelerator=cpu
        "tests/test_scaling.py::test_ddp_on_two_cpu_processes_is_one_run_that_sees_each_face_once[default]",
    ),
]
XFAIL: list[tuple[str, str]] = []  # (pattern, why): a documented command known to fail, until its fix lands


@dataclass(frozen=True)
class Documented:
    where: str  # file:line of the first place that shows it
    script: str
    args: tuple[str, ...]
    exit_code: int = 0

    @property
    def text(self) -> str:
        return shlex.join(["python", self.script, *self.args])


# --- reading the docs ------------------------------------------------------------------------------
def _command_in(text: str) -> tuple[str, int] | None:
    """The command on one (joined) line of shell or comment -> (command text, expected exit code)."""
    m = COMMAND.search(text)
    if not m:
        return None
    command = text[m.start() :]
    comment = re.search(r"\s#\s.*$|\s#$", command)
    note = comment.group(0) if comment else ""
    command = command[: comment.start()] if comment else command
    command = re.split(r"\s(?:\d?>|&>|\|\s|&&|;)", command)[0].rstrip(" &")  # redirections, pipes, background
    exit_code = re.search(r"refused: exit (\d+)", note)
    return command.strip(), int(exit_code.group(1)) if exit_code else 0


def _synopsis_to_command(command: str) -> str:
    # A usage line (conf comments): optional [parts] left out, the first of a|b alternatives, no "...".
    command = re.sub(r"\s\[[^\]]*\]", "", command)
    words = [w.split("|")[0] if "|" in w and "://" not in w.split("|")[0] else w for w in command.split(" ")]
    return " ".join(w for w in words if w != "...")


def _markdown_lines(path: Path):
    fenced, pending, start = False, "", 0
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced, pending = not fenced, ""
            continue
        if fenced:
            start = start if pending else n
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            yield start, pending + line
            pending = ""
        else:
            for inline in re.findall(r"`([^`]*)`", line):
                yield n, inline


def _yaml_comment_lines(path: Path):
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if "#" in line:
            comment = line[line.index("#") + 1 :]
            spans = re.findall(r"`([^`]*)`", comment)  # a command quoted in prose, or the comment is one
            yield from ((n, span) for span in spans) if spans else [(n, comment)]


def documented_commands() -> list[Documented]:
    sources = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found, seen = [], set()
    for path in [*sources, *sorted((ROOT / "conf").rglob("*.yaml"))]:
        lines = _markdown_lines(path) if path.suffix == ".md" else _yaml_comment_lines(path)
        for n, line in lines:
            got = _command_in(line)
            if got is None:
                continue
            command, exit_code = got
            words = shlex.split(INSTALLED.sub(r"python \1.py", _synopsis_to_command(command)))
            key = _what_runs(words[1], tuple(words[2:])) + (exit_code,)
            if key not in seen:
                seen.add(key)
                found.append(Documented(f"{path.relative_to(ROOT)}:{n}", words[1], tuple(words[2:]), exit_code))
    return found


def _what_runs(script: str, args: tuple[str, ...]) -> tuple:
    # Two commands that differ only in what the shrinking replaces, where the run is written,
    # whether a progress bar shows or (on a machine without a GPU) trainer.accelerator=cpu run the same
    # code: the first one stands for both.
    if script != "train.py":
        return script, tuple(args)
    unseen = {*SHRINK, "hydra.run.dir", "hydra.sweep.dir", "trainer.enable_progress_bar"}
    if not torch.cuda.is_available():  # trainer.accelerator=auto picks the CPU: `=cpu` changes nothing here
        args = tuple(a for a in args if a != "trainer.accelerator=cpu")
    # Any run's last.ckpt is the tiny run here, and any other checkpoint the tiny model.
    kept = [
        a if not a.startswith("ckpt_path=") else "ckpt_path=" + ("RUN/last.ckpt" if a.endswith("last.ckpt") else "CKPT")
        for a in _sweep_shrunk(args)
        if a.split("=", 1)[0] not in unseen
    ]
    return script, tuple(sorted(kept))


def _sweep_shrunk(args: tuple[str, ...]) -> list[str]:
    # A sweep keeps two jobs: two values of its first axis, the first value of any other.
    if "-m" not in args and "--multirun" not in args:
        return list(args)
    kept, axes = [], 0
    for a in args:
        key, _, value = a.partition("=")
        if "," in value and not key.startswith("hydra."):
            axes += 1
            a = key + "=" + ",".join(value.split(",")[: SWEEP_VALUES if axes == 1 else 1])
        kept.append(a)
    return kept


def _marks(cmd: Documented):
    for command, where in ELSEWHERE:
        if cmd.text == command:
            return [pytest.mark.skip(reason=f"runs as {where}")]
    for pattern, why in SKIP:
        if re.search(pattern, cmd.text):
            return [pytest.mark.skip(reason=why)]
    return [pytest.mark.xfail(reason=why, strict=False) for pattern, why in XFAIL if re.search(pattern, cmd.text)][:1]


COMMANDS = documented_commands()


def test_the_docs_show_commands_of_every_entry_point():
    # The reader itself: if it found nothing (a changed fence style, say), every test below would pass vacuously.
    assert {c.script for c in COMMANDS} == set(SCRIPTS)
    assert len(COMMANDS) >= 20


# --- what the commands need -----------------------------------------------------------------------
# tiny_run, tiny_ckpt: the session's shared tiny run of the default model (conftest.py), never changed here
@pytest.fixture(scope="module")
def faces(fer2013):
    images, _ = fer2013.split("test")
    return images[:6]


@pytest.fixture(scope="module")
def own_faces(fer2013):
    """A user's labelled faces as my_faces/<Emotion>/*.png would hold them: 10 each of three classes."""
    from fer.data.labels import EMOTIONS

    images, labels = fer2013.split("test")
    return {EMOTIONS[c]: images[labels == c][:10] for c in (3, 4, 6)}


def _own_faces_folder(path: Path, own_faces):
    for name, images in own_faces.items():
        (path / name).mkdir(parents=True)
        for i, image in enumerate(images):
            cv2.imwrite(str(path / name / f"{i}.png"), image)


def _class_folders(path: Path, class_names: str, size: int, faces):
    """A data=folders set as docs/extending.md describes it: train/<class>/ and test/<class>/ pictures of `size` px."""
    names = _unquoted(class_names).strip("[]").split(",")
    for split, count in (("train", 12), ("test", 4)):
        for c, name in enumerate(names):
            (path / split / name.strip()).mkdir(parents=True)
            for i in range(count):
                cv2.imwrite(str(path / split / name.strip() / f"{i}.png"), cv2.resize(faces[(c + i) % len(faces)], (size, size)))


def _value(args, key: str) -> str | None:
    return next((a.split("=", 1)[1] for a in args if a.split("=", 1)[0].lstrip("+") == key), None)


def _video(path: Path, faces):
    from scenes import place_faces, write_video

    frames = [place_faces(faces[:2], [(40 + 4 * t, 120), (360, 140)])[0] for t in range(8)]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames, fps=10)


def _image(path: Path, faces, crop: bool = False):
    from scenes import place_faces

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), faces[0] if crop else place_faces(faces[:2], [(40, 120), (360, 140)])[0])


def _provide_source(spec: str, folder: Path, faces) -> str:
    """The source a command names, made in its folder; the webcam becomes a short video."""
    if spec.isdigit():
        _video(folder / "webcam.mp4", faces)
        return str(folder / "webcam.mp4")
    path = folder / _unquoted(spec)
    if path.exists():
        return spec
    suffix = Path(_unquoted(spec).rstrip("/")).suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        _video(path, faces)
    elif suffix in IMAGE_SUFFIXES:
        _image(path, faces)
    else:  # a folder of images; "crops" are 48x48 faces
        for i in range(3):
            _image(path / f"{i}.png", faces[i:], crop="crop" in spec)
    return spec


def _unquoted(value: str) -> str:
    # Hydra's quoting (source="'my video.mp4'" on the shell): the value is the quoted string.
    return value[1:-1] if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"" else value


def _provide_checkpoint(spec: str, folder: Path, tiny_run: Path, tiny_ckpt: Path, onnx_beside: bool):
    path = folder / _unquoted(spec)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    shipped = ROOT / _unquoted(spec)
    if shipped.is_file():  # a file of the project (the shipped model): the real one, where the command looks
        shutil.copy(shipped, path)
    elif path.name == "last.ckpt":  # a run to resume: the tiny run, copied where the command looks for it
        shutil.copytree(tiny_run, path.parent.parent, dirs_exist_ok=True)
    elif path.suffix == ".onnx":
        from fer.export import export_onnx

        export_onnx(shutil.copy(tiny_ckpt, path.with_suffix(".ckpt")), str(path))
    else:
        shutil.copy(tiny_ckpt, path)
    if onnx_beside and path.suffix == ".ckpt" and not path.with_suffix(".onnx").exists():
        from fer.export import export_onnx

        export_onnx(path)


def _shrunk_train_args(args: tuple[str, ...], resume: bool) -> list[str]:
    shrink = {**SHRINK, "trainer.max_epochs": "2"} if resume else SHRINK  # a resumed tiny run has done epoch 1
    kept = [a for a in _sweep_shrunk(args) if a.split("=", 1)[0] not in shrink]
    return kept + [f"{k}={v}" for k, v in shrink.items()]


def prepared(cmd: Documented, folder: Path, tiny_run: Path, tiny_ckpt: Path, faces, own_faces) -> list[str]:
    """The command's arguments, shrunk, with everything it reads made in `folder`."""
    args = list(cmd.args)
    data = _value(args, "data.path")
    if data and _value(args, "data") == "folders" and not (folder / _unquoted(data)).exists():  # another data set
        _class_folders(
            folder / _unquoted(data), _value(args, "data.class_names"), int(_value(args, "data.image_size") or 48), faces
        )
    elif data and not (folder / _unquoted(data)).exists():  # a folder of one's own faces (fine-tuning)
        _own_faces_folder(folder / _unquoted(data), own_faces)
    ckpt = _value(args, "ckpt_path")
    if ckpt and ckpt != "null":
        _provide_checkpoint(ckpt, folder, tiny_run, tiny_ckpt, onnx_beside=_value(args, "backend") == "onnx")
    if cmd.script == "train.py":
        resume = bool(ckpt) and _value(args, "train") != "false" and ckpt.endswith("last.ckpt")
        args = _shrunk_train_args(tuple(args), resume)
        if "hparams_search=optuna" in args:
            args.append("hydra.sweeper.n_trials=2")
    if cmd.script == "infer.py":
        source = _value(args, "source")
        if source is None:  # conf/infer.yaml's default: the webcam
            args.append("source=" + _provide_source("0", folder, faces))
        else:
            args = [a if a.split("=", 1)[0] != "source" else "source=" + _provide_source(source, folder, faces) for a in args]
    return args


@pytest.mark.parametrize("cmd", [pytest.param(c, id=f"{c.where} {c.text}"[:150], marks=_marks(c)) for c in COMMANDS])
def test_documented_command_runs(cmd, tiny_run, tiny_ckpt, faces, own_faces, fer2013_path, tmp_path):
    folder = tmp_path / "cwd"
    folder.mkdir()
    args = prepared(cmd, folder, tiny_run, tiny_ckpt, faces, own_faces)
    env = {
        "DISPLAY": "",
        "WAYLAND_DISPLAY": "",  # infer.py's display=auto: no window
        "FER2013_PATH": str(fer2013_path),
    }
    done = run_cli([str(ROOT / cmd.script), *args], cwd=folder, env=env)
    assert done.returncode == cmd.exit_code, f"{cmd.where}: {cmd.text}\nran: {shlex.join(args)}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr
    if cmd.exit_code == 0:
        check_what_it_wrote(cmd.script, args, folder)


# --- what the commands wrote ----------------------------------------------------------------------
def _path_in(folder: Path, value: str) -> Path:
    path = Path(_unquoted(value)).expanduser()
    return path if path.is_absolute() else folder / path


def check_what_it_wrote(script: str, args: list[str], folder: Path):
    """The files a command that exited 0 names exist and hold what it promises: a video with frames, an image,
    a predictions file with rows, a checkpoint that loads, an .onnx that loads."""
    if script == "infer.py":
        output, predictions = _value(args, "output"), _value(args, "predictions")
        if output and output != "null":
            _check_infer_output(_path_in(folder, output))
        if predictions and predictions != "null":
            _check_predictions(_path_in(folder, predictions))
    elif script == "export.py":
        output = _value(args, "output")
        onnx_file = _path_in(folder, output) if output else _path_in(folder, _value(args, "ckpt_path")).with_suffix(".onnx")
        _check_onnx(onnx_file)
    elif script == "train.py" and _value(args, "train") != "false" and not {"--cfg", "-c", "--help"} & set(args):
        runs = _path_in(folder, _value(args, "hydra.run.dir")) if _value(args, "hydra.run.dir") else folder
        best = sorted(runs.rglob("best-*.ckpt"))
        assert best, f"no best-*.ckpt under {runs}"
        for ckpt in best:
            _check_checkpoint(ckpt)


def _check_infer_output(path: Path):
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        video = cv2.VideoCapture(str(path))
        frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
        ok, frame = video.read()
        video.release()
        assert ok and frame is not None and frames > 0, f"{path}: no frames"
    elif suffix in IMAGE_SUFFIXES:
        image = cv2.imread(str(path))
        assert image is not None and image.size > 0, f"{path}: not an image"
    else:  # a folder of annotated images
        written = [p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
        assert written and all(cv2.imread(str(p)) is not None for p in written), f"{path}: no images"


def _check_predictions(path: Path):
    import csv
    import json

    from fer.data.labels import EMOTIONS

    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert rows and all(set(row["probs"]) == set(EMOTIONS) for row in rows), path
        probs = [list(row["probs"].values()) for row in rows]
    else:
        rows = list(csv.DictReader(path.open()))
        assert rows and all(row["label"] in EMOTIONS for row in rows), path
        probs = [[float(row[c]) for c in EMOTIONS] for row in rows]
    assert all(abs(sum(p) - 1) < 1e-3 for p in probs), f"{path}: probabilities that do not sum to 1"


def _check_onnx(path: Path):
    from fer.infer.onnx_backend import OnnxFaceClassifier

    classifier = OnnxFaceClassifier.from_file(path, threads=1)
    probs = classifier(_probe(classifier.image_size))
    assert probs.shape == (2, len(classifier.class_names)), path


def _probe(size: int):
    import numpy as np

    return np.random.default_rng(0).integers(0, 256, (2, size, size), dtype=np.uint8)


def _check_checkpoint(path: Path):
    from fer.runs.checkpoint import load_network

    net, meta = load_network(path)
    x = torch.zeros(1, 1, meta.input_size, meta.input_size)
    with torch.no_grad():
        assert net(x).shape == (1, len(meta.class_names)), path
