import os
import subprocess

import numpy as np
import torch
import pytest
from PIL import Image

from petalnet.cli import main
from petalnet.data.convert import convert
from petalnet.data.dataset import open_split
from petalnet.errors import PetalnetError

# folder name -> class index; by name, by index, with underscores
FOLDERS = {"daisy": 48, "common_tulip": 102, "67": 67}
COLOURS = {48: (240, 240, 240), 102: (230, 40, 90), 67: (110, 50, 180)}


@pytest.fixture
def image_tree(tmp_path):
    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for folder, label in FOLDERS.items():
        (root / folder / "sub").mkdir(parents=True)
        for i in range(10):
            w, h = int(rng.integers(60, 300)), int(rng.integers(60, 300))
            arr = np.clip(np.array(COLOURS[label]) + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)
            ext = ".png" if i % 3 == 0 else ".jpg"
            where = root / folder / ("sub" if i == 9 else "")
            Image.fromarray(arr).save(where / f"img{i}{ext}")
        (root / folder / "notes.txt").write_text("not an image")
    return root


def test_round_trip(image_tree, tmp_path):
    out = tmp_path / "out"
    written = convert(str(image_tree), str(out), 64, val_fraction=0.2, shard_size=8)
    assert set(written) == {"train", "val"}
    assert all(os.path.basename(p).endswith(".tfrec") for p in written["train"])
    train = open_split(str(out), "train")
    val = open_split(str(out), "val")
    assert train.image_size == 64 and len(train) == 24 and len(val) == 6
    for ds in (train, val):
        labels, ids = ds.metadata()
        assert all(len(i) == 9 and int(i, 16) >= 0 for i in ids)
        for i in range(len(ds)):
            img, label = ds[i]
            assert img.shape == (3, 64, 64)
            # the picture kept its class colour through resize and JPEG
            assert np.abs(img.float().mean((1, 2)).numpy() - COLOURS[label]).max() < 12
    # stratified: every class gives 2 of its 10 images to val
    assert sorted(val.metadata()[0].tolist()) == [48, 48, 67, 67, 102, 102]
    _, train_ids = train.metadata()
    assert len(set(train_ids) | set(val.metadata()[1])) == 30


def test_deterministic(image_tree, tmp_path):
    def files_of(out):
        convert(str(image_tree), str(out), 48, val_fraction=0.3, seed=5)
        base = os.path.join(out, "tfrecords-jpeg-48x48")
        return {os.path.relpath(os.path.join(d, f), base): open(os.path.join(d, f), "rb").read()
                for d, _, fs in os.walk(base) for f in fs}
    a, b = files_of(tmp_path / "a"), files_of(tmp_path / "b")
    assert a == b and set(a) == {"train/00-48x48-21.tfrec", "val/00-48x48-9.tfrec"}


def test_existing_output_needs_force(image_tree, tmp_path):
    out = tmp_path / "out"
    convert(str(image_tree), str(out), 32)
    with pytest.raises(PetalnetError, match="already exists: pass --force"):
        convert(str(image_tree), str(out), 32)
    convert(str(image_tree), str(out), 32, force=True)


def test_bad_inputs_leave_nothing(image_tree, tmp_path):
    (image_tree / "daisy" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "out"
    with pytest.raises(PetalnetError, match=r"broken.jpg: cannot read image"):
        convert(str(image_tree), str(out), 32)
    assert os.listdir(out) == []
    (image_tree / "daisy" / "broken.jpg").unlink()
    (image_tree / "not-a-flower").mkdir()
    with pytest.raises(PetalnetError, match="folder 'not-a-flower' is neither a class index"):
        convert(str(image_tree), str(out), 32)


def test_cli_convert(image_tree, tmp_path, capsys):
    assert main(["convert", str(image_tree), str(tmp_path / "o"), "--size", "40", "--val-fraction", "0.5"]) == 0
    assert "train: 1 file(s)" in capsys.readouterr().out
    assert main(["convert", str(image_tree), str(tmp_path / "o"), "--size", "40"]) == 1
    assert "already exists" in capsys.readouterr().err


TF_CHECK = """
import sys, tensorflow as tf
spec = {"image": tf.io.FixedLenFeature([], tf.string), "class": tf.io.FixedLenFeature([], tf.int64),
        "id": tf.io.FixedLenFeature([], tf.string)}
n = 0
for rec in tf.data.TFRecordDataset(sys.argv[1:]):
    ex = tf.io.parse_single_example(rec, spec)
    assert tf.image.decode_jpeg(ex["image"], channels=3).shape == (40, 40, 3)
    n += 1
print(n)
"""


@pytest.mark.skipif(not os.environ.get("PETALNET_TF_PYTHON"),
                    reason="set PETALNET_TF_PYTHON to a Python with TensorFlow to check files with tf.data")
def test_tensorflow_reads_converted_files(image_tree, tmp_path):
    written = convert(str(image_tree), str(tmp_path / "o"), 40)
    paths = written["train"] + written["val"]
    out = subprocess.run([os.environ["PETALNET_TF_PYTHON"], "-c", TF_CHECK, *paths],
                         capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "30"


def test_records_resized_keep_splits_ids_and_labels(val_copy, tmp_path, capsys):
    """`petalnet convert DATA OUT --size S` on TFRecords re-encodes every split at S."""
    assert main(["convert", os.path.dirname(val_copy), str(tmp_path / "out"), "--size", "64"]) == 0
    src = open_split(os.path.dirname(val_copy))
    dst = open_split(str(tmp_path / "out"))
    assert dst.image_size == 64 and len(dst) == len(src) == 261
    assert dst.metadata()[0].tolist() == src.metadata()[0].tolist()
    assert dst.metadata()[1] == src.metadata()[1]
    img, _ = dst[5]
    assert img.shape == (3, 64, 64)
    big = src[5][0].float().unsqueeze(0)
    small = torch.nn.functional.interpolate(big, size=(64, 64), mode="area")[0]
    assert (img.float() - small).abs().mean() < 12   # the same picture, smaller
