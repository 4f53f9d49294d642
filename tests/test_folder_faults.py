"""Class folders as a user's own faces: a relabelled folder is a new parse, and unreadable folders or
pictures say so in one line."""

import os
import shutil

import cv2
import numpy as np
import pytest

from fer.data.cache import load
from fer.data.faceset import ReadSettings
from fer.data.folders import ClassFolders
from fer.errors import FerError

CLASSES = ("happy", "sad")


def _folders(root, per_class: int = 6):
    rng = np.random.default_rng(0)
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            cv2.imwrite(str(root / cls / f"{cls}{i}.png"), rng.integers(0, 256, (48, 48), dtype=np.uint8))
    return root


def _settings(root) -> ReadSettings:
    return ReadSettings(path=str(root), class_names=CLASSES, image_size=48, faces="whole")


def test_moving_pictures_to_another_class_folder_is_a_new_parse(tmp_path, monkeypatch):
    # `mv happy/* sad/` keeps the file count, sizes and mtimes: only the paths say the labels changed.
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path / "cache"))
    root = _folders(tmp_path / "my_faces")
    before = load(_settings(root), ClassFolders())
    assert np.bincount(before.labels).tolist() == [6, 6]
    for f in (root / "happy").iterdir():
        shutil.move(str(f), root / "sad" / f.name)  # keeps size and mtime
    after = load(_settings(root), ClassFolders())
    assert np.bincount(after.labels, minlength=2).tolist() == [0, 12]


def test_an_unchanged_folder_is_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path / "cache"))
    root = _folders(tmp_path / "my_faces")
    load(_settings(root), ClassFolders())
    monkeypatch.setattr(ClassFolders, "read", lambda self, s: pytest.fail("parsed again"))
    assert len(load(_settings(root), ClassFolders()).labels) == 12


def _refuse(monkeypatch, denied):
    """Reading `denied` raises PermissionError, as for a user without the rights (tests run as root: chmod stops nothing)."""
    scandir, real_open = os.scandir, open

    def guarded_scandir(path="."):
        if os.path.abspath(path) == str(denied):
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    def guarded_open(file, *args, **kwargs):
        if os.path.abspath(file) == str(denied):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", guarded_scandir)
    monkeypatch.setattr("builtins.open", guarded_open)
    if denied.is_file():  # OpenCV reads through C, not open(): it returns nothing, as for a file it may not read
        imread = cv2.imread
        monkeypatch.setattr(cv2, "imread", lambda f, *a: None if os.path.abspath(f) == str(denied) else imread(f, *a))


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("denied", ["sad", "sad/sad3.png", "."])
def test_an_unreadable_class_folder_or_picture_is_one_line(tmp_path, monkeypatch, denied, use_cache):
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path / "cache"))
    root = _folders(tmp_path / "my_faces")
    target = (root / denied).resolve()
    _refuse(monkeypatch, target)
    with pytest.raises(FerError, match=f"^permission denied: {target}$"):
        load(_settings(root), ClassFolders(), use_cache=use_cache)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads whatever chmod says")
def test_a_class_folder_without_read_permission_is_one_line(tmp_path):
    root = _folders(tmp_path / "my_faces")
    (root / "sad").chmod(0)
    try:
        with pytest.raises(FerError, match="permission denied: .*sad$"):
            load(_settings(root), ClassFolders(), use_cache=False)
    finally:
        (root / "sad").chmod(0o755)


@pytest.mark.parametrize("denied", ["faces/sub", "faces/sub/a.png", "b.png"])
def test_an_unreadable_source_for_inference_is_one_line(tmp_path, monkeypatch, denied):
    from fer.infer.sources import open_source

    (tmp_path / "faces" / "sub").mkdir(parents=True)
    for f in ("faces/sub/a.png", "b.png"):
        cv2.imwrite(str(tmp_path / f), np.zeros((48, 48), np.uint8))
    target = (tmp_path / denied).resolve()
    _refuse(monkeypatch, target)
    source = tmp_path / ("b.png" if denied == "b.png" else "faces")
    if denied == "faces/sub/a.png":  # one picture of a folder: skipped and named, as a damaged one is
        assert open_source(str(source)).paths == [target]
        return
    with pytest.raises(FerError, match=f"^permission denied: {target}$"):
        open_source(str(source))
