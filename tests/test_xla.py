"""The XLA path (``--accelerator tpu``), run on XLA's CPU backend (PJRT_DEVICE=CPU) with the Python named by
``PETALNET_XLA_PYTHON`` (torch_xla; ``.ci/run`` builds it), in subprocesses; and the parts of that path
that need no torch_xla (padding, the confusion matrix's skipped rows, the plan's refusals) here."""
import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from petalnet import metrics
from petalnet.config import TrainConfig
from petalnet.data.synthetic import synthetic_data
from petalnet.errors import OptionError
from petalnet.options import PRECISIONS
from petalnet.plan import xla_refusals
from petalnet.recipes import recipe_config, resolve_recipe
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


def _start(data, out, accelerator: str, tmp_path, devices: int = 1, returncode: int = 0, **extra):
    """One training in the XLA Python, started, on ``devices`` XLA CPU devices (SPMD) for ``accelerator`` tpu
    (``extra``: TrainConfig fields, and xla_run.py's ``resume`` and ``kill``); ``_wait`` for its record."""
    tag = f"{accelerator}-{devices}-{out.name}-{len(list(tmp_path.glob('*.json')))}"
    cfg_path, result = tmp_path / f"{tag}.json", tmp_path / f"{tag}-result.json"
    cfg_path.write_text(json.dumps({**RUN, **extra, "data": data, "out": str(out), "accelerator": accelerator}))
    env = {**os.environ, "PJRT_DEVICE": "CPU", "CPU_NUM_DEVICES": str(devices), "PYTHONPATH": ROOT}
    log = open(tmp_path / f"{tag}.log", "w+")
    proc = subprocess.Popen([XLA_PYTHON, os.path.join(ROOT, "tests", "xla_run.py"), str(cfg_path), str(result)],
                            env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
    return proc, log, result, returncode


def _wait(started) -> dict | None:
    """The record of a ``_start``ed run, None when it ended (as its ``returncode`` expects) without one."""
    proc, log, result, returncode = started
    proc.wait(timeout=900)
    log.seek(0)
    assert proc.returncode == returncode, log.read()[-3000:]
    log.close()
    return json.loads(result.read_text()) if result.exists() else None


def _run(*args, **kwargs) -> dict | None:
    return _wait(_start(*args, **kwargs))


RESUMED = dict(devices=8, batch_size=3)   # the resume test's run: the 8-device run of ``runs``


def _recipe(name: str, **overrides) -> dict:
    """TrainConfig fields of recipe ``name`` made small for the suite: lite0 from scratch at 64 px, 2 epochs
    of the 120 images, batch 3 per device (what ``_start`` sets itself left out)."""
    small = dict(pretrained=False, image_size=64, epochs=2, batch_size=3, train_split="val", val_split="val",
                 tta="none", quiet=True, seed=0, precision="32")
    fields = dataclasses.asdict(recipe_config(name, **{**small, **overrides}))
    return {k: v for k, v in fields.items() if k not in ("out", "data", "accelerator", "devices")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The trainings the tests below look at, started together (on 2 cores no faster than one after another:
    292 s against about 296 s, measured; on more cores, faster): the same run on XLA (PJRT CPU) and on the eager CPU path, from the same seed, with the XLA
    Python; the XLA run on 8 devices through SPMD, batch 3 per device (the same global batch of 24, each
    split 8 ways over the mesh); its first epoch in bf16; the default recipe and finetune on 8 devices
    (finetune steps every layer: resnet10t's, as lite0's 8-device graph compiles for 2 minutes here); and
    the first part of the resume test's run, on 8 devices, until its SIGTERM."""
    tmp = tmp_path_factory.mktemp("xla")
    data = synthetic_data(64, seed=0, root=str(tmp / "syn"))
    started = {"xla": _start(data, tmp / "xla-run", "tpu", tmp), "eager": _start(data, tmp / "cpu-run", "cpu", tmp),
               "spmd": _start(data, tmp / "run8", "tpu", tmp, devices=8, batch_size=3),
               "bf16": _start(data, tmp / "bf16", "tpu", tmp, precision="bf16-mixed", max_steps=STEPS),
               "default": _start(data, tmp / "default", "tpu", tmp, devices=8, **_recipe("default")),
               "finetune": _start(data, tmp / "finetune", "tpu", tmp, devices=8,
                                  **_recipe("finetune", model="resnet10t")),
               "stopped": _start(data, tmp / "resumed", "tpu", tmp, **RESUMED, kill=["SIGTERM", STEPS + 2])}
    return {"data": data, "tmp": tmp, "xla_run": tmp / "xla-run", "cpu_run": tmp / "cpu-run",
            **{name: _wait(run) for name, run in started.items()}}


def _history(run) -> list[dict]:
    with open(run / "history.jsonl") as fh:
        return [json.loads(line) for line in fh]


@needs_xla
def test_xla_compiles_a_fixed_set_of_graphs(runs):
    """(a) warm-up (the first epoch and its validation) compiles the set-up, the first training steps (their
    optimizer state is new), the training step and the evaluation step; after it nothing compiles, in
    training, in validation (its padded last batch too) or in the epochs' bookkeeping. The LR, a Python
    float that changes every step, is the graph's data; a value baked into the graph that changed per
    step, a shape that did, or per-epoch state made anew would compile more."""
    steps, vals = runs["xla"]["steps"], runs["xla"]["validations"]
    assert len(steps) == 3 * STEPS and len(vals) == 3
    first = steps[:STEPS]
    # SPMD: the first steps compile the step's graph and its variants for new optimizer state (2 or 3 graphs
    # by step 2, as the first LRs are or are not torch_xla's special scalars); from step 3 on, none
    assert first[2]["compiles"] == first[-1]["compiles"]
    assert vals[0]["compiles"] - first[-1]["compiles"] <= 2   # the evaluation step, padded batch included
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
def test_xla_trains_in_bf16(runs):
    """--precision bf16-mixed on XLA: the step under XLA's bf16 autocast (its convolutions and matmuls in
    bf16, the TPU's type) compiles the same set of graphs as fp32, and the first epoch's losses stay within
    2 % of the fp32 run's (the same schedule, stopped after that epoch; bench_xla.py's two epochs: 0.3 %)."""
    bf16 = runs["bf16"]
    assert bf16["summary"]["plan"]["precision"] == "bf16-mixed"
    steps, vals = bf16["steps"], bf16["validations"]
    assert steps[2]["compiles"] == steps[-1]["compiles"]
    assert vals[0]["compiles"] - steps[-1]["compiles"] <= 2
    row, fp32 = _history(runs["tmp"] / "bf16")[0], _history(runs["xla_run"])[0]
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


@pytest.fixture(scope="module")
def spmd(runs):
    """The XLA run of ``runs`` on 8 devices (batch 3 per device)."""
    return {"run": runs["tmp"] / "run8", "result": runs["spmd"]}


@needs_xla
def test_eight_devices_train_as_one(runs, spmd):
    """Data-parallel SPMD over 8 devices gives the 1-device run's per-epoch training loss and accuracy and
    validation loss, accuracy and macro-F1 (fp32, 1e-4 relative), with the same compiled graphs set (none
    after warm-up), no host fallbacks, and config.json recording the 8-device mesh."""
    one, eight = _history(runs["xla_run"]), _history(spmd["run"])
    for a, b in zip(one, eight, strict=True):
        # the first epoch to 1e-4; later ones drift with AdamW: it divides each gradient by its running
        # magnitude, so the last-bit differences of a data-parallel sum (batch norm's statistics and the
        # gradients as 8 partial sums all-reduced, against one sum) in near-zero gradients become LR-sized
        # steps (1.8e-4 by epoch 3, measured; with SGD instead, XLA itself drifted 4 % from eager CPU)
        rel = 1e-4 if a["epoch"] == 1 else 5e-4
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1"):
            assert b[key] == pytest.approx(a[key], rel=rel, abs=1e-6), (a["epoch"], key)
    resolved = json.loads((spmd["run"] / "config.json").read_text())["resolved"]
    assert resolved["world_size"] == resolved["replicas"] == 8 and resolved["global_batch"] == 24
    assert resolved["mesh"]["devices"] == 8 and resolved["mesh"]["axes"] == ["data"]
    steps, vals = spmd["result"]["steps"], spmd["result"]["validations"]
    assert all(not s["fallbacks"] for s in steps) and all(not v["fallbacks"] for v in vals)
    warm = spmd["result"]["validations"][0]["compiles"]   # none after warm-up, as on 1 device
    assert [s["compiles"] for s in steps[STEPS:]] == [warm] * 2 * STEPS and [v["compiles"] for v in vals] == [warm] * 3


@needs_xla
@pytest.mark.parametrize("recipe", ["default", "finetune"])
def test_recipes_train_on_eight_devices(runs, recipe):
    """What ``--recipe auto`` picks on a TPU (``default``: the frozen bottom and 4 random-resized crops of
    every image cached on the devices, kept on the host, an EMA of the weights) and the strong notebooks'
    ``finetune`` (every layer, Deotte's random affine drawn per step) train on 8 devices: finite losses,
    the plan as asked, no host fallbacks, and no graph compiled in epoch 2's steps."""
    assert resolve_recipe("auto", "tpu")[0] == "default"
    fields, result, run = _recipe(recipe), runs[recipe], runs["tmp"] / recipe
    rows = _history(run)
    assert len(rows) == 2 and all(math.isfinite(r[k]) for r in rows for k in ("train_loss", "val_loss"))
    plan, resolved = result["summary"]["plan"], json.loads((run / "config.json").read_text())["resolved"]
    assert plan["device"] == "xla" and resolved["mesh"]["devices"] == 8
    if recipe == "default":
        assert resolved["cached_frozen_bottom"] and plan["cache_views"] == 4 and fields["ema"] == 0.995
    else:
        assert not resolved["cached_frozen_bottom"] and fields["affine"] == 1.0
    steps = result["steps"]
    assert all(not s["fallbacks"] for s in steps) and all(not v["fallbacks"] for v in result["validations"])
    second = steps[len(steps) // 2 + 1:]
    assert len({s["compiles"] for s in second}) == 1, [s["compiles"] for s in steps]


@needs_xla
def test_eight_devices_resume_exactly(runs, spmd, tmp_path):
    """Exact resume under SPMD on 8 devices: stopped by SIGTERM at step 2 of epoch 2 (the position inside
    the epoch saved), resumed and SIGKILLed at step 2 of epoch 3 (nothing saved since epoch 2's end),
    resumed again: the history of the uninterrupted 8-device run, and checkpoints of CPU tensors."""
    run, common = runs["tmp"] / "resumed", RESUMED
    assert "stopped by signal at epoch 2, step 2" in runs["stopped"]["summary"]["stopped"]
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=False)["step"] == 2
    _run(runs["data"], run, "tpu", tmp_path, returncode=-9, resume=str(run), kill=["SIGKILL", 3 + 2], **common)
    assert len(_history(run)) == 2
    _run(runs["data"], run, "tpu", tmp_path, resume=str(run), **common)
    got, want = _history(run), _history(spmd["run"])
    assert len(got) == len(want) == 3
    for a, b in zip(got, want):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), (a["epoch"], key)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert {t.device.type for t in state["model"].values()} == {"cpu"}


@needs_xla
def test_devices_other_than_the_runtime_has_is_one_line(tmp_path):
    """--devices N on XLA sets the CPU backend's device count before the runtime starts; a count the
    runtime cannot give is refused with one line (exit 2) and no run folder."""
    done = subprocess.run([XLA_PYTHON, "-c", "import torch_xla.runtime as xr; xr.global_runtime_device_count(); "
                           "from petalnet.xla import start_spmd; start_spmd(3)"],
                          env={**os.environ, "PJRT_DEVICE": "CPU", "CPU_NUM_DEVICES": "2", "PYTHONPATH": ROOT},
                          capture_output=True, text=True, timeout=300)
    assert "--devices 3" in done.stderr and "2 XLA devices" in done.stderr, done.stderr[-2000:]


def test_each_pod_host_reads_its_share(monkeypatch):
    """A pod under SPMD: every host runs the same program; ``xla.topology`` (from the runtime's process
    index and count, faked here as 2 hosts of 8 devices) makes the mesh span all 16 devices, lets host 0
    alone write, and gives each host one share of the records, which the loaders read as DDP ranks do:
    disjoint, together every record (the partial last batch aside), the same number of steps on both
    hosts, each step a batch for its 8 devices."""
    import types
    from petalnet import xla
    from petalnet.data.loader import create_loader
    runtime = types.SimpleNamespace(global_runtime_device_count=lambda: 16, process_count=lambda: 2,
                                    addressable_runtime_device_count=lambda: 8)
    monkeypatch.setitem(sys.modules, "torch_xla", types.SimpleNamespace(runtime=runtime))
    monkeypatch.setitem(sys.modules, "torch_xla.runtime", runtime)
    records = [(torch.zeros(3, 2, 2, dtype=torch.uint8), i) for i in range(100)]
    shares, sampled = [], []
    for host in (0, 1):
        runtime.process_index = lambda host=host: host
        top = xla.topology()
        assert (top.replicas, top.shards, top.shard, top.per_shard, top.writer) == (16, 2, host, 8, host == 0)
        assert top.mesh["devices"] == 16 and top.mesh["hosts"] == 2 and top.mesh["devices_per_host"] == 8
        loader = create_loader(records, 3 * top.per_shard, shuffle=True, seed=0, drop_last=True, num_workers=0,
                               rank=top.shard, world_size=top.shards)
        shares.append([label for _, labels in loader for label in labels.tolist()])
        sampled.append(list(loader.sampler))
        assert {len(labels) for _, labels in loader} == {24}
    # the epoch's last partial batch is dropped (one graph); each epoch reshuffles, so none is always left out
    assert not set(shares[0]) & set(shares[1]) and len(shares[0]) == len(shares[1]) == 48
    assert sorted(sampled[0] + sampled[1]) == list(range(100))


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


@pytest.mark.parametrize("option", [dict(compile=True), dict(decode="gpu"), dict(precision="16-mixed")])
def test_xla_refuses_only_cuda_features(option):
    """A CUDA-only feature (or fp16) on XLA is one OptionError naming the option, never a silent slow path;
    the augmentations XLA used to refuse pass."""
    cfg = TrainConfig(**{**RUN, **option})
    with pytest.raises(OptionError, match="not available on XLA"):
        xla_refusals(cfg, PRECISIONS[cfg.precision])
    for fine in (dict(affine=1.0), dict(mixup=0.2), dict(cutmix=1.0), dict(rrc=0.4, color=0.2, cutout=0.2)):
        xla_refusals(TrainConfig(**{**RUN, **fine}), "32-true")
