import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from petalnet.cli import main
from tests.conftest import PETALS_192

README_TRAIN = {"5": 52, "11": 52, "22": 50, "47": 44, "48": 467, "49": 628, "51": 41, "53": 445, "67": 46,
                "68": 45, "73": 433, "102": 535}


def test_inspect_json_on_petals_mini(petals, capsys):
    assert main(["inspect", petals, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["image_size"] == 192
    assert {k: v["images"] for k, v in out["splits"].items()} == {"train": 2838, "val": 773, "test": 503}
    assert out["splits"]["train"]["classes"] == README_TRAIN
    assert out["splits"]["val"]["labeled"] is True and sum(out["splits"]["val"]["classes"].values()) == 773
    assert out["splits"]["test"]["labeled"] is False and "classes" not in out["splits"]["test"]


def test_inspect_text_verify_and_grid(petals, tmp_path, capsys):
    grid = tmp_path / "grid.png"
    assert main(["inspect", os.path.join(PETALS_192, "val"), "--verify", "--grid", str(grid)]) == 0
    out = capsys.readouterr().out
    assert "val: 773 images in 2 files, labelled" in out and "130" in out and "daisy" in out
    assert "verified 773 records: all checksums and images good" in out
    with Image.open(grid) as img:
        assert img.format == "PNG" and img.width > 600 and img.height > 400
        assert img.convert("L").getextrema()[1] - img.convert("L").getextrema()[0] > 200


def test_inspect_augment_grid(petals, tmp_path, capsys):
    grid = tmp_path / "aug.png"
    assert main(["inspect", os.path.join(PETALS_192, "val"), "--grid", str(grid), "--augment",
                 "affine=1,cutout=0.2"]) == 0
    with Image.open(grid) as img:
        assert img.format == "PNG" and img.width > 600 and img.height > 1000   # 6 rows of 4
    assert main(["inspect", os.path.join(PETALS_192, "val"), "--grid", str(grid), "--augment", "spin=3"]) == 2
    assert "unknown 'spin'" in capsys.readouterr().err   # a bad option: exit 2, as argparse's own


def _corrupt(path, offset):
    data = bytearray(open(path, "rb").read())
    data[offset] ^= 0xFF
    open(path, "wb").write(bytes(data))


def test_verify_fails_with_file_and_offset(val_copy, capsys):
    _corrupt(val_copy, 5000)
    assert main(["inspect", val_copy, "--verify"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("petalnet: error: ") and val_copy in err and "at byte offset 0" in err
    assert len(err.strip().splitlines()) == 1


def test_verify_skip_bad_lists_all(val_copy, capsys):
    _corrupt(val_copy, 5000)
    _corrupt(val_copy, 200_000)
    assert main(["inspect", val_copy, "--verify", "--skip-bad", "--json"]) == 1
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert len(out["verified"]["problems"]) == 3   # two bad records, and the count in the file name
    assert out["splits"]["val"]["images"] == 259
    assert "skipped 2 bad span(s)" in captured.err


def test_errors_are_one_line_and_nonzero(tmp_path):
    (tmp_path / "junk.tfrec").write_bytes(b"hello, not records")
    for args in (["inspect", str(tmp_path / "missing")], ["inspect", str(tmp_path)]):
        r = subprocess.run([sys.executable, "-m", "petalnet", *args], capture_output=True, text=True)
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "junk.tfrec at byte offset 0: not a TFRecord file" in r.stderr


def test_help_lists_subcommands():
    r = subprocess.run([sys.executable, "-m", "petalnet", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for cmd in ("demo", "inspect", "convert", "classes"):
        assert cmd in r.stdout


def test_demo_writes_run_folder(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--image-size", "64"]) == 0
    assert (out / "train_samples.png").stat().st_size > 10_000
    meta = json.loads((out / "data.json").read_text())
    assert meta["image_size"] == 64 and meta["splits"]["train"]["images"] == 480
    assert main(["demo", "--out", str(out), "--image-size", "64"]) == 1
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["classes"]])
def test_classes_listing(argv, capsys):
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 104 and lines[48].split(maxsplit=1) == ["48", "daisy"]


def test_light_imports():
    """The parser (every --help) needs no torch; predict and serve need no Lightning (~2 s each)."""
    code = ("import sys; from petalnet.cli import build_parser; build_parser(); a = 'torch' in sys.modules; "
            "import petalnet.predict, petalnet.serve.app; "
            "print(a, any(m.split('.')[0] in ('lightning', 'lightning_fabric') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_help_example_names_no_path_of_this_repository():
    r = subprocess.run([sys.executable, "-m", "petalnet", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "../shared" not in r.stdout and "petalnet inspect DATA --verify" in r.stdout


def test_error_after_fabric_starts_is_one_line_without_lightning_info(tmp_path):
    """bf16 autocast made Lightning log "Using bfloat16 Automatic Mixed Precision (AMP)" before the error."""
    r = subprocess.run([sys.executable, "-m", "petalnet", "train", "--data", str(tmp_path / "missing"), "--out",
                        str(tmp_path / "run"), "--recipe", "linear", "--precision", "bf16-mixed", "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr
    assert "Automatic Mixed Precision" not in r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and "missing" in r.stderr and "Traceback" not in r.stderr
