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
