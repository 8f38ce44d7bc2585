"""Reading the training split from a bucket (issue 29): petals-mini train served by
../shared/bench/slow_bucket.py (20 ms a request, started and stopped here on a free loopback port),
2 decoding threads, a shuffled epoch of uint8 batches of 64.

- old: the random-access path (``TFRecordImages`` over fsspec: an index scan of every file, then each
  record read where the sampler points);
- new: streaming (``streaming.StreamedImages``: counts from the file names, each shard read front to
  back in large range requests, shuffled by interleaving and a bounded block).
For each: bytes transferred / bytes in the split, requests, seconds from opening the data to the first
batch, img/s of the epoch; the new path's img/s against the same reader on the local files, epochs
alternated (best of 3 each: the machine is shared). The last line is the issue's figure.

    python benchmarks/bench_stream.py
"""
import glob
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
SHARED = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared")
PETALS = os.path.join(SHARED, "data", "petals-mini")
SPLIT = "tfrecords-jpeg-192x192/train"
os.environ.setdefault("PETALNET_CACHE", tempfile.mkdtemp(prefix="bench-stream-"))   # no index from earlier runs

from petalnet.data.dataset import TFRecordImages  # noqa: E402
from petalnet.data.loader import WithIndex, create_loader  # noqa: E402
from petalnet.data.streaming import StreamedImages  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Bucket:
    def __init__(self, delay: float):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, os.path.join(SHARED, "bench", "slow_bucket.py"), PETALS,
                                      str(self.port), str(delay)])
        self.url = f"http://127.0.0.1:{self.port}"
        while True:
            try:
                self.stats()
                return
            except OSError:
                time.sleep(0.05)

    def stats(self):
        with urllib.request.urlopen(self.url + "/_stats") as r:
            return json.load(r)


def epoch(open_dataset, seed: int = 0, workers: int = 0):
    """(seconds to the first batch, from opening; img/s of the epoch; images). ``workers``: 2 worker
    processes instead of 2 threads (the old path's fsspec file per reader is not safe across threads)."""
    t0 = time.perf_counter()
    ds = open_dataset()
    loader = create_loader(WithIndex(ds), 64, shuffle=True, seed=seed, threads=0 if workers else 2,
                           num_workers=workers, pad=True)
    loader.sampler.set_epoch(seed)
    t1, first, n = time.perf_counter(), None, 0
    for images, _, _ in loader:
        first = first or time.perf_counter() - t0
        n += len(images)
    return first, n / (time.perf_counter() - t1), n


def main():
    local = sorted(glob.glob(os.path.join(PETALS, SPLIT, "*.tfrec")))
    split = sum(os.path.getsize(p) for p in local)
    bucket = Bucket(0.02)
    try:
        remote = [f"{bucket.url}/{SPLIT}/{os.path.basename(p)}" for p in local]
        rates = {"remote": [], "local": []}
        for seed in (1, 2, 3):   # the same reader, local and remote epochs alternated
            rates["local"].append(epoch(lambda: StreamedImages(local, image_size=192, labeled=True), seed)[1])
            rates["remote"].append(epoch(lambda: StreamedImages(remote, image_size=192, labeled=True), seed)[1])
        print(f"new path img/s: remote {', '.join(f'{r:.0f}' for r in rates['remote'])}; "
              f"local {', '.join(f'{r:.0f}' for r in rates['local'])}")
        results = {}
        # the old path last: its worker processes are forked from this process and its fsspec session
        for name, make, workers in (("new", lambda: StreamedImages(remote, image_size=192, labeled=True), 0),
                                    ("old", lambda: TFRecordImages(remote, image_size=192, labeled=True), 2)):
            s0 = bucket.stats()
            first, rate, n = epoch(make, workers=workers)
            s1 = bucket.stats()
            b, r = s1["bytes"] - s0["bytes"], s1["requests"] - s0["requests"]
            results[name] = (b / split, first, rate)
            print(f"{name} path: {n} images, {b / 1e6:.1f} MB transferred = {b / split:.2f}x the split "
                  f"({split / 1e6:.1f} MB), {r} requests, first batch {first:.2f} s, {rate:.0f} img/s", flush=True)
        ratio = max(rates["remote"]) / max(rates["local"])
        b, f, _ = results["new"]
        print(f"stream: bytes/split {b:.2f}, first batch {f:.2f} s, img/s ratio to local {ratio:.2f}")
    finally:
        bucket.proc.terminate()
        bucket.proc.wait()


if __name__ == "__main__":
    main()
