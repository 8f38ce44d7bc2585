"""What `accel.keep_freed_memory` (glibc malloc keeps freed tensor memory) does to a CPU training step.

Each loop runs in a fresh process (the setting is process-wide and the page-fault mode it prevents
depends on the process's history): a bare loop on in-memory tensors, with glibc's defaults and with
petalnet's setting, alternating. Prints images/s, minor page faults and kernel (sys) seconds per step.
usage: python benchmarks/bench_allocator.py [--model tf_efficientnet_lite0] [--image-size 192]
       [--batch 32] [--steps 40] [--repeats 3] [--fine-tune]
(head only, the default, runs the frozen backbone from its prepared copy as petalnet train does.)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys


def child(args) -> None:
    import resource
    import time

    if args.tuned:
        from petalnet.accel import keep_freed_memory
        keep_freed_memory()
    import torch
    import torch.nn.functional as F

    from petalnet.accel import cpu_supports_bf16
    from petalnet.frozen import CPUFrozenBackbone
    from petalnet.frozen import set_backbone_frozen, train_mode
    from petalnet.models import create_model

    model, _ = create_model(args.model, 104)
    set_backbone_frozen(model, not args.fine_tune)
    model = model.to(memory_format=torch.channels_last)
    train_mode(model)
    bf16 = cpu_supports_bf16()
    net = model if args.fine_tune else CPUFrozenBackbone(model, args.image_size, bf16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 104, (args.batch,))
    for step in range(args.steps):
        if step == 5:
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            logits = net(x)
        F.cross_entropy(logits.float(), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    seconds, r1, n = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF), args.steps - 5
    print(json.dumps({"img_s": n * args.batch / seconds, "faults_per_step": (r1.ru_minflt - r0.ru_minflt) / n,
                      "sys_ms_per_step": 1000 * (r1.ru_stime - r0.ru_stime) / n,
                      "max_rss_mib": r1.ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tf_efficientnet_lite0")
    ap.add_argument("--image-size", type=int, default=192)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fine-tune", action="store_true", help="train every layer (default: the head)")
    ap.add_argument("--child", choices=["default", "tuned"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.tuned = args.child == "tuned"
        return child(args)
    flags = [f"--model={args.model}", f"--image-size={args.image_size}", f"--batch={args.batch}",
             f"--steps={args.steps}"] + (["--fine-tune"] if args.fine_tune else [])
    print(f"{args.model} at {args.image_size}px, batch {args.batch}, {'all layers' if args.fine_tune else 'head only'}, "
          f"bare loop, {os.cpu_count()} CPUs, each run a fresh process")
    runs = {"glibc default": [], "keep_freed_memory": []}
    for r in range(args.repeats):
        for name, mode in (("glibc default", "default"), ("keep_freed_memory", "tuned")):
            out = subprocess.run([sys.executable, __file__, "--child", mode, *flags], capture_output=True,
                                 text=True, check=True).stdout.strip().splitlines()[-1]
            runs[name].append(json.loads(out))
            row = runs[name][-1]
            print(f"  repeat {r + 1}, {name}: {row['img_s']:.1f} img/s, {row['faults_per_step']:.0f} page faults "
                  f"and {row['sys_ms_per_step']:.0f} ms kernel time per step, peak RSS {row['max_rss_mib']:.0f} MiB",
                  flush=True)
    med = {k: statistics.median(r["img_s"] for r in v) for k, v in runs.items()}
    print(f"glibc default {med['glibc default']:.1f} img/s, keep_freed_memory {med['keep_freed_memory']:.1f} img/s, "
          f"ratio {med['keep_freed_memory'] / med['glibc default']:.3f} (medians of {args.repeats})")
    from record import record
    faults = {k: statistics.median(r["faults_per_step"] for r in v) for k, v in runs.items()}
    record("allocator-keep-freed-memory", f"CPU speed-up: glibc allocator setting (`accel.keep_freed_memory`), bare "
           f"loop on the prepared frozen {args.model}", round(med["keep_freed_memory"], 1), "img/s",
           peer=round(med["glibc default"], 1), peer_label="glibc default",
           ratio=round(med["keep_freed_memory"] / med["glibc default"], 3),
           detail=f"medians of {args.repeats}; page faults per step (medians) {faults['keep_freed_memory']:.0f} vs "
                  f"{faults['glibc default']:.0f}")


if __name__ == "__main__":
    main()
