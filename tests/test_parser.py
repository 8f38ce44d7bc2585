"""Issue 27, deliverable 2: every command's options declared once (``options``, ``commands``,
``config.TrainConfig``): the parser generated from the declarations, the vocabularies spelled in one module,
every value checked at its declaration, for the command line and the Python API alike, before anything
is written."""
import argparse
import ast
import dataclasses
import os
import pathlib

import pytest
from PIL import Image

from petalnet import commands, options
from petalnet.cli import main
from petalnet.config import SCHEDULE_FIELDS, ScheduleOptions, TrainConfig
from petalnet.errors import OptionError
from petalnet.parser import COMMANDS, build_parser
from tests.conftest import PETALS, ROOT

PACKAGE = pathlib.Path(ROOT) / "petalnet"


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text())


def test_add_argument_only_where_the_parser_is_generated():
    calls = []
    for name, tree in _modules():
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.Module)):
                body = fn.body if isinstance(fn, ast.FunctionDef) else [n for n in fn.body
                                                                        if not isinstance(n, ast.FunctionDef)]
                for node in (n for b in body for n in ast.walk(b)):
                    if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
                        calls.append((name, getattr(fn, "name", "<module>")))
    assert calls and {c for c in calls} == {("parser.py", "add_options")}, calls


VOCABULARIES = {"precision": set(options.PRECISIONS) | set(options.INFERENCE_PRECISIONS) - {"auto"},
                "tta": set(options.TTA_MODES), "recipe": set(options.RECIPE_NAMES)}


def test_vocabularies_are_spelled_in_one_module():
    """No list, tuple, set or dict outside options.py holds two words of one vocabulary (as
    ``choices=["none", "flip", "full"]`` did in six places); recipes.RECIPES is checked against
    options.RECIPE_NAMES when it is imported."""
    found = []
    for name, tree in _modules():
        for node in ast.walk(tree):
            items = node.keys if isinstance(node, ast.Dict) else node.elts if isinstance(
                node, (ast.List, ast.Tuple, ast.Set)) else []
            words = {i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)}
            for vocab, known in VOCABULARIES.items():
                if len(words & known) >= 2 and name != "options.py" and not (name, vocab) == ("recipes.py", "recipe"):
                    found.append((name, node.lineno, vocab))
    assert not found
    from petalnet.recipes import RECIPES
    assert tuple(RECIPES) == options.RECIPE_NAMES


def _declared(classes) -> set[str]:
    names = set()
    for cls in classes:
        cls, exclude = cls if isinstance(cls, tuple) else (cls, ())
        names |= {f.name for f in dataclasses.fields(cls) if f.metadata.get("group")
                  and f.metadata["group"] not in exclude}
    return names


def test_each_commands_arguments_are_its_declarations():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {name for name, *_ in COMMANDS}
    for name, _, _, classes in COMMANDS:
        parsed = {a.dest for a in sub.choices[name]._actions if a.dest != "help"}
        assert parsed == _declared(classes), name


def test_schedule_takes_trains_options_as_declared():
    """schedule's eight training options are TrainConfig's fields: the same defaults, help and rules."""
    train = {f.name: f for f in dataclasses.fields(TrainConfig)}
    sched = {f.name: f for f in dataclasses.fields(ScheduleOptions)}
    for name in SCHEDULE_FIELDS:
        assert sched[name].default == train[name].default and sched[name].metadata["rules"] is \
            train[name].metadata["rules"] and sched[name].metadata["help"] == train[name].metadata["help"], name
    args = build_parser().parse_args(["schedule"])
    assert {k: getattr(args, k) for k in SCHEDULE_FIELDS} == {k: train[k].default for k in SCHEDULE_FIELDS}
    with pytest.raises(OptionError, match=r"^--lr-decay 2: must be at most 1$"):
        ScheduleOptions(lr_decay=2).check()
    with pytest.raises(OptionError, match=r"^--lr-decay 2: must be at most 1$"):
        TrainConfig(lr_decay=2).check()


def test_trains_choices_are_the_vocabularies():
    fields = {f.name: f.metadata["kw"].get("choices") for f in dataclasses.fields(TrainConfig)}
    assert fields["precision"] is options.TRAIN_PRECISIONS and fields["tta"] is options.TTA_MODES
    inference = {f.name: f.metadata["kw"].get("choices") for f in dataclasses.fields(commands.PredictOptions)}
    assert inference["precision"] is options.INFERENCE_PRECISIONS and inference["tta"] is options.TTA_MODES


def _images(root) -> str:
    for cls, shade in (("daisy", 40), ("common_tulip", 200)):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 30), (shade, i * 50, 90)).save(root / cls / f"{i}.jpg")
    return str(root)


def _snapshot(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in pathlib.Path(folder).rglob("*"))


@pytest.mark.parametrize("argv, flag", [
    (["convert", PETALS, "OUT", "--size", "64", "--val-fraction", "2"], "--val-fraction 2.0"),
    (["convert", PETALS, "OUT", "--size", "64", "--val-fraction", "0.3"], "--val-fraction 0.3"),   # TFRecords
    (["convert", "IMAGES", "OUT", "--size", "64", "--val-fraction", "2"], "--val-fraction 2.0"),
    (["inspect", PETALS, "--grid", "g.png", "--augment", "affine=nan"], "--augment affine=nan"),
    (["inspect", PETALS, "--grid", "g.png", "--augment", "affine=-1"], "--augment affine=-1"),
    (["inspect", PETALS, "--grid", "g.png", "--augment", "cutout=2,rrc=0.4"], "--augment cutout=2"),
    (["inspect", PETALS, "--image-size", "-5"], "--image-size -5"),
    (["demo", "--image-size", "-1"], "--image-size -1"),
    (["demo", "--epochs", "0", "--out", "OUT"], "--epochs 0"),
    (["train", "--data", PETALS, "--out", "OUT", "--recipe", "default", "--affine", "nan"], "--affine nan"),
    (["serve", "RUN", "--port", "0"], "--port 0"),
    (["schedule", "--lr-decay", "2", "--plot", "g.png"], "--lr-decay 2.0"),
])
def test_bad_values_exit_2_naming_the_option_writing_nothing(argv, flag, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [_images(tmp_path / "imgs") if a == "IMAGES" else a for a in argv]
    before = _snapshot(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"petalnet: error: {flag}") and "Traceback" not in err, err
    assert _snapshot(tmp_path) == before


def test_the_python_api_is_checked_by_the_same_declarations(tmp_path):
    from petalnet.data.convert import convert, convert_any
    from petalnet.data.summary import inspect
    from petalnet.demo import demo
    from petalnet.serve.app import serve
    images = _images(tmp_path / "imgs")
    before = _snapshot(tmp_path)
    for call, flag in ((lambda: convert_any(PETALS, str(tmp_path / "o"), 64, val_fraction=0.3), "--val-fraction"),
                       (lambda: convert(images, str(tmp_path / "o"), 64, quality=0), "--quality 0"),
                       (lambda: inspect(PETALS, grid=str(tmp_path / "g.png"), augment="affine=inf"), "--augment"),
                       (lambda: inspect(PETALS, image_size=0), "--image-size 0"),
                       (lambda: demo(str(tmp_path / "o"), image_size=8), "--image-size 8"),
                       (lambda: serve(str(tmp_path / "no-such-run"), max_batch=0), "--max-batch 0")):
        with pytest.raises(OptionError, match=f"^{flag}"):
            call()
    assert _snapshot(tmp_path) == before


def test_a_good_image_folder_converts_with_the_declared_default_fraction(tmp_path, capsys):
    images = _images(tmp_path / "imgs")
    assert main(["convert", images, str(tmp_path / "out"), "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert "train: 1 file(s)" in out and "val: 1 file(s)" in out   # round(3 x 0.2) -> at least 1 per class
    assert os.listdir(tmp_path / "out" / "tfrecords-jpeg-32x32" / "val") == ["00-32x32-2.tfrec"]
