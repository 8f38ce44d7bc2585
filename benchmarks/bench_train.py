"""Training-loop overhead: `petalnet train` (real TFRecords, real loader, Fabric) against a bare PyTorch
loop on the same model, batch and precision with tensors already in memory, in the same run.

All count steady-state images/s after 10 warm-up steps. petalnet reads the TFRecords every step: a
head-only run's default cache of the frozen backbone's output is off unless --cache. With a frozen
backbone on CPU (the default here), petalnet runs it from a prepared copy (batch norm folded, bf16
weights: petalnet.frozen.CPUFrozenBackbone); a third loop runs that same copy bare, and its ratio is
the loop's own overhead.
usage: python benchmarks/bench_train.py [--model tf_efficientnet_lite0] [--image-size 192] [--batch 32]
       [--steps 80] [--repeats 3] [--fine-tune] [--precision auto] [--workers 2] [--data DIR]
       [--repeat-data N] [--no-pretrained] [--compile] [--decode gpu] [--cache] [--json FILE]
       [--loaders default,threads] [--threads N] [--profile-steps N]
--loaders threads: `petalnet train --loader threads` (decoding threads writing into reused pinned buffers)
in place of its default (worker processes on a GPU); several loaders: one petalnet loop each, the same
bare loop, in one process. --profile-steps N: only the petalnet loop, under
torch.profiler for N steps after the warm-up (compilation included), then the top host-side ops.
On a GPU, e.g.: --model efficientnet_b0 --image-size 224 --batch 256 --fine-tune --no-pretrained
--repeat-data 10 --steps 120 --repeats 1 (the train split's files named 10 times, so one epoch is long).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from petalnet.accel import keep_freed_memory, make_fabric, resolve_precision
from petalnet.frozen import CPUFrozenBackbone
from petalnet.frozen import set_backbone_frozen, train_mode
from petalnet.models import create_model
from petalnet.engine import TrainConfig, train

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "data", "petals-mini")


def bare_loop(args, precision: str, prepared: bool = False) -> float:
    """The same step without petalnet: model, AdamW, autocast, channels-last, in-memory batches.
    ``prepared``: the frozen backbone runs from petalnet's prepared copy (``CPUFrozenBackbone``), as
    ``petalnet train`` runs it on CPU, so the two loops do the same arithmetic (the loop's overhead)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, _ = create_model(args.model, 104, pretrained=args.pretrained)
    set_backbone_frozen(model, not args.fine_tune)
    model = model.to(device, memory_format=torch.channels_last)
    train_mode(model)
    if prepared:
        model = CPUFrozenBackbone(model, args.image_size, bf16=precision == "bf16-mixed")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 104, (args.batch,), device=device)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    net = torch.compile(model, mode=args.compile_mode) if args.compile else model
    graphs = args.compile and args.compile_mode in ("reduce-overhead", "max-autotune")   # CUDA graphs
    t0 = None
    for step in range(args.steps):
        if step == 10:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = net(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=0.1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    loss.item()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (args.steps - 10) * args.batch / (time.perf_counter() - t0)


def train_data(args):
    """The train split, its files named ``--repeat-data`` times (one long epoch, no validation)."""
    if args.repeat_data <= 1:
        return args.data
    files = sorted(glob.glob(os.path.join(glob.escape(args.data), "**", "train", "*.tfrec"), recursive=True))
    return files * args.repeat_data


def petalnet_loop(args, loader_kind: str = "default") -> float:
    """``petalnet train``'s steady images/s; ``loader_kind`` 'default' (its own choice) or a --loader value."""
    loader = "auto" if loader_kind == "default" else loader_kind
    workers = args.threads if loader == "threads" and args.threads else args.workers
    with tempfile.TemporaryDirectory() as out:
        result = train(TrainConfig(data=train_data(args), out=os.path.join(out, "run"), model=args.model,
                                   image_size=args.image_size, batch_size=args.batch, epochs=100,
                                   freeze_backbone=not args.fine_tune, precision=args.precision,
                                   pretrained=args.pretrained, workers=workers, quiet=True, loader=loader,
                                   max_steps=args.steps, compile=args.compile, compile_mode=args.compile_mode,
                                   decode=args.decode,
                                   cache_frozen=args.cache))
    return result["steady_images_per_second"]


def write_records(args, device, precision, loader, ours, bare, others, bare_prepared, peak) -> None:
    """benchmarks/records/train-*.json: this configuration's ratio (and, on a prepared CPU backbone, the loop's own
    overhead and the prepared copy's speed-up)."""
    from record import record
    name = f"train-{device.type}-{args.model}-{'all' if args.fine_tune else 'head'}" + \
        (f"-compile{'' if args.compile_mode == 'default' else '-' + args.compile_mode}" if args.compile else "") + \
        ("-decode-gpu" if args.decode == "gpu" else "")
    o, b = statistics.median(ours), statistics.median(bare)
    setting = (f"{args.model} {args.image_size} px, batch {args.batch}, {precision}, "
               f"{'every layer' if args.fine_tune else 'head only'}" + (", compiled" if args.compile else "")
               + (", nvJPEG decode" if args.decode == "gpu" else ""))
    detail = "; ".join([f"medians of {args.repeats}"]
                       + [f"`--loader {k}` {statistics.median(v):.0f} ({statistics.median(v) / b:.3f})"
                          for k, v in others.items()]
                       + [f"peak GPU memory {k} {v:.0f} MiB" for k, v in peak.items()])
    record(name, f"Training loop vs a bare PyTorch loop ({setting}, {loader} loader)", round(o, 1), "img/s",
           peer=round(b, 1), peer_label="bare loop", ratio=round(o / b, 3), detail=detail)
    if bare_prepared:
        bp = statistics.median(bare_prepared)
        record(name + "-overhead", f"Training loop's own overhead ({setting}): against a bare loop on the same "
               "prepared frozen backbone", round(o, 1), "img/s", peer=round(bp, 1), peer_label="bare, prepared",
               ratio=round(o / bp, 3))
        record(name + "-prepared", f"CPU speed-up: the frozen backbone run from its prepared copy ({setting}, "
               "bare loops)", round(bp, 1), "img/s", peer=round(b, 1), peer_label="eager under autocast",
               ratio=round(bp / b, 3))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--model", default="tf_efficientnet_lite0")
    ap.add_argument("--image-size", type=int, default=192)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=80,
                    help="10 warm-up + timed steps, within the first epoch (an epoch end runs validation)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fine-tune", action="store_true", help="train every layer (default: the head, as the recipe)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--workers", type=int, help="loader workers (default: petalnet's choice)")
    ap.add_argument("--repeat-data", type=int, default=1, help="name the train files N times (longer epoch)")
    ap.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="random init (speed only)")
    ap.add_argument("--compile", action="store_true", help="torch.compile both loops")
    ap.add_argument("--compile-mode", default="default", help="torch.compile's mode for both loops (reduce-overhead: "
                    "CUDA graphs)")
    ap.add_argument("--cache", action="store_true",
                    help="let petalnet cache the frozen backbone's output (its default for head-only runs): "
                         "its steps then read no images; without it, the loop under test reads real data")
    ap.add_argument("--decode", default="cpu", choices=["cpu", "gpu"], help="petalnet's JPEG decode (default: cpu)")
    ap.add_argument("--json", metavar="FILE", help="append the result as one JSON line")
    ap.add_argument("--loaders", default="default", help="petalnet loops to run: default, threads (comma list)")
    ap.add_argument("--threads", type=int, help="--loader threads: how many (default: the workers petalnet would start)")
    ap.add_argument("--profile-steps", type=int, default=0, help="profile N steps of the petalnet loop instead")
    ap.add_argument("--profile-rows", type=int, default=25)
    args = ap.parse_args()
    if args.profile_steps:
        return profile(args)
    precision = resolve_precision(args.precision, "auto")
    device = make_fabric(precision=args.precision).device
    if device.type == "cpu":   # what petalnet train sets on CPU, here for every loop (benchmarks/bench_allocator.py)
        keep_freed_memory()
    print(f"{args.model} at {args.image_size}px, batch {args.batch}, {precision}, "
          f"{'all layers' if args.fine_tune else 'head only'}, {device}, {os.cpu_count()} CPUs"
          f"{', compiled' if args.compile else ''}, decode on {args.decode}")
    # petalnet trains a frozen backbone on CPU from a prepared copy: a third loop does that arithmetic bare
    frozen_prepared = device.type == "cpu" and not args.fine_tune and not args.compile
    kinds = args.loaders.split(",")
    ours, bare, bare_prepared, peak = [], [], [], {}
    others = {k: [] for k in kinds[1:]}   # petalnet with the other loaders
    loops = [("petalnet", lambda: petalnet_loop(args, kinds[0]), ours)]
    loops += [(f"petalnet {k}", lambda k=k: petalnet_loop(args, k), others[k]) for k in kinds[1:]]
    loops += [("bare", lambda: bare_loop(args, precision), bare)]
    if frozen_prepared:
        loops.append(("bare prepared", lambda: bare_loop(args, precision, prepared=True), bare_prepared))
    for r in range(args.repeats):   # alternate, so drifts of a shared machine hit all alike
        for name, run, rates in loops:
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            rates.append(run())
            if device.type == "cuda":
                peak[name] = max(peak.get(name, 0), torch.cuda.max_memory_allocated() / 2**20)
        print(f"  repeat {r + 1}: petalnet ({kinds[0]} loader) {ours[-1]:.1f} img/s, "
              + "".join(f"petalnet ({k} loader) {v[-1]:.1f} img/s, " for k, v in others.items())
              + f"bare {bare[-1]:.1f} img/s"
              + (f", bare on the prepared backbone {bare_prepared[-1]:.1f} img/s" if frozen_prepared else ""))
    o, b = statistics.median(ours), statistics.median(bare)
    print(f"petalnet train {o:.1f} img/s, bare PyTorch loop {b:.1f} img/s, ratio {o / b:.3f} (medians of {args.repeats})"
          + "".join(f", peak GPU memory {k} {v:.0f} MiB" for k, v in peak.items()))
    for k, v in others.items():
        print(f"petalnet train with the {k} loader {statistics.median(v):.1f} img/s, ratio "
              f"{statistics.median(v) / b:.3f}")
    if frozen_prepared:
        bp = statistics.median(bare_prepared)
        print(f"loop overhead: the bare loop on petalnet's prepared frozen backbone {bp:.1f} img/s, "
              f"petalnet / that {o / bp:.3f}")
    write_records(args, device, precision, kinds[0], ours, bare, others, bare_prepared, peak)
    if args.json:
        row = {"model": args.model, "image_size": args.image_size, "batch": args.batch, "precision": precision,
               "compile": args.compile and args.compile_mode, "decode": args.decode, "fine_tune": args.fine_tune,
               "petalnet": o,
               "bare": b, "ratio": o / b, "device": str(device), "loader": kinds[0]}
        for k, v in others.items():
            row.update({f"petalnet_{k}": statistics.median(v), f"ratio_{k}": statistics.median(v) / b})
        if frozen_prepared:
            row.update(bare_prepared=statistics.median(bare_prepared),
                       overhead_ratio=o / statistics.median(bare_prepared))
        row.update({f"peak_gpu_mib_{k}": v for k, v in peak.items()})
        with open(args.json, "a") as f:
            f.write(json.dumps(row) + "\n")


def profile(args) -> None:
    """torch.profiler over ``--profile-steps`` petalnet steps after ``STEADY`` warm-up steps (compilation
    included): the top ops by self CPU time, i.e. where the main thread spends or waits (cudaStreamSynchronize,
    aten::item, aten::_local_scalar_dense are host syncs; pin_memory, DataLoader iteration, to/copy_ host
    work)."""
    from torch.optim.optimizer import register_optimizer_step_post_hook
    from torch.profiler import ProfilerActivity, profile as torch_profile, schedule

    warm = 12 if args.compile else 5
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    args.steps = warm + 2 + args.profile_steps + 1
    with torch_profile(activities=acts, schedule=schedule(wait=warm, warmup=2, active=args.profile_steps)) as prof:
        handle = register_optimizer_step_post_hook(lambda *a: prof.step())   # one profiler step per training step
        try:
            petalnet_loop(args, args.loaders.split(",")[0])
        finally:
            handle.remove()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_rows, max_name_column_width=48)
    print(f"profile: {args.profile_steps} steps of petalnet train ({args.loaders.split(',')[0]} loader"
          f"{', compiled' if args.compile else ''}), ops by self CPU time (the main thread and the loader's threads):")
    print(table)


if __name__ == "__main__":
    main()
