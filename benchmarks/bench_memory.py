"""Peak memory (RSS) of `petalnet train` and `petalnet predict`, and of the input pipeline over the
train split named 1x and 10x (a multi-file list): decoded images are not kept, so memory must not
grow with the data.

RSS is sampled every 50 ms from /proc for the process and its loader workers: "main" is the main
process's peak, "tree" the peak of the sum over the process tree (shared library pages counted once
per process, so it overstates what the machine spends).

usage: python benchmarks/bench_memory.py [--data PETALS_MINI] [--workers 2]
"""
from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "data", "petals-mini")

PIPELINE = """
import sys, torch
from petalnet.data.dataset import TFRecordImages
from petalnet.data.loader import create_loader
files = sys.argv[1:]
loader = create_loader(TFRecordImages(files), 32, shuffle=True, num_workers=2)
n = sum(len(b[0]) for b in loader)
print(n, "images")
"""


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    out = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(stat.split("/")[2]))
        except (OSError, IndexError, ValueError):
            pass
    return out


def peak_rss(cmd: list[str]) -> dict:
    """Run ``cmd``; (peak main RSS, peak tree RSS) in MiB, seconds, and its last output line."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    main_peak = tree_peak = 0
    while proc.poll() is None:
        main = _rss_kib(proc.pid)
        tree = main + sum(_rss_kib(c) for c in _children(proc.pid))
        main_peak, tree_peak = max(main_peak, main), max(tree_peak, tree)
        time.sleep(0.05)
    out = proc.stdout.read().strip().splitlines()
    if proc.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n" + "\n".join(out[-10:]))
    return {"main_mib": main_peak / 1024, "tree_mib": tree_peak / 1024, "seconds": time.perf_counter() - t,
            "last": out[-1] if out else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    py = sys.executable
    train_files = sorted(glob.glob(os.path.join(args.data, "**", "train", "*.tfrec"), recursive=True))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run = os.path.join(tmp, "run")
        common = ["--model", "tf_efficientnet_lite0", "--image-size", "192", "--batch-size", "32",
                  "--workers", str(args.workers), "--quiet", "--force"]
        for label, data in (("train split 1x", train_files), ("train split 10x", train_files * 10)):
            r = peak_rss([py, "-c", PIPELINE, *data])
            rows.append((f"input pipeline, {label} ({r['last']}), {args.workers} workers", r))
        r = peak_rss([py, "-m", "petalnet", "train", "--data", args.data, "--out", run, "--recipe", "linear",
                      "--epochs", "1", *common])
        rows.append(("train, linear head (1 epoch + validation)", r))
        r = peak_rss([py, "-m", "petalnet", "train", "--data", args.data, "--out", run + "-default", "--epochs", "1",
                      "--quiet", "--force", "--workers", str(args.workers)])
        rows.append(("train, default recipe (cache of the frozen bottom, 224 px, 1 epoch)", r))
        r = peak_rss([py, "-m", "petalnet", "predict", run, "--data", args.data, "--split", "test",
                      "--output", os.path.join(tmp, "sub.csv"), "--batch-size", "32", "--workers", str(args.workers)])
        rows.append(("predict, petals-mini test", r))
    print("\n| what | peak RSS, main process | peak RSS, process tree | seconds |\n| --- | --- | --- | --- |")
    for label, r in rows:
        print(f"| {label} | {r['main_mib']:.0f} MiB | {r['tree_mib']:.0f} MiB | {r['seconds']:.0f} |")
    from record import record
    names = ("memory-input-1x", "memory-input-10x", "memory-train-linear", "memory-train-default", "memory-predict")
    for name, (label, r) in zip(names, rows):
        record(name, f"Memory: {label}", round(r["main_mib"]), "MiB peak RSS (main process)",
               detail=f"process tree {r['tree_mib']:.0f} MiB, {r['seconds']:.0f} s")


if __name__ == "__main__":
    main()
