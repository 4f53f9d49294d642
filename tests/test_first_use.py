"""First-use details: checkpoint names count epochs as the log does, infer.py --help lists the groups
inference uses, the README's own export folder is not offered to git."""

import subprocess

import torch

from fer.runs.saving import RunCheckpoint

from conftest import ROOT, run_cli


def test_checkpoint_names_count_epochs_from_one_as_the_log_does(tmp_path):
    # the first epoch's best is "(epoch 1)" in the log and metrics.json's best_epoch: best-epoch01, not best-epoch00
    best = RunCheckpoint(dirpath=tmp_path, filename="best-epoch{epoch:02d}-acc{val/acc:.4f}", auto_insert_metric_name=False)
    name = best.format_checkpoint_name({"epoch": torch.tensor(0), "val/acc": torch.tensor(0.5)})
    assert name.endswith("best-epoch01-acc0.5000.ckpt")


def test_infer_help_lists_only_the_groups_inference_uses():
    r = run_cli(["infer.py", "--help"])
    assert r.returncode == 0, r.stderr[-2000:]
    groups = r.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    listed = dict(line.split(": ", 1) for line in groups.splitlines() if ": " in line)
    assert set(listed) == {"detector", "preprocess"}
    for group, options in listed.items():  # the hand-written list still names every option conf/ has
        assert options.split(", ") == sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml")), group
    assert "source:" in r.stdout and "trainer" not in r.stdout and "experiment" not in r.stdout


def test_the_readmes_export_folder_is_ignored_by_git(tmp_path):
    (ROOT / "deploy").mkdir(exist_ok=True)
    probe = ROOT / "deploy" / "fer.onnx"
    made = not probe.exists()
    try:
        probe.touch()
        r = subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=ROOT)
        assert r.returncode == 0, "deploy/ (README: export.py output=deploy/fer.onnx) is not in .gitignore"
    finally:
        if made:
            probe.unlink()
            if not any((ROOT / "deploy").iterdir()):
                (ROOT / "deploy").rmdir()
