import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from petalnet.cli import main
from petalnet.data.synthetic import synthetic_data
from petalnet.errors import PetalnetError
from petalnet.schedules import Schedule
from petalnet.engine import TrainConfig, train
from tests.conftest import free_port

# fields of a history row that must repeat exactly; timings never do
COMPARED = ("epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return synthetic_data(64, seed=0, root=str(tmp_path_factory.mktemp("syn")))


def history(run):
    with open(os.path.join(run, "history.jsonl")) as fh:
        return [{k: row[k] for k in COMPARED} for row in map(json.loads, fh)]


def _cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "petalnet", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_loss_falls_and_run_folder_is_complete(synthetic, tmp_path):
    run = tmp_path / "run"
    summary = train(TrainConfig(data=synthetic, out=str(run), epochs=2, precision="32", workers=0, quiet=True))
    rows = history(run)
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    assert summary["best_val_macro_f1"] > 0.8
    for name in ("config.json", "history.jsonl", "summary.json", "checkpoints/last.pt", "checkpoints/best.pt",
                 "curves.png", "lr.png"):
        assert (run / name).is_file(), name
    for png in ("curves.png", "lr.png"):
        with Image.open(run / png) as img:
            assert img.format == "PNG" and img.width > 400 and img.height > 250
    s = json.loads((run / "summary.json").read_text())
    for key in ("model", "image_size", "epochs", "best_epoch", "best_val_macro_f1", "best_val_accuracy",
                "train_seconds", "train_images_per_second"):
        assert key in s
    assert s["image_size"] == 64 and s["epochs"] == 2
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["resolved"]["global_batch"] == 32 and cfg["resolved"]["peak_lr"] == pytest.approx(1e-3)
    assert cfg["resolved"]["cached_frozen_bottom"] is True   # head only: the backbone runs once per view
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=False)
    assert best["epoch"] == s["best_epoch"] and best["num_classes"] == 104


def test_same_seed_same_metrics(synthetic, tmp_path):
    runs = []
    for name in ("a", "b"):
        train(TrainConfig(data=synthetic, out=str(tmp_path / name), epochs=1, precision="32", workers=2,
                          quiet=True, seed=7, deterministic=True))
        runs.append(history(tmp_path / name))
    assert runs[0] == runs[1]


def test_existing_run_folder_is_not_overwritten(synthetic, tmp_path, capsys):
    """An existing folder is refused; --force replaces a run folder (removing only what petalnet wrote),
    never a folder that is not one (issue 14: --force deleted whatever --out named)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("precious")
    args = ["train", "--data", synthetic, "--out", str(run), "--epochs", "1", "--quiet", "--workers", "0",
            "--recipe", "linear", "--image-size", "64"]
    assert main(args) == 1
    assert "already exists: pass --resume" in capsys.readouterr().err
    assert (run / "keep.txt").read_text() == "precious"
    assert main(args + ["--force", "--max-steps", "2"]) == 1
    assert "is not a petalnet run folder" in capsys.readouterr().err
    assert (run / "keep.txt").read_text() == "precious"
    (run / "config.json").write_text("{}")   # a config.json petalnet did not write: still not a run folder
    assert main(args + ["--force", "--max-steps", "2"]) == 1
    assert "is not a petalnet run folder" in capsys.readouterr().err
    # a run folder written before config.json had "format": its petalnet files replaced, the user's kept
    (run / "config.json").write_text(json.dumps({"data": synthetic, "out": str(run), "model": "resnet10t",
                                                 "epochs": 9, "seed": 0, "resolved": {}}))
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.pt").write_bytes(b"old")
    (run / "checkpoints" / "mine.pt").write_bytes(b"mine")
    assert main(args + ["--force", "--max-steps", "2"]) == 0
    assert (run / "keep.txt").read_text() == "precious" and (run / "checkpoints" / "mine.pt").read_bytes() == b"mine"
    assert (run / "checkpoints" / "last.pt").read_bytes() != b"old"
    config = json.loads((run / "config.json").read_text())
    assert config["epochs"] == 1 and config["format"] == 1


@pytest.mark.parametrize("cached", [False, True])
def test_two_cpu_devices_match_one(synthetic, tmp_path, cached):
    """Read from the records, two DDP processes step through the same global batches as one process: the
    same numbers. With the frozen backbone cached, each rank shuffles the shard it cached, so the
    global batches differ: the same training, not the same numbers."""
    common = ["--recipe", "linear", "--data", synthetic, "--epochs", "2", "--lr", "1e-3", "--precision", "32", "--quiet",
              "--workers", "1", "--accelerator", "cpu", "--deterministic"] + ([] if cached else ["--no-cache-frozen"])
    one = _cli("train", "--out", tmp_path / "one", "--batch-size", 32, *common)
    two = _cli("train", "--out", tmp_path / "two", "--batch-size", 16, "--devices", 2, *common)
    for p in (one, two):
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    assert err.count("[rank ") == 2   # both DDP processes ran
    a, b = history(tmp_path / "one"), history(tmp_path / "two")
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra if not cached else ():
            assert ra[k] == pytest.approx(rb[k], rel=1e-4, abs=1e-6), k
    if cached:   # where the two trainings end up
        for k in ("val_accuracy", "val_macro_f1"):
            assert a[-1][k] == pytest.approx(b[-1][k], abs=0.05), k
        assert a[-1]["train_loss"] == pytest.approx(b[-1]["train_loss"], rel=0.1)
    cfg = json.loads((tmp_path / "two" / "config.json").read_text())
    assert cfg["resolved"]["world_size"] == 2 and cfg["resolved"]["global_batch"] == 32
    assert cfg["resolved"]["cached_frozen_bottom"] is cached


INTERRUPTED = ["--recipe", "linear", "--epochs", "3", "--fine-tune", "--lr", "3e-4", "--precision", "32", "--deterministic", "--quiet",
               "--workers", "0", "--batch-size", "16", "--seed", "1"]


@pytest.fixture(scope="module")
def uninterrupted(synthetic, tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    p = _cli("train", "--data", synthetic, "--out", run, *INTERRUPTED)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
    return history(run)


def _interrupt(synthetic, run, sig):
    p = _cli("train", "--data", synthetic, "--out", run, *INTERRUPTED)
    hist = os.path.join(run, "history.jsonl")
    deadline = time.time() + 240
    while not os.path.exists(hist) and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    time.sleep(1.5)   # into epoch 2 (an epoch takes about 4 s here)
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    return p.returncode, err


def _resume(run):
    p = _cli("train", "--resume", run, "--quiet")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]


def test_sigkill_then_resume_matches_uninterrupted(synthetic, tmp_path, uninterrupted):
    run = tmp_path / "run"
    code, _ = _interrupt(synthetic, run, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert len(history(run)) < 3
    assert not [f for f in os.listdir(run / "checkpoints") if f.endswith(".tmp")]
    _resume(run)
    _same(history(run), uninterrupted)


def test_sigterm_saves_position_and_resume_matches(synthetic, tmp_path, uninterrupted):
    run = tmp_path / "run"
    code, err = _interrupt(synthetic, run, signal.SIGTERM)
    assert code == 130 and "continue with: petalnet train --resume" in err and "Traceback" not in err
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert last["step"] > 0   # stopped inside an epoch, and saved where
    _resume(run)
    _same(history(run), uninterrupted)


def _same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        for k in COMPARED:
            assert g[k] == pytest.approx(w[k], rel=1e-9, abs=1e-12), (g["epoch"], k)
    return True


def test_two_torchrun_nodes_on_loopback(synthetic, tmp_path):
    port = free_port()
    procs = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
               "--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", str(port),
               "-m", "petalnet", "train", "--data", synthetic, "--out", str(tmp_path / "run"), "--epochs", "1",
               "--num-nodes", "2", "--accelerator", "cpu", "--precision", "32", "--quiet", "--workers", "0",
               "--recipe", "linear", "--image-size", "64"]   # about the launch: the cheapest recipe, the data's size
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    finals = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        finals += [line.split("] ", 1)[1] for line in err.splitlines() if line.startswith("[rank ")]
    assert len(finals) == 2 and finals[0] == finals[1]
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["resolved"]["world_size"] == 2


def test_competition_schedule_matches_tutorial_formula():
    replicas = 8
    start, peak, low, ramp, sustain, decay = 0.00001, 0.00005 * replicas, 0.00001, 5, 0, .8

    def lrfn(epoch):   # the tutorial's function
        if epoch < ramp:
            return (peak - start) / ramp * epoch + start
        elif epoch < ramp + sustain:
            return peak
        return (peak - low) * decay ** (epoch - ramp - sustain) + low
    from petalnet.optim import lr_schedule
    schedule = lr_schedule(TrainConfig(lr_schedule="competition", epochs=12), replicas)
    for epoch in (0, 1, 3, 5, 6, 9, 11):
        assert schedule(epoch) == pytest.approx(lrfn(epoch), rel=1e-12)
    cos = Schedule("cosine", 1e-3, 10, start=1e-5, min_lr=1e-5, rampup_epochs=1)
    assert cos(0) == pytest.approx(1e-5) and cos(1) == pytest.approx(1e-3) and cos(10) == pytest.approx(1e-5)
    assert cos(5.5) == pytest.approx((1e-3 + 1e-5) / 2)
    with pytest.raises(PetalnetError, match="unknown LR schedule"):
        Schedule("step", 1e-3, 3)


def test_schedule_command_plots(tmp_path, capsys):
    assert main(["schedule", "--lr-schedule", "competition", "--replicas", "8", "--plot", str(tmp_path / "lr.png")]) == 0
    out = capsys.readouterr().out
    assert "epoch   5: lr 4.000e-04" in out
    with Image.open(tmp_path / "lr.png") as img:
        assert img.format == "PNG" and img.width > 300


def test_nan_loss_stops_with_clear_message(synthetic, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--data", synthetic, "--out", str(run), "--epochs", "2", "--optimizer", "sgd",
                 "--lr", "1e12", "--lr-schedule", "constant", "--label-smoothing", "0", "--quiet", "--workers", "0",
                 "--recipe", "linear",
                 "--precision", "32"])
    assert code == 1
    assert "training loss became NaN/inf at epoch 1" in capsys.readouterr().err
    assert not (run / "checkpoints" / "last.pt").exists()   # nothing written from a diverged model


def test_freeze_epochs_trains_head_then_everything(synthetic, tmp_path):
    from petalnet.models import create_model
    start, _ = create_model("tf_efficientnet_lite0", 104)
    run = tmp_path / "run"
    train(TrainConfig(data=synthetic, out=str(run), epochs=2, freeze_epochs=1, precision="32", workers=0,
                      quiet=True, max_steps=18))   # epoch 1 (15 steps) frozen, 3 steps of epoch 2 unfrozen
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=False)   # after the frozen epoch
    stem = start.state_dict()["conv_stem.weight"]
    assert torch.equal(best["model"]["conv_stem.weight"], stem)
    assert not torch.equal(last["model"]["conv_stem.weight"], stem)
    assert last["epoch"] == 1 and last["step"] == 3


def test_partial_fine_tune_cached_matches_uncached(synthetic, tmp_path):
    """--unfreeze-from: stem and early stages stay exactly as loaded; training from the cached bottom
    gives the same model as running the bottom every step (same flips, same order), to rounding: on
    CPU the cache comes from the prepared (folded) copy, ~1e-6 apart, which the steps grow to ~1 %."""
    from petalnet.models import create_model
    base = dict(data=synthetic, epochs=1, precision="32", workers=0, quiet=True, unfreeze_from=5,
                head_lr_scale=3.0, lr=1e-3, tta="flip", max_steps=None)
    cached = train(TrainConfig(out=str(tmp_path / "cached"), **base))
    plain = train(TrainConfig(out=str(tmp_path / "plain"), cache_frozen=False, **base))
    cfg = json.loads((tmp_path / "cached" / "config.json").read_text())
    assert cfg["resolved"]["cached_frozen_bottom"] is True
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["resolved"]["cached_frozen_bottom"] is False
    a = torch.load(tmp_path / "cached" / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "plain" / "checkpoints" / "last.pt", weights_only=False)
    start, _ = create_model("tf_efficientnet_lite0", 104)
    moved = differ = 0.0
    for k, v in start.state_dict().items():
        if k.startswith(("conv_stem", "bn1", "blocks.0", "blocks.4")):
            assert torch.equal(a["model"][k], v), k          # frozen part untouched (BN statistics too)
        if k.startswith(("blocks.5", "blocks.6", "conv_head", "classifier")) and v.is_floating_point():
            assert not torch.equal(a["model"][k], v), k      # trained part moved
            moved += (a["model"][k] - v).abs().sum().item()
            differ += (a["model"][k] - b["model"][k]).abs().sum().item()
    assert differ < 0.05 * moved   # the same training: other flips or another order move it differently
    assert cached["best_val_macro_f1"] == pytest.approx(plain["best_val_macro_f1"], abs=0.02)
    assert a["tta"] == "flip"
    groups = a["optimizer"]["param_groups"]
    assert [g["lr_scale"] for g in groups] == [1.0, 3.0]


def test_head_only_cached_backbone_trains_like_running_it(synthetic, tmp_path):
    """A whole frozen backbone cached once per image and mirror (any timm model: resnet here) trains the
    same head as running it every step (there, on CPU, from the prepared copy)."""
    base = dict(data=synthetic, epochs=2, precision="32", workers=0, quiet=True, model="resnet10t",
                pretrained=False, lr=1e-3)
    cached = train(TrainConfig(out=str(tmp_path / "cached"), **base))
    plain = train(TrainConfig(out=str(tmp_path / "plain"), cache_frozen=False, **base))
    resolved = {r: json.loads((tmp_path / r / "config.json").read_text())["resolved"] for r in ("cached", "plain")}
    assert resolved["cached"]["cached_frozen_bottom"] and not resolved["cached"]["prepared_frozen_backbone"]
    assert resolved["plain"]["prepared_frozen_backbone"] and not resolved["plain"]["cached_frozen_bottom"]
    a = torch.load(tmp_path / "cached" / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "plain" / "checkpoints" / "last.pt", weights_only=False)["model"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-4, atol=1e-5), k
    rows = list(zip(history(tmp_path / "cached"), history(tmp_path / "plain")))
    assert len(rows) == 2 and all(ra == pytest.approx(rb, rel=1e-4) for ra, rb in rows)
    assert cached["best_val_macro_f1"] == pytest.approx(plain["best_val_macro_f1"])


def test_recipes_and_explicit_options(tmp_path):
    from petalnet.cli import _config_from_args, build_parser
    parse = build_parser().parse_args
    d = _config_from_args(parse(["train", "--data", "D", "--out", "O"]))
    assert (d.recipe, d.model, d.unfreeze_from, d.image_size, d.tta) == ("default", "tf_efficientnet_lite0", 5, 224, "flip")
    t = _config_from_args(parse(["train", "--recipe", "tutorial", "--model", "tf_efficientnet_lite0", "--epochs", "3"]))
    assert (t.model, t.optimizer, t.lr_schedule, t.epochs, t.batch_size, t.freeze_backbone, t.unfreeze_from) == \
        ("tf_efficientnet_lite0", "adam", "competition", 3, 16, True, None)
    f = _config_from_args(parse(["train", "--fine-tune", "--affine", "0.5"]))
    assert f.unfreeze_from is None and not f.freeze_backbone and f.affine == 0.5 and f.recipe == "default"
    with pytest.raises(SystemExit):
        parse(["train", "--recipe", "nope"])


def test_train_on_val_and_augmentations_run(synthetic, tmp_path):
    """--train-on-val trains on both splits (no validation); augmentations and MixUp/CutMix train."""
    s = train(TrainConfig(data=synthetic, out=str(tmp_path / "r"), epochs=1, precision="32", workers=0, quiet=True,
                          train_on_val=True, affine=1.0, color=0.2, cutout=0.2, mixup=0.2, cutmix=1.0,
                          freeze_backbone=True))
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())["resolved"]
    from petalnet.data.dataset import open_split
    assert cfg["train_images"] == len(open_split(synthetic, "train")) + len(open_split(synthetic, "val"))
    assert cfg["val_images"] == 0 and s["best_val_macro_f1"] is None and math.isfinite(s["final"]["train_loss"])
    with pytest.raises(PetalnetError, match="--unfreeze-from works with timm's EfficientNet"):
        train(TrainConfig(data=synthetic, out=str(tmp_path / "v"), model="resnet18", pretrained=False,
                          unfreeze_from=2, workers=0, quiet=True))


def test_compile_trains_the_same_model(synthetic, tmp_path):
    """--compile (torch.compile; inductor on a CPU): the same steps give the same weights as eager, up
    to float rounding, and the checkpoint holds the model's own parameter names (no compile wrapper)."""
    from petalnet.models import create_model
    base = dict(data=synthetic, model="resnet10t", pretrained=False, freeze_backbone=False, optimizer="sgd",
                lr=0.05, epochs=1, precision="32", workers=0, quiet=True, max_steps=4, seed=3)
    train(TrainConfig(out=str(tmp_path / "eager"), **base))
    train(TrainConfig(out=str(tmp_path / "compiled"), compile=True, **base))
    a = torch.load(tmp_path / "eager" / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "compiled" / "checkpoints" / "last.pt", weights_only=False)["model"]
    torch.manual_seed(3)   # train seeds, then creates the model: the same initial weights
    start = create_model("resnet10t", 104, pretrained=False)[0].state_dict()
    assert list(b) == list(a) == list(start)
    keys = [k for k, v in a.items() if v.is_floating_point()]
    flat = lambda sd: torch.cat([sd[k].flatten().double() for k in keys])   # noqa: E731
    trained, rounding = (flat(a) - flat(start)).norm(), (flat(b) - flat(a)).norm()
    assert 0.1 < trained < 0.5 * flat(start).norm()   # moved by the steps, from the same start
    assert rounding < 1e-2 * trained, (trained, rounding)


def test_cpu_loader_thread_flips_like_the_step(synthetic, tmp_path):
    """On a CPU the default loader thread mirrors images while decoding them; with --workers the step
    mirrors them. Same coins (sample, epoch, seed), so the same model, across an epoch boundary."""
    base = dict(data=synthetic, epochs=2, precision="32", quiet=True, max_steps=18, seed=4, lr=1e-2)
    train(TrainConfig(out=str(tmp_path / "thread"), workers=None, **base))
    train(TrainConfig(out=str(tmp_path / "inline"), workers=0, **base))
    a = torch.load(tmp_path / "thread" / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "inline" / "checkpoints" / "last.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 1 and a["step"] == 3
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, msg=k)
    assert history(tmp_path / "thread") == history(tmp_path / "inline")


def _run_on_a_terminal(args, watch, timeout=600):
    """Run ``petalnet ARGS`` with stdout and stderr on a pseudo-terminal: (return code, text, the longest
    silence in seconds from start to exit, whether ``watch()`` held when the text first said 'caching')."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))   # a new pty has 0 columns
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, "-m", "petalnet", *map(str, args)], stdin=subprocess.DEVNULL,
                         stdout=slave, stderr=slave)
    os.close(slave)
    stamps, text, seen_caching = [0.0], "", None
    while time.monotonic() - t0 < timeout:
        if select.select([master], [], [], 0.5)[0]:
            try:
                data = os.read(master, 65536)
            except OSError:   # EIO: the child closed the terminal
                break
            if not data:
                break
            stamps.append(time.monotonic() - t0)
            text += data.decode(errors="replace")
            if seen_caching is None and "caching" in text:
                seen_caching = watch()
        elif p.poll() is not None:
            break
    p.wait(timeout=60)
    os.close(master)
    stamps.append(time.monotonic() - t0)
    return p.returncode, text, max(b - a for a, b in zip(stamps, stamps[1:])), seen_caching


def test_terminal_shows_progress_from_start_to_end_through_the_cache_stage(synthetic, tmp_path):
    """The default recipe (frozen bottom cached) on a terminal: the run folder's config.json is there
    before the cache pass, the cache pass, each epoch and validation draw bars, and output never
    pauses for more than 10 s (Lite0 at 64 px on the synthetic flowers: seconds of caching, in 10
    batches of 64, so its bar moves)."""
    run = tmp_path / "run"
    rc, text, silence, config_first = _run_on_a_terminal(
        ["train", "--data", synthetic, "--out", run, "--recipe", "default", "--image-size", 64, "--epochs", 2,
         "--batch-size", 32, "--workers", 0, "--precision", "32"], lambda: (run / "config.json").is_file())
    assert rc == 0, text[-3000:]
    assert silence <= 10, (silence, text[-3000:])
    assert config_first, "config.json was not written before the cache pass"
    assert re.search(r"caching train: +\d+%\|[^\r\n]*\| [1-9]\d*/\d+", text), text[-3000:]   # a bar that moves
    assert re.search(r"caching val: +\d+%\|", text) and re.search(r"validate: +\d+%\|", text)
    assert re.search(r"epoch 1/2: +\d+%\|[^\r\n]*run_left=", text)
    assert "img/s over the run so far" in text and "left" in text
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["resolved"]["cached_frozen_bottom"] and cfg["unfreeze_from"] == 5 and cfg["freeze_backbone"] is False
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    # the cache pass is counted: in the first epoch's time, and in the run's wall time
    assert rows[0]["train_images_per_second"] < rows[1]["train_images_per_second"]
    assert summary["wall_seconds"] >= summary["train_seconds"] > 0
