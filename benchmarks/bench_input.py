"""Input pipeline images/s: read + CRC check + decode + random flip into uint8 batches.

Runs petalnet's loader over a split (default: petals-mini train) with 0, 1, 2 workers, then the
peer tf.data pipeline (../shared/bench/peer_tfdata.py) in the same run when --peer names a Python
that can import TensorFlow. Same protocol as the peer: one warm-up pass, then timed passes.

Loaders: DataLoader with 0/1/2 worker processes (flip per image in the worker), and petalnet's
ThreadedLoader with 2/3 threads (whole batches per thread, JPEGs decoded straight into the batch,
a random half mirrored while being copied out of the decoder's buffer).

usage: python benchmarks/bench_input.py [--data DIR] [--workers 0,1,2] [--threads 2,3] [--peer PYTHON_WITH_TF]
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import time

from torchvision.transforms import v2

from petalnet.data.dataset import open_split
from petalnet.data.loader import create_loader

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared")
DEFAULT_DATA = os.path.join(SHARED, "data", "petals-mini", "tfrecords-jpeg-192x192", "train")
PEER = os.path.join(SHARED, "bench", "peer_tfdata.py")


def petalnet_rate(data: str, workers: int, batch: int, passes: int, threads: int = 0) -> float:
    if threads:
        ds = open_split(data)
        loader = create_loader(ds, batch, shuffle=True, num_workers=0, threads=threads, flip=True)
    else:
        ds = open_split(data, transform=v2.RandomHorizontalFlip())
        loader = create_loader(ds, batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0)
    for _ in loader:   # warm-up pass: workers started, page cache warm
        pass
    n, t = 0, time.perf_counter()
    for epoch in range(passes):
        loader.sampler.set_epoch(epoch + 1)
        for images, _ in loader:
            n += len(images)
    return n / (time.perf_counter() - t)


def peer_rate(python: str, data: str, batch: int, passes: int) -> float | None:
    out = subprocess.run([python, PEER, data, str(passes), str(batch)], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    m = re.search(r"= (\d+) img/s", out.stdout)
    if not m:
        print(f"peer failed: {out.stderr.strip()[-500:]}")
        return None
    return float(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA, help="a split folder of .tfrec files")
    ap.add_argument("--workers", default="0,1,2", help="comma-separated DataLoader worker counts")
    ap.add_argument("--threads", default="2,3", help="comma-separated ThreadedLoader thread counts ('' for none)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--peer", metavar="PYTHON", help="a Python that can import tensorflow, to run the peer")
    args = ap.parse_args()
    print(f"data: {args.data}, batch {args.batch}, {args.passes} timed passes, {os.cpu_count()} CPUs")
    rates = {}
    for w in map(int, filter(None, args.workers.split(","))):
        rates[f"{w} worker process(es)"] = r = petalnet_rate(args.data, w, args.batch, args.passes)
        print(f"petalnet, {w} worker(s): {r:.0f} img/s", flush=True)
    for t in map(int, filter(None, args.threads.split(","))):
        rates[f"{t} threads"] = r = petalnet_rate(args.data, 0, args.batch, args.passes, threads=t)
        print(f"petalnet, {t} threads: {r:.0f} img/s", flush=True)
    best_w = max(rates, key=rates.get)
    ours = rates[best_w]
    peer = peer_rate(args.peer, args.data, args.batch, args.passes) if args.peer else None
    if peer:
        print(f"petalnet {ours:.0f} img/s ({best_w}), tf.data {peer:.0f} img/s, ratio {ours / peer:.2f}")
        from record import record
        record("input-vs-tfdata", f"Input pipeline vs tf.data (read, CRC, decode, flip into uint8 batches of "
               f"{args.batch}, {args.data}, petalnet's best: {best_w})", round(ours), "img/s", peer=round(peer),
               peer_label="tf.data", ratio=round(ours / peer, 2))
    else:
        print(f"petalnet {ours:.0f} img/s ({best_w}); tf.data not run "
              "(pass --peer PYTHON_WITH_TF, e.g. a venv with tensorflow-cpu)")


if __name__ == "__main__":
    main()
