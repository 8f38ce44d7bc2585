"""XLA: `petalnet train --accelerator tpu` against a bare torch_xla loop on the same model, batch, precision
and device, in the same run; plus the graphs XLA compiled during petalnet's run (during warm-up, the
first epoch and its validation, and after it, where the goal is none) and the seconds spent compiling.

petalnet's run reads the synthetic flowers' TFRecords (480 training images at 64 px) for 2 epochs, each
followed by validation (the training and evaluation graphs). Its steady step time is the median
of the second epoch's step times after its first 3 steps (no compilation left by then); the bare loop
feeds one batch already on the device and marks a step after each optimizer step, timed the same way.
"ratio R" = bare step time / petalnet step time (1.0: no overhead); "cpu ratio" = the same with the
process's CPU seconds per step, which other work on shared cores does not stretch as it stretches wall time.

With ``--devices N`` both run data-parallel over N XLA devices through SPMD on the same global batch:
petalnet as ``--accelerator tpu`` does, the bare loop as PyTorch/XLA's SPMD guide writes it (the batch
marked split along the mesh's data axis). There the partitioner gathers the whole batch onto every
device before each batch norm (spmd_ops' docstring), which petalnet's batch-local ops avoid, so the
ratio measures that too; the same bare loop under those ops ("loop ratio") isolates petalnet's loop,
input pipeline and bookkeeping around the step.

Run with a Python that has torch_xla, e.g. on XLA's CPU backend:
    PJRT_DEVICE=CPU $PETALNET_XLA_PYTHON benchmarks/bench_xla.py [--batch 32] [--precision 32] [--devices 8]
and on a TPU VM without PJRT_DEVICE (torch_xla picks the TPU): python benchmarks/bench_xla.py --image-size 224
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))   # this checkout's petalnet and tests/xla_run.py


def bare_loop(model_name: str, batch: int, size: int, precision: str, steps: int, devices: int,
              local_ops: bool = False) -> tuple[list, list]:
    """The wall and the process CPU seconds of each steady step (after the first 3) of the plainest
    torch_xla training loop; on several devices the SPMD user guide's data-parallel loop: the batch
    marked split along a mesh's data axis, everything else replicated. ``local_ops``: under petalnet's
    ``spmd_ops.BatchLocalOps``, petalnet's step without petalnet's loop around it."""
    import contextlib

    import numpy as np
    import timm
    import torch
    import torch_xla
    import torch_xla.distributed.spmd as xs
    from petalnet.spmd_ops import BatchLocalOps
    device = torch_xla.device()
    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False, num_classes=104).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    x = torch.randn(batch, 3, size, size).to(device)
    y = torch.randint(0, 104, (batch,)).to(device)
    if devices > 1:
        mesh = xs.Mesh(np.arange(devices), (devices,), ("data",))
        xs.mark_sharding(x, mesh, ("data", None, None, None))
        xs.mark_sharding(y, mesh, ("data",))
    with BatchLocalOps() if local_ops else contextlib.nullcontext():
        return _timed_steps(model, opt, x, y, precision, steps)


def _timed_steps(model, opt, x, y, precision: str, steps: int) -> tuple[list, list]:
    import torch
    import torch.nn.functional as F
    import torch_xla
    import torch_xla.core.xla_model as xm
    ends = []
    for step in range(steps):
        if step == 3:
            xm.wait_device_ops()
            ends.append((time.perf_counter(), time.process_time()))
        with torch.autocast("xla", dtype=torch.bfloat16, enabled="bf16" in precision):
            loss = F.cross_entropy(model(x).float(), y, label_smoothing=0.1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch_xla.sync()
        if ends:
            if step == steps - 1:
                xm.wait_device_ops()
            ends.append((time.perf_counter(), time.process_time()))
    return _intervals(ends)


def _intervals(ends: list[tuple[float, float]]) -> tuple[list, list]:
    """(wall seconds, process CPU seconds) between consecutive (wall, CPU) clock readings."""
    pairs = list(zip(ends, ends[1:]))
    return [b[0] - a[0] for a, b in pairs], [b[1] - a[1] for a, b in pairs]


def compiled_graphs(first_epoch: list[dict], validations: list[dict]) -> dict:
    """XLA's compile count, split by when: warm-up is the first epoch's training and validation."""
    warm, total = validations[0]["compiles"], validations[-1]["compiles"]
    return {"graphs_compiled": total, "warm_up": warm, "after_warm_up": total - warm,
            "by_step_1": first_epoch[0]["compiles"],
            "train_steps": first_epoch[-1]["compiles"] - first_epoch[0]["compiles"],
            "eval_steps": warm - first_epoch[-1]["compiles"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet10t")
    ap.add_argument("--batch", type=int, default=32, help="the global batch (split over the devices)")
    ap.add_argument("--devices", type=int, default=1, help="XLA devices, data-parallel through SPMD (on the CPU "
                    "backend, this many CPU devices; the batch must divide by it)")
    ap.add_argument("--image-size", type=int, default=64, help="the synthetic flowers' size")
    ap.add_argument("--precision", default="32", choices=["32", "bf16-mixed"])
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    from petalnet.data.synthetic import synthetic_data
    from tests import xla_run
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_data(args.image_size, seed=0, root=os.path.join(tmp, "syn"))
        cfg = dict(data=data, out=os.path.join(tmp, "run"), model=args.model, pretrained=False,
                   freeze_backbone=False, unfreeze_from=None, epochs=2, batch_size=args.batch // args.devices,
                   devices=args.devices,
                   precision=args.precision, accelerator="tpu", quiet=True, tta="none")
        with open(os.path.join(tmp, "cfg.json"), "w") as fh:
            json.dump(cfg, fh)
        xla_run.main(os.path.join(tmp, "cfg.json"), os.path.join(tmp, "out.json"))
        with open(os.path.join(tmp, "out.json")) as fh:
            out = json.load(fh)
    steps, vals = out["steps"], out["validations"]
    per_epoch = len(steps) // 2
    # the second epoch's steps after its first 3, and as many of the bare loop's
    petalnet_wall, petalnet_cpu = _intervals([(s["t"], s["cpu"]) for s in steps[per_epoch + 3:]])
    bare = dict(model_name=args.model, batch=args.batch, size=args.image_size, precision=args.precision,
                steps=per_epoch + 3, devices=args.devices)
    bare_wall, bare_cpu = bare_loop(**bare)
    ops_wall, _ = bare_loop(**bare, local_ops=True)
    # medians: another process's burst on this machine's shared cores lands in a few steps of one loop
    petalnet_step, bare_step = statistics.median(petalnet_wall), statistics.median(bare_wall)
    ratio, ops_step = bare_step / petalnet_step, statistics.median(ops_wall)
    # the process's CPU seconds per step (all its threads, the loader's included): the work done, which
    # other processes on the same cores do not stretch as they stretch wall time
    cpu_ratio = statistics.median(bare_cpu) / statistics.median(petalnet_cpu)
    graphs = compiled_graphs(steps[:per_epoch], vals)
    result = {"device": out["summary"]["plan"]["device"], "pjrt_device": os.environ.get("PJRT_DEVICE", "TPU"),
              "devices": args.devices, "model": args.model, "batch": args.batch, "ops_step_s": ops_step,
              "loop_ratio": ops_step / petalnet_step, "image_size": args.image_size, "precision": args.precision,
              "steps": len(steps), "petalnet_step_s": petalnet_step, "bare_step_s": bare_step, "ratio": ratio,
              "petalnet_mean_step_s": statistics.mean(petalnet_wall), "bare_mean_step_s": statistics.mean(bare_wall),
              "petalnet_cpu_step_s": statistics.median(petalnet_cpu), "bare_cpu_step_s": statistics.median(bare_cpu),
              "cpu_ratio": cpu_ratio, **graphs, "compile_seconds": vals[-1]["compile_seconds"],
              "fallbacks": vals[-1]["fallbacks"]}
    print(f"petalnet train on XLA ({result['pjrt_device']}, {args.devices} devices through SPMD): {args.model} "
          f"{args.image_size}px global batch {args.batch} "
          f"precision {args.precision}, {len(steps)} steps and {len(vals)} validations in 2 epochs")
    print(f"  steady step, median (mean): petalnet {petalnet_step * 1e3:.1f} ms "
          f"({result['petalnet_mean_step_s'] * 1e3:.1f}), bare torch_xla loop {bare_step * 1e3:.1f} ms "
          f"({result['bare_mean_step_s'] * 1e3:.1f})")
    print(f"  the bare loop under petalnet's batch-local ops (spmd_ops): {ops_step * 1e3:.1f} ms: petalnet's loop "
          f"around its step, loop ratio {ops_step / petalnet_step:.3f}")
    print(f"  process CPU time per step, median: petalnet {result['petalnet_cpu_step_s'] * 1e3:.1f} ms, bare "
          f"{result['bare_cpu_step_s'] * 1e3:.1f} ms: cpu ratio {cpu_ratio:.3f}")
    print(f"  graphs compiled {graphs['graphs_compiled']}: {graphs['warm_up']} in warm-up (epoch 1 and its "
          f"validation: {graphs['by_step_1']} by the end of step 1, set-up and the first step, whose optimizer "
          f"state is new; {graphs['train_steps']} in steps 2-{per_epoch}; {graphs['eval_steps']} in validation), "
          f"{graphs['after_warm_up']} after it")
    print(f"  {result['compile_seconds']:.1f} s compiling; aten fallbacks: {result['fallbacks'] or 'none'}")
    print(f"ratio {ratio:.3f}")
    from record import record
    name = "xla-vs-bare" if args.devices == 1 else f"xla-{args.devices}-devices-vs-bare-spmd"
    record(name, f"XLA on PJRT's {result['pjrt_device']} backend, {args.devices} device(s) ({args.model} "
           f"{args.image_size} px, global batch {args.batch}): petalnet vs a bare torch_xla "
           f"{'SPMD ' if args.devices > 1 else ''}loop, median step", round(petalnet_step * 1e3), "ms",
           peer=round(bare_step * 1e3), peer_label=f"bare torch_xla {'SPMD ' if args.devices > 1 else ''}loop",
           ratio=round(ratio, 3),
           detail=f"{graphs['graphs_compiled']} graphs, {graphs['after_warm_up']} after warm-up; the bare loop under "
                  f"petalnet's batch-local ops {ops_step * 1e3:.0f} ms (loop ratio {ops_step / petalnet_step:.3f})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
