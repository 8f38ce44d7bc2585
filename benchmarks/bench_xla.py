"""XLA: `petalnet train --accelerator tpu` against a bare torch_xla loop on the same model, batch, precision
and device, in the same run; plus the graphs XLA compiled during petalnet's run and the seconds spent.

petalnet's run reads the synthetic flowers' TFRecords (480 training images at 64 px) for 2 epochs, each
followed by validation (the training and evaluation graphs). Its steady step time is the second
epoch's wall time per step after its first 3 steps (no compilation left by then); the bare loop feeds
one batch already on the device and marks a step after each optimizer step, timed the same way.
"ratio R" = bare step time / petalnet step time (1.0: no overhead).

Run with a Python that has torch_xla, e.g. on XLA's CPU backend:
    PJRT_DEVICE=CPU $PETALNET_XLA_PYTHON benchmarks/bench_xla.py [--batch 32] [--precision 32]
and on a TPU VM without PJRT_DEVICE (torch_xla picks the TPU): python benchmarks/bench_xla.py --image-size 224
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))   # this checkout's petalnet and tests/xla_run.py


def bare_loop(model_name: str, batch: int, size: int, precision: str, steps: int) -> float:
    """Seconds per steady step of the plainest torch_xla training loop."""
    import timm
    import torch
    import torch.nn.functional as F
    import torch_xla
    import torch_xla.core.xla_model as xm
    device = torch_xla.device()
    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False, num_classes=104).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    x = torch.randn(batch, 3, size, size).to(device)
    y = torch.randint(0, 104, (batch,)).to(device)
    t0 = None
    for step in range(steps):
        if step == 3:
            xm.wait_device_ops()
            t0 = time.perf_counter()
        with torch.autocast("xla", dtype=torch.bfloat16, enabled="bf16" in precision):
            loss = F.cross_entropy(model(x).float(), y, label_smoothing=0.1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch_xla.sync()
    xm.wait_device_ops()
    return (time.perf_counter() - t0) / (steps - 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet10t")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=64, help="the synthetic flowers' size")
    ap.add_argument("--precision", default="32", choices=["32", "bf16-mixed"])
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    from petalnet.data.synthetic import synthetic_data
    from tests import xla_run
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_data(args.image_size, seed=0, root=os.path.join(tmp, "syn"))
        cfg = dict(data=data, out=os.path.join(tmp, "run"), model=args.model, pretrained=False,
                   freeze_backbone=False, unfreeze_from=None, epochs=2, batch_size=args.batch,
                   precision=args.precision, accelerator="tpu", quiet=True, tta="none")
        with open(os.path.join(tmp, "cfg.json"), "w") as fh:
            json.dump(cfg, fh)
        xla_run.main(os.path.join(tmp, "cfg.json"), os.path.join(tmp, "out.json"))
        with open(os.path.join(tmp, "out.json")) as fh:
            out = json.load(fh)
    steps, vals = out["steps"], out["validations"]
    per_epoch = len(steps) // 2
    second = steps[per_epoch:]
    petalnet_step = (second[-1]["t"] - second[3]["t"]) / (len(second) - 4)
    bare_step = bare_loop(args.model, args.batch, args.image_size, args.precision, steps=per_epoch + 3)
    ratio = bare_step / petalnet_step
    result = {"device": out["summary"]["plan"]["device"], "pjrt_device": os.environ.get("PJRT_DEVICE", "TPU"),
              "model": args.model, "batch": args.batch, "image_size": args.image_size, "precision": args.precision,
              "steps": len(steps), "petalnet_step_s": petalnet_step, "bare_step_s": bare_step, "ratio": ratio,
              "graphs_compiled": vals[-1]["compiles"], "compiled_after_step_3": vals[-1]["compiles"] - steps[2]["compiles"],
              "compile_seconds": vals[-1]["compile_seconds"], "fallbacks": vals[-1]["fallbacks"]}
    print(f"petalnet train on XLA ({result['pjrt_device']}): {args.model} {args.image_size}px batch {args.batch} "
          f"{args.precision}, {len(steps)} steps in 2 epochs")
    print(f"  petalnet step {petalnet_step * 1e3:.1f} ms, bare torch_xla loop {bare_step * 1e3:.1f} ms")
    print(f"  graphs compiled {result['graphs_compiled']} ({result['compiled_after_step_3']} after step 3: "
          f"validation), {result['compile_seconds']:.1f} s compiling; aten fallbacks: {result['fallbacks'] or 'none'}")
    print(f"ratio {ratio:.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
