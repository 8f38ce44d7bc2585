"""Issue 18, deliverable 1: DATA laid out like the Kaggle download (several tfrecords-jpeg-SxS folders):
``--image-size S`` picks the stored folder S in inspect, train, evaluate and predict; a size not stored is
read from the nearest stored size above it (else the largest) with one line saying so."""
import json
import os

import pytest

from petalnet.cli import main
from petalnet.data.discovery import choose_size, discover
from petalnet.data.synthetic import synthetic_data

TINY = ["--recipe", "linear", "--model", "resnet10t", "--no-pretrained", "--epochs", "1", "--batch-size", "32",
        "--precision", "32", "--workers", "0", "--quiet"]


@pytest.fixture(scope="module")
def two_sizes(tmp_path_factory):
    """The synthetic flowers at 64 px plus a `petalnet convert`ed 96 px copy beside them."""
    root = synthetic_data(64, seed=0, root=str(tmp_path_factory.mktemp("two")))
    assert main(["convert", os.path.join(root, "tfrecords-jpeg-64x64"), root, "--size", "96"]) == 0
    assert sorted(os.listdir(root)) == ["tfrecords-jpeg-64x64", "tfrecords-jpeg-96x96"]
    return root


def test_choose_size():
    assert choose_size([192, 224, 331, 512], 224) == 224
    assert choose_size([192, 224, 331, 512], 256) == 331   # the nearest above: downsampled, never upsampled
    assert choose_size([192, 224, 331, 512], 128) == 192
    assert choose_size([192, 224], 600) == 224             # none above: the largest


def test_discover_notes_every_size_it_reads_instead(two_sizes, petals):
    assert discover(two_sizes, 96).image_size == 96 and not discover(two_sizes, 96).note
    src = discover(two_sizes, 80)
    assert src.image_size == 96 and src.stored_sizes == (64, 96)
    assert "no 80 px images (stored: 64, 96 px): reading the 96 px ones, resized to 80 px" in src.note
    picked = discover(two_sizes, None, default_size=224)
    assert picked.image_size == 96 and "reading tfrecords-jpeg-96x96" in picked.note
    single = discover(petals, 512)   # one stored size: never silently ignored
    assert single.image_size == 192 and "no 512 px images (stored: 192 px)" in single.note
    assert discover(petals, 192).note == ""


def test_inspect_train_evaluate_predict_on_two_sizes(two_sizes, tmp_path, capsys):
    assert main(["inspect", two_sizes, "--image-size", "96", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["image_size"] == 96
    assert main(["inspect", two_sizes, "--image-size", "80", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["image_size"] == 96 and "no 80 px images" in err and "reading the 96 px" in err

    resolved = {}
    for name, size in (("s64", ["--image-size", "64"]), ("s96", ["--image-size", "96"]), ("s128", ["--image-size", "128"]),
                       ("auto", [])):
        run = str(tmp_path / name)
        assert main(["train", "--data", two_sizes, "--out", run, *TINY, *size]) == 0
        with open(os.path.join(run, "config.json")) as fh:
            resolved[name] = json.load(fh)["resolved"]
        resolved[name]["said"] = capsys.readouterr().out
    assert (resolved["s64"]["data_image_size"], resolved["s64"]["image_size"]) == (64, 64)
    assert "resized" not in resolved["s64"]["said"]
    assert (resolved["s96"]["data_image_size"], resolved["s96"]["image_size"]) == (96, 96)   # each stored size
    assert "resized" not in resolved["s96"]["said"]
    assert (resolved["s128"]["data_image_size"], resolved["s128"]["image_size"]) == (96, 128)
    assert "no 128 px images (stored: 64, 96 px): reading the 96 px ones, resized to 128 px" in resolved["s128"]["said"]
    # no --image-size and no size in the recipe: the nearest stored size to 224 at or above it, else the largest
    assert (resolved["auto"]["data_image_size"], resolved["auto"]["image_size"]) == (96, 96)
    assert "reading tfrecords-jpeg-96x96" in resolved["auto"]["said"]

    run = str(tmp_path / "s64")
    assert main(["evaluate", run, "--data", two_sizes, "--json"]) == 0   # several stored: the model's 64
    out, err = capsys.readouterr()
    assert json.loads(out)["images"] == 120 and "px images" not in err
    assert main(["evaluate", run, "--data", two_sizes, "--image-size", "512", "--json"]) == 0
    assert "no 512 px images (stored: 64, 96 px): reading the 96 px ones, resized to 64 px (the model's size)" \
        in capsys.readouterr().err
    sub = tmp_path / "submission.csv"
    assert main(["predict", run, "--data", two_sizes, "--image-size", "96", "--output", str(sub)]) == 0
    assert len(sub.read_text().splitlines()) == 1 + 90
