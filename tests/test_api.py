"""Issue 18, deliverable 3: the notebook API, driven as a notebook would: train -> evaluate -> predict ->
submission, callbacks at epoch end, and the README's API section run as written."""
import csv
import dataclasses
import json
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


def docs_api_code() -> str:
    """The python blocks of the docs' API page's notebook section (docs/api.md), the notebook's shell
    lines (``!pip``) left out."""
    with open(os.path.join(ROOT, "docs", "api.md")) as fh:
        text = fh.read()
    section = text.split("## A Kaggle notebook", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) >= 3
    return "\n".join(line for b in blocks for line in b.splitlines() if not line.startswith("!"))


def test_docs_api_notebook_runs(flowers, tmp_path, monkeypatch):
    """The docs' notebook, cell by cell, on the synthetic flowers: it writes the submission."""
    code = docs_api_code()
    assert re.search(r'^DATA = ".*"', code, re.M) and re.search(r"^OPTIONS = ", code, re.M)
    code = re.sub(r'^DATA = ".*"', f"DATA = {flowers!r}", code, flags=re.M)
    code = re.sub(r"^OPTIONS = .*", f"OPTIONS = dict(epochs=1, image_size=64, freeze_backbone=True, **{TINY!r})", code, flags=re.M)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/api.md", "exec"), {})
    assert os.path.isfile("submission.csv") and len(open("submission.csv").read().splitlines()) == 1 + 90


def test_the_api_and_the_cli_resolve_the_same_recipe(flowers, tmp_path, monkeypatch, capsys):
    """``petalnet.train(data, out)`` and ``petalnet train --data --out`` on the same machine: the same config.
    The machine is made a GPU one for the recipe choice, where ``auto`` is not the default recipe."""
    import petalnet.accel
    import petalnet.engine
    from petalnet.cli import main
    monkeypatch.setattr(petalnet.accel, "device_type", lambda accelerator="auto": "cuda")
    seen = []

    class Caught(Exception):
        pass

    def engine_train(cfg, resume=None, callbacks=(), started=None):
        seen.append(dataclasses.asdict(cfg))
        raise Caught
    monkeypatch.setattr(petalnet.engine, "train", engine_train)
    with pytest.raises(Caught):
        petalnet.train(flowers, tmp_path / "o")
    with pytest.raises(Caught):
        main(["train", "--data", flowers, "--out", str(tmp_path / "o")])
    api, cli = seen
    assert api == cli and api["recipe"] == "finetune" and api["freeze_backbone"] is False
    out = capsys.readouterr().out
    assert out.count("recipe finetune: the one for a GPU") == 2


RESUMED = dict(recipe="linear", model="resnet10t", pretrained=False, freeze_backbone=False, lr=3e-4, epochs=2,
               image_size=32, batch_size=16, precision="32", deterministic=True, workers=0, seed=1, quiet=True)
COMPARED = ("epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1")


def _history(run):
    return [{k: row[k] for k in COMPARED} for row in petalnet.load(run).history]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return synthetic_data(32, seed=0, root=str(tmp_path_factory.mktemp("syn32")))


@pytest.fixture(scope="module")
def uninterrupted(small, tmp_path_factory):
    run = petalnet.train(small, tmp_path_factory.mktemp("ref") / "run", **RESUMED)
    assert run.stopped is None and len(run.history) == 2
    return _history(run.path)


def _interrupt_after_first_epoch(row, history):
    """As a notebook's interrupt would: SIGINT, after epoch 1's writes (the engine saves where it is)."""
    import signal
    os.kill(os.getpid(), signal.SIGINT)


def test_a_stop_returns_the_run_and_resume_continues_it(small, tmp_path, uninterrupted, capsys):
    import shutil

    from petalnet.cli import main
    run = petalnet.train(small, tmp_path / "run", callbacks=[_interrupt_after_first_epoch], **RESUMED)
    assert isinstance(run, petalnet.Run) and "stopped by signal at epoch 2" in run.stopped
    assert [h["epoch"] for h in run.history] == [1] and "stopped" in repr(run)
    err = capsys.readouterr().err
    assert f"1 epoch(s) finished in {run.path}; continue with petalnet.load({run.path!r}).resume()" in err
    shutil.copytree(run.path, tmp_path / "copy")
    resumed = run.resume()
    assert resumed.stopped is None and _history(resumed.path) == uninterrupted
    assert main(["train", "--resume", str(tmp_path / "copy"), "--quiet"]) == 0
    assert _history(tmp_path / "copy") == uninterrupted


def test_a_killed_run_resumes_to_the_same_history_from_the_api_and_the_cli(small, tmp_path, uninterrupted):
    """A run killed (SIGKILL: nothing saved at the end) once its first epoch is written, resumed by
    ``petalnet.train(..., resume=True)`` and by ``petalnet train --resume``: the uninterrupted history."""
    import shutil

    from petalnet.cli import main
    code = ("import os, signal, sys, petalnet\n"
            f"petalnet.train({small!r}, {str(tmp_path / 'run')!r}, **{RESUMED!r},\n"
            "               callbacks=[lambda row, history: os.kill(os.getpid(), signal.SIGKILL)])\n")
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert len(_history(tmp_path / "run")) == 1 and not (tmp_path / "run" / "summary.json").exists()
    shutil.copytree(tmp_path / "run", tmp_path / "copy")
    run = petalnet.train(small, tmp_path / "run", resume=True, **RESUMED)   # the same call, resume=True
    assert run.stopped is None and _history(run.path) == uninterrupted
    assert main(["train", "--resume", str(tmp_path / "copy"), "--quiet"]) == 0
    assert _history(tmp_path / "copy") == uninterrupted


def test_a_resume_refuses_an_option_the_run_was_not_started_with(flowers, tmp_path, capsys):
    from petalnet.cli import main
    from petalnet.errors import OptionError
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"data": flowers, "epochs": 3, "precision": "32-true",
                                                 "recipe": "linear"}))
    for given, words in ((dict(epochs=5), "--epochs 5: "), (dict(recipe="tutorial"), "--recipe tutorial: "),
                         (dict(precision="bf16-mixed"), "--precision bf16-mixed: ")):
        with pytest.raises(OptionError, match=f"^{words}.* continues with the options it was started with"):
            petalnet.train(flowers, run, resume=True, **given)
    assert main(["train", "--resume", str(run), "--epochs", "5"]) == 2
    assert capsys.readouterr().err.startswith("petalnet: error: --epochs 5: ")
    assert sorted(os.listdir(run)) == ["config.json"]


def test_run_evaluate_and_predict_check_their_options_before_loading(tmp_path):
    from petalnet.errors import OptionError
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    r = petalnet.load(run)
    with pytest.raises(OptionError, match="^--tta sideways: choose none, flip, full"):
        r.evaluate("DATA", tta="sideways")
    with pytest.raises(OptionError, match="^--batch-size 0: must be at least 1"):
        r.predict("DATA", batch_size=0)
    with pytest.raises(OptionError, match="^--precision 16: choose auto, 32, bf16"):
        r.predict("DATA", precision="16")
