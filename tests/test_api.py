"""Issue 18, deliverable 3: the notebook API, driven as a notebook would: train -> evaluate -> predict ->
submission, callbacks at epoch end, and the README's API section run as written."""
import csv
import dataclasses
import os
import re
import subprocess
import sys

import pytest

import petalnet
from petalnet.data.synthetic import synthetic_data
from tests.conftest import ROOT

TINY = dict(model="resnet10t", pretrained=False, batch_size=16, precision="32", workers=0, quiet=True)


@pytest.fixture(scope="module")
def flowers(tmp_path_factory):
    return synthetic_data(64, seed=0, root=str(tmp_path_factory.mktemp("syn")))


def test_notebook_train_evaluate_predict_submit(flowers, tmp_path):
    stop = petalnet.EarlyStopping(monitor="val_accuracy", patience=1, min_delta=2.0)   # no epoch can improve by 2
    log = tmp_path / "log.csv"
    seen = []
    run = petalnet.train(flowers, tmp_path / "run", recipe="linear", epochs=4, image_size=64,
                         callbacks=[stop, petalnet.CSVLogger(log), lambda row, history: seen.append(row["epoch"])],
                         **TINY)
    assert isinstance(run, petalnet.Run) and stop.stopped_epoch == 2 and seen == [1, 2]
    assert [h["epoch"] for h in run.history] == [1, 2] and run.summary["epochs"] == 2
    with open(log) as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["val_macro_f1"]) == pytest.approx(run.history[1]["val_macro_f1"])

    metrics = run.evaluate(split="val")   # the data it was trained on
    assert metrics["images"] == 120 and 0 <= metrics["macro_f1"] <= 1
    assert metrics["accuracy"] == pytest.approx(run.summary["best_val_accuracy"], abs=1.5 / 120)
    result = run.predict(flowers, split="test", output=str(tmp_path / "submission.csv"))
    with open(tmp_path / "submission.csv") as fh:
        sub = list(csv.reader(fh))
    assert sub[0] == ["id", "label"] and len(sub) == 1 + 90
    assert [int(r[1]) for r in sub[1:]] == result["labels"].tolist() and [r[0] for r in sub[1:]] == result["ids"]

    again = petalnet.load(str(tmp_path / "run"))
    assert again.history == run.history and again.summary == run.summary
    pd = pytest.importorskip("pandas")
    frame = again.history_frame()
    assert isinstance(frame, pd.DataFrame) and list(frame.index) == [1, 2]


def test_same_defaults_as_the_cli(flowers, tmp_path):
    """petalnet.train(recipe=R, **options) records the config `petalnet train --recipe R` would."""
    from petalnet.cli import _config_from_args
    from petalnet.parser import build_parser
    from petalnet.recipes import recipe_config
    args = build_parser().parse_args(["train", "--data", flowers, "--out", "o", "--recipe", "default", "--epochs", "2"])
    cli = dataclasses.asdict(_config_from_args(args, say=False))
    api = dataclasses.asdict(recipe_config("default", data=flowers, out="o", epochs=2))
    assert api == cli and cli["image_size"] == 224 and cli["unfreeze_from"] == 5   # the recipe's, not TrainConfig()'s


def test_import_stays_light_and_the_engine_module_still_imports():
    code = ("import sys, petalnet; light = 'torch' not in sys.modules; import petalnet.engine as t; "
            "from petalnet.engine import TrainConfig; print(light, callable(petalnet.train), hasattr(t, 'fit'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True", "True"]


def readme_api_code() -> str:
    """The README's API section's python blocks, the notebook's shell lines (``!pip``) left out."""
    with open(os.path.join(ROOT, "README.md")) as fh:
        text = fh.read()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) >= 3
    return "\n".join(line for b in blocks for line in b.splitlines() if not line.startswith("!"))


def test_readme_api_section_runs(flowers, tmp_path, monkeypatch):
    code = readme_api_code()
    assert re.search(r'^DATA = ".*"', code, re.M) and re.search(r"^OPTIONS = ", code, re.M)
    code = re.sub(r'^DATA = ".*"', f"DATA = {flowers!r}", code, flags=re.M)
    code = re.sub(r"^OPTIONS = .*", f"OPTIONS = dict(epochs=1, image_size=64, freeze_backbone=True, **{TINY!r})", code, flags=re.M)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert os.path.isfile("submission.csv") and len(open("submission.csv").read().splitlines()) == 1 + 90
