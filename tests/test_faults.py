"""Faults (issue 30, first part): one writer per run folder, write failures as one line that leave the
replaced file intact, empty checkpoints named; each case checks the files that existed before are unchanged."""
import hashlib
import os
import subprocess
import sys

import pytest
import torch

from petalnet import checkpoint
from petalnet.cli import main
from petalnet.data.synthetic import synthetic_data
from petalnet.errors import PetalnetError
from petalnet.rundir import LOCK, writing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _digests(path) -> dict:
    return {os.path.relpath(os.path.join(d, f), path): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
            for d, _, fs in os.walk(path) for f in fs}


def test_a_second_writer_in_this_process_is_refused_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    with writing(str(run)):
        with pytest.raises(PetalnetError, match=rf"another petalnet process .*PID {os.getpid()}, started"):
            with writing(str(run)):
                pass
    with writing(str(run)):   # released when the block ends
        pass


def test_a_writer_in_another_process_holds_the_folder_until_it_dies(tmp_path):
    """Another process holding the folder: refused while it lives; a SIGKILL leaves no stale lock."""
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from petalnet.rundir import writing\n"
                               f"with writing({str(run)!r}):\n print('held', flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(PetalnetError, match=rf"PID {holder.pid}"):
            with writing(str(run)):
                pass
    finally:
        holder.kill()
        holder.wait()
    with writing(str(run)):
        pass


def test_two_trainings_into_one_folder_one_is_refused_before_writing(tmp_path, capsys):
    """The second ``train`` into a folder being written exits 1 with one line, having written nothing."""
    data = synthetic_data(32, seed=0, root=str(tmp_path / "syn"))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"mine": 1}')
    before = _digests(run)
    with writing(str(run)):
        code = main(["train", "--data", data, "--out", str(run), "--force", "--epochs", "1", "--model", "resnet10t",
                     "--no-pretrained", "--image-size", "32", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "another petalnet process is writing" in err[0], err
    assert {k: v for k, v in _digests(run).items() if k != LOCK} == before


def test_a_refused_train_leaves_a_foreign_folder_as_it_was(tmp_path, capsys):
    """``--force`` onto a folder petalnet did not write: refused, every file byte-identical, no lock file left."""
    data = synthetic_data(32, seed=0, root=str(tmp_path / "syn"))
    proj = tmp_path / "proj"
    (proj / "sub").mkdir(parents=True)
    (proj / "notes.md").write_text("mine")
    (proj / "sub" / "x.bin").write_bytes(b"\0\1")
    before = _digests(proj)
    code = main(["train", "--data", data, "--out", str(proj), "--force", "--epochs", "1", "--quiet"])
    assert code == 1 and "not a petalnet run folder" in capsys.readouterr().err
    assert _digests(proj) == before


def test_a_checkpoint_write_over_the_size_limit_is_one_line_and_keeps_the_old_file(tmp_path):
    """torch.save under a file-size limit (what a full disk looks like): one PetalnetError naming the file,
    the error and the free space; the checkpoint it would replace is unchanged and no temporary is left."""
    path = tmp_path / "last.pt"
    checkpoint.save({"w": torch.zeros(4)}, str(path))
    before = path.read_bytes()
    code = ("import resource, sys, torch\nfrom petalnet import checkpoint\nfrom petalnet.errors import PetalnetError\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))\n"
            f"try:\n checkpoint.save({{'w': torch.zeros(1_000_000)}}, {str(path)!r})\n"
            "except PetalnetError as e:\n print(e)\n sys.exit(3)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 3, done.stderr[-2000:]
    line = done.stdout.strip()
    assert line.startswith(f"{path}: could not be written (") and "MiB free there" in line and "\n" not in line
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["last.pt"]


def test_an_empty_checkpoint_is_named(tmp_path, capsys):
    zero = tmp_path / "zero.pt"
    zero.write_bytes(b"")
    with pytest.raises(PetalnetError, match=r"zero\.pt: an empty file \(0 bytes\)"):
        checkpoint.load(str(zero))
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff")
    assert main(["predict", str(zero), str(photo)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "zero.pt" in err[0], err


def test_a_run_with_a_corrupt_config_or_a_cut_history_line(tmp_path):
    """``petalnet.load``: a corrupt config.json is a PetalnetError naming it; a cut last line of
    history.jsonl is left out, a bad line before it named with its number."""
    import petalnet
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"model": "resnet10t", "da')
    with pytest.raises(PetalnetError, match=r"config\.json: not readable JSON"):
        petalnet.load(str(run))
    (run / "config.json").write_text('{"model": "resnet10t"}')
    (run / "history.jsonl").write_text('{"epoch": 1, "val_loss": 1.0}\n{"epoch": 2, "val_l')
    assert [r["epoch"] for r in petalnet.load(str(run)).history] == [1]
    (run / "history.jsonl").write_text('{"epoch": 1\n{"epoch": 2}\n')
    with pytest.raises(PetalnetError, match=r"history\.jsonl: line 1 is not a JSON record"):
        petalnet.load(str(run)).history


# ---------------------------------------------------------------- issue 30, second part

TINY = ["--epochs", "1", "--model", "resnet10t", "--no-pretrained", "--image-size", "32", "--precision", "32",
        "--workers", "0", "--batch-size", "64", "--quiet"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(data, run): the synthetic flowers at 32 px and one epoch of resnet10t on them."""
    root = tmp_path_factory.mktemp("faults")
    data = synthetic_data(32, seed=0, root=str(root / "syn"))
    assert main(["train", "--data", data, "--out", str(root / "run"), *TINY]) == 0
    return data, str(root / "run")


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_force_into_a_foreign_folder_with_a_config_and_checkpoints_is_refused(tmp_path, capsys):
    """The issue's case: a config.json petalnet did not write, checkpoints/x.ckpt and notes.md."""
    data = synthetic_data(32, seed=0, root=str(tmp_path / "syn"))
    proj = tmp_path / "proj"
    (proj / "checkpoints").mkdir(parents=True)
    (proj / "config.json").write_text('{"model": "bert-base", "epochs": 3}')
    (proj / "checkpoints" / "x.ckpt").write_bytes(b"weights")
    (proj / "notes.md").write_text("mine")
    before = _digests(proj)
    assert main(["train", "--data", data, "--out", str(proj), "--force", *TINY]) == 1
    assert f"{proj} is not a petalnet run folder" in _one_line(capsys)
    assert _digests(proj) == before


def test_force_on_a_run_folder_removes_only_what_petalnet_wrote(tmp_path):
    from petalnet.rundir import RunDir
    run = tmp_path / "run"
    for name in ("checkpoints", "eval-val"):
        (run / name).mkdir(parents=True)
    written = ["config.json", "history.jsonl", "summary.json", "curves.png", "lr.png", "checkpoints/best.pt",
               "checkpoints/last.pt", "checkpoints/last.pt.4242.tmp", "eval-val/metrics.json", "eval-val/confusion.png"]
    for name in written:
        (run / name).write_text("petalnet's")
    (run / "config.json").write_text('{"format": 1}')
    theirs = ["notes.md", "checkpoints/x.ckpt", "eval-val/mine.txt", "history.jsonl.bak"]
    for name in theirs:
        (run / name).write_text("theirs")
    before = _digests(run)
    RunDir(str(run)).prepare(True, [])
    assert _digests(run) == {k: v for k, v in before.items() if k in theirs}


@pytest.mark.parametrize("case", ["predict onto the checkpoint", "predict onto a data file", "predict onto config",
                                  "probs onto the output", "export onto the checkpoint", "report onto config",
                                  "compare into the run"])
def test_no_command_writes_onto_its_own_input(tiny, tmp_path, capsys, case):
    data, run = tiny
    record = sorted(os.path.join(d, f) for d, _, fs in os.walk(data) for f in fs if "test" in d)[0]
    best, config = os.path.join(run, "checkpoints", "best.pt"), os.path.join(run, "config.json")
    argv = {"predict onto the checkpoint": ["predict", run, "--data", data, "--output", best],
            "predict onto a data file": ["predict", run, "--data", data, "--output", record],
            "predict onto config": ["predict", run, "--data", data, "--output", config],
            "probs onto the output": ["predict", run, "--data", data, "--output", str(tmp_path / "s.csv"),
                                      "--probs", str(tmp_path / "s.csv")],
            "export onto the checkpoint": ["export", run, "--output", best],
            "report onto config": ["report", run, "--output", config],
            "compare into the run": ["compare", run, "--out", run]}[case]
    before_run, before_data = _digests(run), _digests(data)
    assert main(argv) == 2
    line = _one_line(capsys)
    assert any(w in line for w in ("one of this command's inputs", "one of those compared", "is also --output")), line
    assert _digests(run) == before_run and _digests(data) == before_data and not os.listdir(tmp_path)


def test_existing_paths_are_used_literally_whatever_characters_they_hold(tiny, tmp_path, capsys):
    """Data and run folders named with glob and shell characters: read and written as typed."""
    import shutil
    data, _ = tiny
    odd = tmp_path / "flowers [v1] *?"
    shutil.copytree(data, odd)
    out = tmp_path / "run [1] ü *"
    assert main(["train", "--data", str(odd), "--out", str(out), *TINY]) == 0
    assert (out / "checkpoints" / "best.pt").is_file() and not (tmp_path / "run").exists()
    before = _digests(tmp_path)
    assert main(["train", "--data", str(odd), "--out", str(out), *TINY]) == 1   # exists: refused, untouched
    after = _digests(tmp_path)
    lock = os.path.relpath(out / LOCK, tmp_path)   # the holder's PID and start time, rewritten by each writer
    assert "already exists" in _one_line(capsys) and after.pop(lock) and before.pop(lock) and after == before


def test_the_disk_too_small_for_the_checkpoints_is_refused_before_training(tmp_path, capsys, monkeypatch):
    import shutil
    data = synthetic_data(32, seed=0, root=str(tmp_path / "syn"))
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1_000_000))
    out = tmp_path / "run"
    assert main(["train", "--data", data, "--out", str(out), *TINY]) == 1
    line = _one_line(capsys)
    assert line.startswith(f"petalnet: error: {out}: the disk has 1,000,000 bytes free; this run's checkpoints "
                           "need about ") and "free some space" in line, line
    assert not out.exists()   # nothing written: no config.json, no lock, no folder


def test_an_unusable_home_does_not_stop_training(tiny, tmp_path):
    """HOME names a file: no folder can be made under it, which is what a read-only home is even to root
    (a missing one root just creates): train still writes the whole run folder (matplotlib's and torch's
    caches go elsewhere)."""
    data, _ = tiny
    path = tmp_path / "home"
    path.write_text("not a folder")
    env = {**os.environ, "PYTHONPATH": ROOT, "HOME": str(path)}
    env.pop("MPLCONFIGDIR", None)
    done = subprocess.run([sys.executable, "-m", "petalnet", "train", "--data", data, "--out", str(tmp_path / "run"),
                           *TINY], capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert {"config.json", "summary.json", "curves.png", "lr.png"} <= set(os.listdir(tmp_path / "run"))


def test_options_given_to_resume_apply_exactly_or_are_refused(tiny, capsys):
    data, run = tiny
    before = _digests(run)
    assert main(["train", "--resume", run, "--lr", "0.5", "--seed", "3", "--quiet"]) == 2
    line = _one_line(capsys)
    assert line.startswith("petalnet: error: --lr 0.5: ") and f"{run} continues with the options it was started with" in line
    assert _digests(run) == before
    # the options it was started with, typed again, and those a resumed run applies: accepted
    assert main(["train", "--resume", run, "--data", data, "--epochs", "1", "--workers", "0", "--quiet"]) == 0
