import os
import shutil

import pytest

from petalnet.data.discovery import count_from_name, discover
from petalnet.errors import PetalnetError
from tests.conftest import PETALS_192


def test_all_layouts(petals):
    layouts = [petals, PETALS_192]
    for data in layouts:
        src = discover(data)
        assert src.image_size == 192 and list(src.splits) == ["train", "val", "test"]
        assert [len(v) for v in src.splits.values()] == [6, 2, 1]
    one = discover(os.path.join(PETALS_192, "val"))
    assert list(one.splits) == ["val"] and one.image_size == 192 and one.size_from == "file names"
    globbed = discover(os.path.join(PETALS_192, "train", "0[0-2]-*.tfrec"))
    assert list(globbed.splits) == ["train"] and len(globbed.splits["train"]) == 3
    repeated = discover([os.path.join(PETALS_192, "val", "*.tfrec")] * 3)
    assert len(repeated.splits["val"]) == 6


def test_several_sizes_need_a_choice(tmp_path, petals):
    for size in (192, 224):
        d = tmp_path / f"tfrecords-jpeg-{size}x{size}" / "val"
        d.mkdir(parents=True)
        shutil.copy(os.path.join(PETALS_192, "val", "01-192x192-261.tfrec"), d / f"00-{size}x{size}-261.tfrec")
    with pytest.raises(PetalnetError, match=r"several image sizes \(192, 224\): choose one with --image-size"):
        discover(str(tmp_path))
    assert discover(str(tmp_path), 224).image_size == 224
    larger = discover(str(tmp_path), 331)   # not stored: the largest is read, and the note says so
    assert larger.image_size == 224 and "no 331 px images (stored: 192, 224 px)" in larger.note


def test_size_from_first_image_when_names_are_silent(tmp_path, petals):
    shutil.copy(os.path.join(PETALS_192, "val", "01-192x192-261.tfrec"), tmp_path / "flowers.tfrec")
    src = discover(str(tmp_path))
    assert src.image_size is None and list(src.splits) == [tmp_path.name]
    from petalnet.data.summary import open_splits, summarize
    assert summarize(src, open_splits(src))["image_size"] == 192


def test_bad_paths(tmp_path):
    with pytest.raises(PetalnetError, match="no such file or folder"):
        discover(str(tmp_path / "missing"))
    with pytest.raises(PetalnetError, match="no .tfrec files"):
        discover(str(tmp_path))
    with pytest.raises(PetalnetError, match="matches no record file"):
        discover(str(tmp_path / "*.tfrec"))
    with pytest.raises(PetalnetError, match="no 'train' split"):
        discover(os.path.join(PETALS_192, "val")).split("train")


def test_count_from_name():
    assert count_from_name("/x/03-512x512-231.tfrec") == 231
    assert count_from_name("flowers.tfrec") is None
