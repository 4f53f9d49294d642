"""export.py and infer.py backend=onnx: the exported model gives PyTorch's probabilities on real
FER2013 faces, infer.py writes the same predictions with either backend and imports no torch on
the ONNX path, and every bad model ends in one clear line."""

import csv
import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from fer.data.labels import EMOTIONS
from fer.errors import FerError
from fer.export import export_onnx
from fer.infer.classify import FaceClassifier
from fer.infer.detect import FaceDetector
from fer.infer.onnx_backend import MARKER, OnnxFaceClassifier
from fer.infer.retinaface import RetinaFaceDetector
from fer.runs.meta import ModelMeta

from conftest import run_cli
from scenes import background, detectable, drifting_faces, write_video

pytestmark = pytest.mark.xdist_group("exported")  # the module-scoped export, made once, on one worker


@pytest.fixture(scope="module")
def exported(random_checkpoint, tmp_path_factory):
    """(checkpoint, its export beside it) in a folder of their own."""
    folder = tmp_path_factory.mktemp("export")
    ckpt = shutil.copy(random_checkpoint, folder / "model.ckpt")
    path, _ = export_onnx(ckpt)
    return folder / "model.ckpt", path


@pytest.fixture(scope="module")
def backends(exported):
    ckpt, model = exported
    threads = torch.get_num_threads()  # from_checkpoint sets one thread; the tests after these get theirs back
    try:
        return FaceClassifier.from_checkpoint(ckpt, threads=1), OnnxFaceClassifier.from_file(model, threads=1)
    finally:
        torch.set_num_threads(threads)


# --- the exported model ---------------------------------------------------------------------------
def test_onnxruntime_gives_torchs_probabilities_on_real_faces(real_faces, backends):
    faces, _ = real_faces
    on_torch, on_onnx = backends
    together = on_onnx(faces)  # all faces in one batch: the batch axis is dynamic
    assert together.shape == (len(faces), len(EMOTIONS))
    assert np.abs(together - on_torch(faces)).max() < 1e-4
    one_by_one = np.concatenate([on_onnx(face[None]) for face in faces])
    assert np.abs(one_by_one - together).max() < 1e-5
    assert on_onnx(faces[:0]).shape == (0, len(EMOTIONS))


@pytest.fixture(scope="module")
def trained_export(fer2013, tmp_path_factory):
    """(checkpoint, its export, 128 real Training faces) of a small regularized network fitted to the first 64 of
    them for 30 steps: sure of its answers (an untrained network says about 1/7 to every class, so a wrong
    normalisation in the graph moves its probabilities by less than any tolerance notices) but not saturated
    (where every probability is 0 or 1, a shifted input changes nothing either)."""
    import torch.nn.functional as F

    from fer.preprocess import to_network_input
    from fer.train.module import EmotionClassifier

    from conftest import model_net

    images, labels = fer2013.split("train")
    faces, labels = images[:128], torch.from_numpy(labels[:64]).long()
    mean, std = float(faces.mean()) / 255, float(faces.std()) / 255
    small = {**model_net("regularized"), "widths": [8, 8, 16, 16, 16, 16, 32, 32], "hidden": [32, 32, 32], "dropout": 0.0}
    small["conv_dropout"] = [0.0] * 4  # no dropout: it learns its faces in a few dozen steps
    torch.manual_seed(0)
    model = EmotionClassifier(net=small, class_names=EMOTIONS, image_size=48, input_size=44)
    model.pixel_mean.fill_(mean)
    model.pixel_std.fill_(std)
    x = to_network_input(torch.from_numpy(faces[:64]), mean, std, model.input_size)  # (64, 1, 44, 44)
    optimizer = torch.optim.Adam(model.net.parameters(), lr=1e-2)
    model.net.train()
    for _ in range(30):
        optimizer.zero_grad()
        F.cross_entropy(model.net(x), labels).backward()
        optimizer.step()
    model.eval()
    folder = tmp_path_factory.mktemp("trained-export")
    ckpt = folder / "model.ckpt"
    face = {"align": True, "margin": 0.0, "gamma": "auto"}  # conf/preprocess/default.yaml, as training stores it
    torch.save({"fer": {**model.fer_meta(), "face": face}, "state_dict": model.state_dict()}, ckpt)
    path, _ = export_onnx(ckpt)
    return ckpt, path, faces


def test_a_trained_models_export_gives_torchs_probabilities_and_a_wrong_normalisation_would_show(trained_export):
    from fer.preprocess import to_network_input
    from fer.runs.checkpoint import load_network

    ckpt, path, faces = trained_export
    threads = torch.get_num_threads()
    try:
        expected = FaceClassifier.from_checkpoint(ckpt, threads=1)(faces)
    finally:
        torch.set_num_threads(threads)
    got = OnnxFaceClassifier.from_file(path, threads=1)(faces)
    assert expected.max(axis=1).mean() > 0.6  # sure of its answers, far from 1/7
    assert np.abs(got - expected).max() < 1e-5
    # The tolerance has teeth: the statistics off by 0.01 in the same network move a probability 100 times further.
    net, meta = load_network(ckpt)
    with torch.inference_mode():
        off = torch.softmax(net(to_network_input(torch.from_numpy(faces), meta.mean + 0.01, meta.std, meta.input_size)), 1)
    assert np.abs(off.numpy() - expected).max() > 1e-3


def test_the_model_carries_what_inference_needs(exported):
    from fer.runs.checkpoint import read_checkpoint

    ckpt, path = exported
    meta = read_checkpoint(ckpt)["fer"]
    model = onnx.load(path)
    props = {p.key: p.value for p in model.metadata_props}
    assert props[MARKER] == "1" and model.producer_name == "fer"
    expected = ModelMeta.from_dict(meta, ckpt).to_dict()  # the face settings under their name, from older checkpoints too
    for key in ("class_names", "mean", "std", "input_size", "face", "net", "image_size"):
        assert json.loads(props[key]) == expected[key], key
    [faces], [probs] = model.graph.input, model.graph.output
    assert [d.dim_param or d.dim_value for d in faces.type.tensor_type.shape.dim] == ["batch", 48, 48]
    assert [d.dim_param or d.dim_value for d in probs.type.tensor_type.shape.dim] == ["batch", len(EMOTIONS)]

    classifier = OnnxFaceClassifier.from_file(path)  # the ONNX backend reads all of it from the model alone
    assert classifier.class_names == meta["class_names"] and classifier.face == expected["face"]
    assert (classifier.mean, classifier.std, classifier.input_size) == (meta["mean"], meta["std"], meta["input_size"])
    assert classifier.image_size == expected["image_size"] == 48


def test_an_export_without_image_size_and_with_preprocess_settings_still_runs(exported, tmp_path):
    # Exports written before the data set came from the config: face settings under "preprocess", no image_size (48).
    _, path = exported
    old = onnx.load(path)
    props = {p.key: p.value for p in old.metadata_props}
    props["preprocess"] = props.pop("face")
    del props["image_size"]
    onnx.helper.set_model_props(old, props)
    onnx.save(old, tmp_path / "old.onnx")
    classifier = OnnxFaceClassifier.from_file(tmp_path / "old.onnx")
    assert classifier.image_size == 48 and classifier.face == json.loads(props["preprocess"])


def test_export_never_replaces_a_file_unless_asked(exported, tmp_path):
    ckpt, path = exported
    before = path.read_bytes()
    with pytest.raises(FerError, match="already exists.*overwrite=true"):
        export_onnx(ckpt)
    assert path.read_bytes() == before
    elsewhere, _ = export_onnx(ckpt, output=str(tmp_path / "deploy" / "fer.onnx"))
    assert elsewhere.read_bytes() == before  # the same model wherever it is written
    assert [p.name for p in elsewhere.parent.iterdir()] == ["fer.onnx"]  # no part-file left behind


# --- infer.py with either backend -------------------------------------------------------------------
# Runs infer.py as `python infer.py ARGS` would, then reports which torch modules were ever imported.
RUN_AND_LIST_TORCH = """
import runpy, sys
sys.argv = ["infer.py", *sys.argv[1:]]
try:
    runpy.run_path("infer.py", run_name="__main__")
finally:
    print("torch modules:", sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""


@pytest.fixture(scope="module")
def clip(fer2013, tmp_path_factory):
    """640x480 at 25 fps: six empty frames (a detection frame follows: detect_every=3), then two real faces drifting right."""
    images, _ = fer2013.split("test")
    # Faces both detectors find: Viola-Jones, and the default RetinaFace with a margin over its threshold.
    faces = detectable(detectable(images[:200], FaceDetector(), 12), RetinaFaceDetector(threshold=0.8), 2)
    frames, _ = drifting_faces(faces, 24, step=3)
    return write_video(tmp_path_factory.mktemp("clip") / "clip.avi", [background((640, 480))] * 6 + frames, fps=25)


def predictions(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_infer_gives_the_same_output_with_either_backend_and_onnx_imports_no_torch(exported, clip, tmp_path):
    ckpt, model = exported
    runs = {}
    for backend, path in (("torch", ckpt), ("onnx", model)):
        args = [
            f"source={clip}",
            f"ckpt_path={path}",
            f"backend={backend}",
            f"predictions={tmp_path / backend}.csv",
            "display=false",
        ]
        done = run_cli(["-c", RUN_AND_LIST_TORCH, *args])
        assert done.returncode == 0, done.stderr
        runs[backend] = done.stdout

    assert "torch modules: []" in runs["onnx"]
    assert "torch modules: []" not in runs["torch"]  # the check itself sees torch where it is used
    labels = [[line for line in runs[b].splitlines() if line.startswith("labels:")] for b in ("torch", "onnx")]
    assert labels[0] == labels[1] and len(labels[0]) == 1

    on_torch, on_onnx = predictions(tmp_path / "torch.csv"), predictions(tmp_path / "onnx.csv")
    assert len(on_torch) == len(on_onnx) == 2 * (24 - 1)  # each face shown from its second detection on
    for a, b in zip(on_torch, on_onnx):
        # Boxes, ids, frames and labels identical; probabilities are written with 5 decimals and the
        # two runtimes differ by ~3e-8, which can tip a last digit.
        assert {k: v for k, v in a.items() if k not in EMOTIONS} == {k: v for k, v in b.items() if k not in EMOTIONS}
        assert max(abs(float(a[e]) - float(b[e])) for e in EMOTIONS) <= 1.01e-5


def test_backend_onnx_uses_the_export_beside_a_checkpoint(exported, fer2013, tmp_path):
    ckpt, _ = exported
    images, _ = fer2013.split("test")
    import cv2

    cv2.imwrite(str(tmp_path / "face.png"), images[0])
    args = [f"source={tmp_path / 'face.png'}", f"ckpt_path={ckpt}", "backend=onnx", "detect=false", "display=false"]
    done = run_cli(["infer.py", *args])
    assert done.returncode == 0, done.stderr
    assert "1 image" in done.stdout and "1 face" in done.stdout


# --- bad models, through the command line -------------------------------------------------------------
def foreign_onnx(path):
    """A valid ONNX model that fer did not write: y = x."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 48, 48])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 48, 48])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def forged_onnx(model, path):
    """Another graph with a real export's metadata and shapes: the export minus its softmax (logits out)."""
    forged = onnx.load(model)
    softmax = next(n for n in forged.graph.node if n.op_type == "Softmax")
    softmax.op_type = "Identity"
    del softmax.attribute[:]
    onnx.save(forged, path)
    return path


def bad_models(tmp_path, exported):
    ckpt, model = exported
    (tmp_path / "text.onnx").write_text("hello\n")
    other = tmp_path / "other.ckpt"  # another model's checkpoint, with the first model's export beside it
    other.write_bytes(ckpt.read_bytes() + b" ")
    shutil.copy(model, tmp_path / "other.onnx")
    lonely = shutil.copy(ckpt, tmp_path / "lonely.ckpt")
    relabelled = onnx.load(model)
    for prop in relabelled.metadata_props:
        if prop.key == "class_names":
            prop.value = json.dumps(EMOTIONS[:5])  # a model of five classes, says the metadata; the graph has seven
    onnx.save(relabelled, tmp_path / "relabelled.onnx")
    return {
        "logits, not probabilities": (
            ["backend=onnx", f"ckpt_path={forged_onnx(model, tmp_path / 'forged.onnx')}"],
            "does not return probabilities",
        ),
        "not ours": (["backend=onnx", f"ckpt_path={foreign_onnx(tmp_path / 'foreign.onnx')}"], "not one exported by fer"),
        "not onnx": (["backend=onnx", f"ckpt_path={tmp_path / 'text.onnx'}"], "is not an ONNX model"),
        "another model": (["backend=onnx", f"ckpt_path={other}"], "was exported from another model than other.ckpt"),
        "graph and metadata differ": (
            ["backend=onnx", f"ckpt_path={tmp_path / 'relabelled.onnx'}"],
            "does not fit its fer metadata",
        ),
        "not exported yet": (["backend=onnx", f"ckpt_path={lonely}"], "export it first with `python export.py"),
        "missing model": (["backend=onnx", f"ckpt_path={tmp_path / 'nope.onnx'}"], "model not found"),
        "onnx on torch": ([f"ckpt_path={model}", "backend=torch"], "run it with backend=onnx"),
        "unknown backend": ([f"ckpt_path={model}", "backend=tensorrt"], "backend=tensorrt: must be one of auto, torch, onnx"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "logits, not probabilities",
        "not ours",
        "not onnx",
        "another model",
        "graph and metadata differ",
        "not exported yet",
        "missing model",
        "onnx on torch",
        "unknown backend",
    ],
)
def test_infer_refuses_a_bad_model_in_one_line(case, exported, tmp_path):
    args, message = bad_models(tmp_path, exported)[case]
    done = run_cli(["infer.py", "source=x.jpg", "display=false", *args])
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr


def test_export_cli_writes_beside_the_checkpoint_and_refuses_bad_input(random_checkpoint, tmp_path):
    ckpt = shutil.copy(random_checkpoint, tmp_path / "best.ckpt")
    done = run_cli(["export.py", f"ckpt_path={ckpt}"])
    assert done.returncode == 0, done.stderr
    assert f"wrote {tmp_path / 'best.onnx'}" in done.stdout and (tmp_path / "best.onnx").is_file()
    assert done.stderr == ""  # the exporter's own warnings are not the user's business

    (tmp_path / "notes.txt").write_text("hello\n")
    cases = {
        "exists": ([f"ckpt_path={ckpt}"], "already exists; choose another output= or pass overwrite=true"),
        "no checkpoint": ([], "pass ckpt_path="),
        "not a checkpoint": (
            [f"ckpt_path={tmp_path / 'notes.txt'}", f"output={tmp_path / 'n.onnx'}"],
            "is not a checkpoint this project wrote",
        ),
    }
    for name, (args, message) in cases.items():
        done = run_cli(["export.py", *args])
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and "Traceback" not in done.stderr + done.stdout, name
        assert len(lines) == 1 and message in lines[0], (name, done.stderr)


@pytest.mark.parametrize("case", ["missing", "onnx given", "output not .onnx", "opset"])
def test_export_refuses_bad_input(case, exported, tmp_path):
    ckpt, model = exported
    args, message = {
        "missing": ((tmp_path / "nope.ckpt",), "checkpoint not found"),
        "onnx given": ((model,), "is already an ONNX model"),
        "output not .onnx": ((ckpt, str(tmp_path / "model.pt")), "should end in .onnx"),
        "opset": ((ckpt, str(tmp_path / "m.onnx"), False, 7), "use 13..20"),
    }[case]
    with pytest.raises(FerError, match=message):
        export_onnx(*args)
    assert list(tmp_path.iterdir()) == []


class _Scripted:
    """A stand-in onnxruntime session that returns the rows it is given, whatever the faces."""

    def __init__(self, rows):
        self.rows = np.asarray(rows, dtype=np.float32)

    def get_inputs(self):
        return [type("Input", (), {"name": "faces"})()]

    def run(self, _outputs, _feeds):
        return [self.rows]


def _scripted_classifier(rows) -> OnnxFaceClassifier:
    return OnnxFaceClassifier(_Scripted(rows), EMOTIONS, 0.5, 0.25, 44, 48)


def test_every_row_the_onnx_backend_emits_is_a_probability_vector(caplog):
    faces = np.zeros((2, 48, 48), np.uint8)
    scaled = [[40, 60, 0, 0, 0, 0, 0], [0.2, 0.8, 0, 0, 0, 0, 0]]  # a graph that scales its outputs for some faces
    classifier = _scripted_classifier(scaled)
    with caplog.at_level("WARNING", logger="fer.infer"):
        probs = classifier(faces)
        classifier(faces)
    assert np.allclose(probs.sum(axis=1), 1) and np.allclose(probs[0, :2], [0.4, 0.6]) and np.allclose(probs[1, :2], [0.2, 0.8])
    assert sum("normalised" in r.message for r in caplog.records) == 1  # said once, not per frame
    for junk in ([[np.nan, 1, 0, 0, 0, 0, 0]], [[-3, 4, 0, 0, 0, 0, 0]]):
        with pytest.raises(FerError, match="not probabilities"):
            _scripted_classifier(junk)(faces[:1])
