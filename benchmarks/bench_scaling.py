"""How cost grows with image size and loader workers, on petals-mini train re-encoded at each size.

For 192 / 224 / 331 / 512 px (`petalnet convert` into a temporary folder): input pipeline images/s
(read + CRC + decode + flip into uint8 batches of 64) with 1 and 2 worker processes and 2 threads,
and `petalnet train` steady-state images/s (linear recipe: Lite0, frozen backbone, batch 32, bf16
where supported) with 1 and 2 workers.

usage: python benchmarks/bench_scaling.py [--data PETALS_MINI] [--sizes 192,224,331,512] [--steps 40]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_input import DEFAULT_DATA as _INPUT_DATA, petalnet_rate  # noqa: E402

DEFAULT_DATA = os.path.dirname(os.path.dirname(_INPUT_DATA))


def train_rate(data: str, workers: int, steps: int) -> float:
    from petalnet.recipes import recipe_config
    from petalnet.engine import train
    with tempfile.TemporaryDirectory() as out:
        # cache_frozen=False: the steps read the records (cached, they would read no images at all)
        r = train(recipe_config("linear", data=data, out=os.path.join(out, "run"), workers=workers, quiet=True,
                                max_steps=steps, cache_frozen=False))
    return r["steady_images_per_second"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--sizes", default="192,224,331,512")
    ap.add_argument("--steps", type=int, default=40, help="training steps (10 warm-up) per measurement")
    ap.add_argument("--passes", type=int, default=2)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in map(int, args.sizes.split(",")):
            subprocess.run([sys.executable, "-m", "petalnet", "convert", args.data, tmp, "--size", str(size)],
                           check=True, stdout=subprocess.DEVNULL)
            root = os.path.join(tmp, f"tfrecords-jpeg-{size}x{size}")
            split = os.path.join(root, "train")
            row = {"size": size,
                   "input 1 worker": petalnet_rate(split, 1, 64, args.passes),
                   "input 2 workers": petalnet_rate(split, 2, 64, args.passes),
                   "input 2 threads": petalnet_rate(split, 0, 64, args.passes, threads=2),
                   "train 1 worker": train_rate(root, 1, args.steps),
                   "train 2 workers": train_rate(root, 2, args.steps)}
            rows.append(row)
            print(row, flush=True)
    keys = list(rows[0])
    print("\n| " + " | ".join(keys) + " |\n|" + " --- |" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{r[k]:.0f}" for k in keys) + " |")
    from record import record
    record("scaling-image-size", f"Scaling with image size ({' / '.join(str(r['size']) for r in rows)} px): "
           "`linear` training, no cache, 1 worker, at the largest", round(rows[-1]["train 1 worker"]), "img/s",
           detail="input, 2 threads: " + " / ".join(f"{r['input 2 threads']:.0f}" for r in rows) + " img/s; train: "
                  + " / ".join(f"{r['train 1 worker']:.0f}" for r in rows) + " img/s")


if __name__ == "__main__":
    main()
