import gzip
import io
import os
import tarfile

import cv2
import numpy as np
import pytest

from fer.data.cache import load
from fer.data.reader import Fer2013, fer2013_settings, read_fer2013
from fer.errors import FerError

from conftest import random_rows, write_csv


def _check_tiny(data, n=14):
    assert data.images.shape == (3 * n, 48, 48) and data.images.dtype == np.uint8
    assert [int((data.splits == s).sum()) for s in range(3)] == [n, n, n]
    assert data.labels.tolist()[:7] == list(range(7))


def test_reads_csv_and_keeps_pixels_exact(tmp_path):
    rows = random_rows()
    data = read_fer2013(write_csv(tmp_path / "f.csv", rows))
    _check_tiny(data)
    assert np.array_equal(data.images[5].ravel(), rows[5][1])


def test_reads_csv_gz(tmp_path):
    plain = write_csv(tmp_path / "f.csv", random_rows())
    gz = tmp_path / "fer2013.csv.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    _check_tiny(read_fer2013(gz))


@pytest.mark.parametrize("tail", ["\n", "\n\n", "\r\n", "  \n"])
def test_blank_lines_at_the_end_are_no_rows(tmp_path, tail):
    # An editor or a shell redirect often leaves a blank last line: it is not a row of "0 columns".
    path = write_csv(tmp_path / "f.csv", random_rows())
    path.write_text(path.read_text() + tail)
    data = read_fer2013(path)
    _check_tiny(data)
    assert data.skipped == 0


def test_reads_the_challenge_tar_gz(tmp_path):
    plain = write_csv(tmp_path / "f.csv", random_rows())
    archive = tmp_path / "fer2013.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        readme = io.BytesIO(b"readme")
        info = tarfile.TarInfo("fer2013/README")
        info.size = 6
        tar.addfile(info, readme)
        tar.add(plain, arcname="fer2013/fer2013.csv")
    _check_tiny(read_fer2013(archive))


def _image_tree(root, names_by_split):
    rng = np.random.default_rng(0)
    for top, names in names_by_split.items():
        for cls in ("angry", "happy", "neutral"):
            d = root / top / cls
            d.mkdir(parents=True)
            for name in names:
                cv2.imwrite(str(d / name), rng.integers(0, 256, (48, 48), dtype=np.uint8))


def test_reads_image_folders_with_split_prefixes(tmp_path):
    _image_tree(
        tmp_path,
        {
            "train": [f"Training_{i}.jpg" for i in range(4)] + ["PublicTest_1.jpg", "PublicTest_2.jpg"],
            "test": ["PrivateTest_1.jpg", "PrivateTest_2.jpg"],
        },
    )
    data = read_fer2013(tmp_path)
    assert [int((data.splits == s).sum()) for s in range(3)] == [12, 6, 6]
    assert sorted(set(data.labels.tolist())) == [0, 3, 6]


def test_image_folders_without_prefixes_get_a_seeded_stratified_validation_split(tmp_path):
    _image_tree(tmp_path, {"train": [f"{i}.png" for i in range(10)], "test": ["a.png", "b.png"]})
    a, b = read_fer2013(tmp_path, val_fraction=0.2, seed=3), read_fer2013(tmp_path, val_fraction=0.2, seed=3)
    assert np.array_equal(a.splits, b.splits)
    val_labels = a.labels[a.splits == 1]
    assert np.bincount(val_labels, minlength=7)[[0, 3, 6]].tolist() == [2, 2, 2]  # 20% of each class
    assert int((a.splits == 2).sum()) == 6


BAD_ROWS = [
    ((0, "1 2 3", "Training"), "3 pixel values, expected 2304"),
    ((0, " ".join(["7"] * 2303 + ["1.5"]), "Training"), "pixel value '1.5' is not an integer"),
    ((0, " ".join(["7"] * 2303 + ["300"]), "Training"), "pixel value '300'"),
    ((9, " ".join(["7"] * 2304), "Training"), "label '9' is not one of 0..6"),
    ((2, " ".join(["7"] * 2304), "Train"), "Usage 'Train' is not one of"),
]


@pytest.mark.parametrize("bad_row,message", BAD_ROWS)
def test_bad_row_error_names_file_line_and_problem(tmp_path, bad_row, message):
    rows = random_rows()
    rows.insert(3, bad_row)
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(FerError) as e:
        read_fer2013(path)
    assert str(path) in str(e.value) and "line 5" in str(e.value) and message in str(e.value)


def test_bad_rows_skipped_and_counted_on_request(tmp_path):
    rows = random_rows()
    for bad_row, _ in BAD_ROWS:
        rows.insert(2, bad_row)
    data = read_fer2013(write_csv(tmp_path / "bad.csv", rows), on_bad_row="skip")
    assert data.skipped == len(BAD_ROWS)
    _check_tiny(data)


def test_truncated_gzip(tmp_path):
    blob = gzip.compress(write_csv(tmp_path / "f.csv", random_rows()).read_bytes())
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(blob[: len(blob) * 2 // 3])
    with pytest.raises(FerError, match="truncated or corrupt"):
        read_fer2013(cut)
    partial = read_fer2013(cut, on_bad_row="skip")
    assert 0 < len(partial.labels) < 42 and partial.skipped == 1


def test_missing_file_message_says_how_to_get_fer2013(tmp_path):
    with pytest.raises(FerError, match="not found.*Kaggle"):
        read_fer2013(tmp_path / "nope.csv")


def test_cache_reloads_and_notices_a_changed_file(tmp_path):
    path = write_csv(tmp_path / "f.csv", random_rows(seed=1))
    first = load(fer2013_settings(path), Fer2013())
    assert len(list(_cache_files())) >= 1
    again = load(fer2013_settings(path), Fer2013())
    assert np.array_equal(first.images, again.images)
    write_csv(path, random_rows(n_per_split=7, seed=2))
    os.utime(path, ns=(1, 1))  # a different mtime and size: a different key
    changed = load(fer2013_settings(path), Fer2013())
    assert len(changed.labels) == 21


def test_a_fer2013_files_parse_is_reused_for_any_seed(tmp_path, monkeypatch):
    # A FER2013 file's split is its Usage column: another seed (`seed=43`) must not parse 300 MB again.
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path / "cache"))
    path = write_csv(tmp_path / "f.csv", random_rows(seed=1))
    load(fer2013_settings(path, seed=42, val_fraction=0.1), Fer2013())
    load(fer2013_settings(path, seed=43, val_fraction=0.2), Fer2013())
    assert len(list(_cache_files())) == 1
    load(fer2013_settings(path, on_bad_row="skip"), Fer2013())  # what is read differs: a parse of its own
    assert len(list(_cache_files())) == 2


def _cache_files():
    from fer.data.cache import cache_dir

    return cache_dir().glob("fer2013-*.npz")


def test_full_fer2013_counts(fer2013):
    expected = {
        "train": [3995, 436, 4097, 7215, 4830, 3171, 4965],
        "val": [467, 56, 496, 895, 653, 415, 607],
        "test": [491, 55, 528, 879, 594, 416, 626],
    }
    for split, counts in expected.items():
        assert np.bincount(fer2013.split(split)[1], minlength=7).tolist() == counts


def test_default_name_finds_the_other_form_beside_it(tmp_path):
    plain = write_csv(tmp_path / "x.csv", random_rows())
    (tmp_path / "fer2013.csv.gz").write_bytes(gzip.compress(plain.read_bytes()))
    _check_tiny(read_fer2013(tmp_path / "fer2013.csv"))


def test_the_second_load_reads_the_cache_and_parses_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path / "cache"))  # this test's own cache: one file, its own
    path = write_csv(tmp_path / "f.csv", random_rows(seed=3))
    first = load(fer2013_settings(path), Fer2013())
    assert len(list(_cache_files())) == 1

    def no_parse(self, settings):
        raise AssertionError("parsed again: the cache was not read")

    monkeypatch.setattr(Fer2013, "read", no_parse)
    again = load(fer2013_settings(path), Fer2013())
    for name in ("images", "labels", "splits"):
        assert np.array_equal(getattr(first, name), getattr(again, name)), name
