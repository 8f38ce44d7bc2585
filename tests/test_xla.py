"""The XLA path (``--accelerator tpu``), run on XLA's CPU backend (PJRT_DEVICE=CPU) with the Python named by
``PETALNET_XLA_PYTHON`` (torch_xla; ``.ci/run`` builds it), in subprocesses; and the parts of that path
that need no torch_xla (padding, the confusion matrix's skipped rows, the plan's refusals) here."""
import json
import os
import subprocess
import sys

import pytest
import torch

from petalnet import metrics
from petalnet.config import TrainConfig
from petalnet.data.synthetic import synthetic_data
from petalnet.errors import OptionError
from petalnet.plan import make_plan
from petalnet.xla import PAD_LABEL, Padded

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
XLA_PYTHON = os.environ.get("PETALNET_XLA_PYTHON")
needs_xla = pytest.mark.skipif(not XLA_PYTHON, reason="set PETALNET_XLA_PYTHON to a Python with torch_xla")

# 120 labelled images (the synthetic val split, trained and validated on: this is about the mechanics),
# batch 24: 5 full training steps an epoch, evaluation batches of 48, 48 and 24 (padded to 48)
RUN = dict(model="resnet10t", pretrained=False, freeze_backbone=False, unfreeze_from=None, image_size=64,
           epochs=3, batch_size=24, lr=1e-3, precision="32", train_split="val", val_split="val", tta="none",
           quiet=True, seed=0)
STEPS = 5
# fp32 on XLA's CPU backend and on eager CPU differ in the order of their sums (XLA's convolutions are
# Eigen's, eager's oneDNN); after 10 AdamW steps from the same seed the epoch losses differ by less than this
LOSS_RTOL = 2e-3


def _run(data, out, accelerator: str, tmp_path, **extra) -> dict:
    cfg_path, result = tmp_path / f"{accelerator}.json", tmp_path / f"{accelerator}-result.json"
    cfg_path.write_text(json.dumps({**RUN, **extra, "data": data, "out": str(out), "accelerator": accelerator}))
    env = {**os.environ, "PJRT_DEVICE": "CPU", "PYTHONPATH": ROOT}
    done = subprocess.run([XLA_PYTHON, os.path.join(ROOT, "tests", "xla_run.py"), str(cfg_path), str(result)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(result.read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run on XLA (PJRT CPU) and on the eager CPU path, from the same seed, with the XLA Python."""
    tmp = tmp_path_factory.mktemp("xla")
    data = synthetic_data(64, seed=0, root=str(tmp / "syn"))
    return {"data": data, "xla_run": tmp / "xla-run", "cpu_run": tmp / "cpu-run",
            "xla": _run(data, tmp / "xla-run", "tpu", tmp), "eager": _run(data, tmp / "cpu-run", "cpu", tmp)}


def _history(run) -> list[dict]:
    with open(run / "history.jsonl") as fh:
        return [json.loads(line) for line in fh]


@needs_xla
def test_xla_compiles_a_fixed_set_of_graphs(runs):
    """(a) warm-up (the first epoch and its validation) compiles the set-up, the first training step (its
    optimizer state is new), one training step and one evaluation step; after it nothing compiles, in
    training, in validation (its padded last batch too) or in the epochs' bookkeeping. The LR, a Python
    float that changes every step, is the graph's data; a value baked into the graph that changed per
    step, a shape that did, or per-epoch state made anew would compile more."""
    steps, vals = runs["xla"]["steps"], runs["xla"]["validations"]
    assert len(steps) == 3 * STEPS and len(vals) == 3
    first = steps[:STEPS]
    assert first[1]["compiles"] - first[0]["compiles"] == 1   # the training step: one graph, the sums in it
    assert first[1]["compiles"] == first[-1]["compiles"]
    assert vals[0]["compiles"] - first[-1]["compiles"] == 1   # the evaluation step, padded batch included
    warm = vals[0]["compiles"]
    assert [s["compiles"] for s in steps[STEPS:]] == [warm] * 2 * STEPS
    assert [v["compiles"] for v in vals] == [warm] * 3


@needs_xla
def test_xla_step_has_no_cpu_fallback(runs):
    """(b) every operation of a step, of validation (padded batches, masked metrics) and of the epoch's
    bookkeeping has an XLA lowering: no ``aten::`` counter (an op run on the CPU instead) at any point."""
    xla = runs["xla"]
    assert all(not s["fallbacks"] for s in xla["steps"]), xla["steps"][-1]["fallbacks"]
    assert all(not v["fallbacks"] for v in xla["validations"])


@needs_xla
def test_xla_losses_match_the_eager_cpu_path(runs):
    """(c) the same training on XLA and on eager CPU: per-epoch training and validation loss within
    LOSS_RTOL, and validation counts every record exactly once (the padded rows are not counted)."""
    assert runs["xla"]["summary"]["plan"]["device"] == "xla" and runs["eager"]["summary"]["plan"]["device"] == "cpu"
    on_xla, eager = _history(runs["xla_run"]), _history(runs["cpu_run"])
    assert [r["val_images"] for r in on_xla] == [r["val_images"] for r in eager] == [120] * 3
    for a, b in zip(on_xla, eager, strict=True):
        for key in ("train_loss", "val_loss"):
            assert a[key] == pytest.approx(b[key], rel=LOSS_RTOL), (a["epoch"], key)


@needs_xla
def test_xla_trains_in_bf16(runs, tmp_path):
    """--precision bf16-mixed on XLA: the step under XLA's bf16 autocast (its convolutions and matmuls in
    bf16, the TPU's type) compiles the same set of graphs as fp32, and the first epoch's losses stay within
    2 % of the fp32 run's (the same schedule, stopped after that epoch; bench_xla.py's two epochs: 0.3 %)."""
    bf16 = _run(runs["data"], tmp_path / "run", "tpu", tmp_path, precision="bf16-mixed", max_steps=STEPS)
    assert bf16["summary"]["plan"]["precision"] == "bf16-mixed"
    steps, vals = bf16["steps"], bf16["validations"]
    assert steps[1]["compiles"] - steps[0]["compiles"] == 1 and steps[1]["compiles"] == steps[-1]["compiles"]
    assert vals[0]["compiles"] - steps[-1]["compiles"] == 1
    row, fp32 = _history(tmp_path / "run")[0], _history(runs["xla_run"])[0]
    for key in ("train_loss", "val_loss"):
        assert row[key] == pytest.approx(fp32[key], rel=2e-2), key


@needs_xla
def test_xla_checkpoint_predicts_on_cpu(runs, tmp_path):
    """(d) the XLA run's checkpoints hold CPU tensors: this Python (no torch_xla) loads them and
    ``petalnet predict`` writes a submission from them on the CPU."""
    data, run = runs["data"], runs["xla_run"]
    for name in ("best.pt", "last.pt"):
        state = torch.load(run / "checkpoints" / name, weights_only=True)   # no map_location: as saved
        assert {t.device.type for t in state["model"].values()} == {"cpu"}
    out = tmp_path / "submission.csv"
    done = subprocess.run([sys.executable, "-m", "petalnet", "predict", str(run), "--data", data,
                           "--output", str(out), "--device", "cpu"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = out.read_text().splitlines()
    assert lines[0] == "id,label" and len(lines) == 1 + 90   # the synthetic test split: 6 classes x 15


@needs_xla
def test_several_devices_on_the_cpu_backend_is_one_line(tmp_path):
    """torch_xla 2.9 cannot run collectives between PJRT CPU devices (threads of one process), so --devices 2
    there is refused with one line."""
    done = subprocess.run([XLA_PYTHON, "-m", "petalnet", "train", "--data", "unused", "--out", str(tmp_path / "r"),
                           "--accelerator", "tpu", "--devices", "2", "--model", "resnet10t", "--no-pretrained"],
                          env={**os.environ, "PJRT_DEVICE": "CPU", "PYTHONPATH": ROOT}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "--devices 2" in done.stderr, done.stderr
    assert not (tmp_path / "r").exists()


def test_padded_evaluation_batches_count_every_record_once():
    """The last evaluation batch is padded to the fixed size with rows the loss and the confusion matrix
    skip: metrics over padded batches equal those over the records."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (11,), generator=g)
    preds = torch.randint(0, 5, (11,), generator=g)
    logits = torch.randn(11, 5, generator=g)
    batches = [(torch.ones(len(labels[i:i + 4]), 3, 2, 2, dtype=torch.uint8), labels[i:i + 4]) for i in range(0, 11, 4)]
    padded = list(Padded(batches, 4))
    assert [len(y) for _, y in padded] == [4, 4, 4] and [x.shape[0] for x, _ in padded] == [4, 4, 4]
    assert padded[-1][1].tolist() == [*labels[8:].tolist(), PAD_LABEL]
    assert padded[-1][0][:3].eq(1).all() and padded[-1][0][3].eq(0).all()
    y = torch.cat([y for _, y in padded])
    p = torch.cat([preds, preds[:1]])
    assert torch.equal(metrics.confusion_matrix(y, p, 5), metrics.confusion_matrix(labels, preds, 5))
    assert metrics.confusion_matrix(y, p, 5).sum() == 11
    lp = torch.cat([logits, logits[:1]]).log_softmax(1)
    assert torch.nn.functional.nll_loss(lp, y, reduction="sum") == pytest.approx(
        torch.nn.functional.nll_loss(logits.log_softmax(1), labels, reduction="sum").item())


@pytest.mark.parametrize("option", [dict(compile=True), dict(affine=1.0), dict(mixup=0.2), dict(decode="gpu")])
def test_xla_plan_refuses_what_xla_cannot_run(option):
    """A CUDA or eager-only feature on XLA is one OptionError naming the option, never a silent slow path."""
    cfg = TrainConfig(**{**RUN, **option})
    with pytest.raises(OptionError, match="not available on XLA"):
        make_plan(cfg, torch.device("xla"), "32-true", 1, torch.nn.Linear(2, 2), 64, (100, 0))
