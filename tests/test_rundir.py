"""The run folder (petalnet.rundir): --force never deletes data or foreign folders, a killed writer's
temporary files go, and a run killed at any point of its epoch-end writes resumes to files that agree
(issue 14, items 2, 4 and 14)."""
import json
import os
import shutil

import pytest
import torch

from petalnet import atomic
from petalnet.cli import main
from petalnet.config import TrainConfig
from petalnet.data.synthetic import synthetic_data
from petalnet.rundir import RunDir, overlaps
from petalnet.engine import train

TINY = dict(epochs=2, precision="32", workers=0, quiet=True, model="resnet10t", pretrained=False, lr=3e-3,
            image_size=32, batch_size=64, freeze_backbone=False)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return synthetic_data(32, seed=0, root=str(tmp_path_factory.mktemp("syn")))


def _tree(path):
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs)


@pytest.mark.parametrize("layout", ["out holds the data", "out is the data", "out inside the data"])
def test_force_never_deletes_the_data(synthetic, tmp_path, capsys, layout):
    proj = tmp_path / "proj"
    data = proj / "petals"
    shutil.copytree(synthetic, data)
    (proj / "notes.txt").write_text("mine")
    (proj / "config.json").write_text("{}")   # even when it also looks like a run folder
    (data / "config.json").write_text("{}")
    out = {"out holds the data": proj, "out is the data": data, "out inside the data": data / "runs"}[layout]
    os.makedirs(out, exist_ok=True)
    (out / "config.json").write_text("{}")
    before = _tree(proj)
    code = main(["train", "--data", str(data), "--out", str(out), "--force", "--recipe", "linear", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "overlap: --force would delete the input" in err and len(err.strip().splitlines()) == 1
    assert _tree(proj) == before


def test_overlaps_sees_globs_and_ignores_urls(tmp_path):
    assert overlaps(str(tmp_path / "d"), str(tmp_path / "d" / "*" / "train" / "*.tfrec"))
    assert overlaps(str(tmp_path), str(tmp_path / "d" / "x.tfrec"))
    assert not overlaps(str(tmp_path / "run"), str(tmp_path / "data"))
    assert not overlaps(str(tmp_path / "run"), "gs://bucket/run")


def test_open_removes_only_a_killed_writers_temporary_files(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    os.makedirs(tmp_path / "run" / "checkpoints")
    for name in ("history.jsonl.4242.tmp", "checkpoints/last.pt.17.tmp", "curves.png.9.tmp.png", "mine.tmp",
                 "history.jsonl"):
        (tmp_path / "run" / name).write_text("x")
    run.open()
    assert _tree(tmp_path / "run") == ["history.jsonl", "mine.tmp"]


def test_resume_before_the_first_checkpoint_starts_again(synthetic, tmp_path, capsys):
    """Killed before its first checkpoint, a run folder holds config.json only: --resume starts it again
    with that config (it used to say 'no such checkpoint', and the first command 'already exists')."""
    run = tmp_path / "run"
    run.mkdir()
    cfg = TrainConfig(data=synthetic, out=str(run), **TINY)
    (run / "config.json").write_text(json.dumps({**cfg.__dict__, "resolved": {}}))
    (run / "config.json.777.tmp").write_text("half")
    summary = train(TrainConfig(quiet=True), resume=str(run))
    assert summary["epochs"] == 2 and (run / "checkpoints" / "best.pt").is_file()
    assert "no checkpoint yet: starting it again" in capsys.readouterr().out
    assert not (run / "config.json.777.tmp").exists()


class _Killed(BaseException):
    """Stands for SIGKILL: nothing of petalnet's runs after it."""


@pytest.mark.parametrize("kill_at", [0, 1, 2])
def test_killed_between_epoch_end_writes_resumes_consistent(synthetic, tmp_path, monkeypatch, kill_at):
    """Kill the run at the first, second or third file replaced at the end of epoch 2 (of 3): after
    --resume, best.pt, history.jsonl and summary.json agree (they did not when last.pt was written
    before best.pt)."""
    run = tmp_path / "run"
    cfg = TrainConfig(data=synthetic, out=str(run), **{**TINY, "epochs": 3})
    replace, epoch_end_writes = atomic.os.replace, []

    def dying_replace(src, dst):
        if os.path.basename(dst) in ("best.pt", "history.jsonl", "last.pt"):
            epoch_end_writes.append(dst)
            if len(epoch_end_writes) == 3 + kill_at + 1:   # epoch 1 wrote all three (it is always the best)
                raise _Killed()
        return replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", dying_replace)
    with pytest.raises(_Killed):
        train(cfg)
    monkeypatch.setattr(atomic.os, "replace", replace)
    summary = train(TrainConfig(quiet=True), resume=str(run))
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    on_disk = json.loads((run / "summary.json").read_text())
    assert len(rows) == on_disk["epochs"] == summary["epochs"] == 3
    assert best["epoch"] == on_disk["best_epoch"]
    assert best["metrics"]["val_macro_f1"] == on_disk["best_val_macro_f1"] == max(r["val_macro_f1"] for r in rows)
    assert [r["epoch"] for r in rows] == [1, 2, 3]


def test_compare_and_report_name_what_an_unfinished_run_folder_lacks(tmp_path, capsys):
    """Both read a run folder through ``rundir.read_finished``: a missing or unreadable file is one line
    naming it, exit 1, before anything is written (no compare folder, no evaluation, no page)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    commands = (["compare", str(run), "--out", str(tmp_path / "cmp")], ["report", str(run)])
    for argv in commands:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{run}: no summary.json: not a finished petalnet run folder" in err, err
    (run / "summary.json").write_text("{oops")
    (run / "history.jsonl").write_text("")
    for argv in commands:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{run / 'summary.json'}: unreadable (" in err, err
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "history.jsonl", "summary.json"]
    assert not (tmp_path / "cmp").exists()
