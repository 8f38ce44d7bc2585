"""Input img/s from 512 px records for training at 256 px: full JPEG decode (then the resize where the
batch goes) against reduced-scale decoding (libjpeg-turbo's DCT scaling: 512 -> 256 inside the decoder,
``TFRecordImages(decode_size=256)``), in the same run.

Records: petals-mini converted to 512 px (`petalnet convert PETALS_MINI WORK --size 512`, done here
when WORK holds no 512 px records), train split. Two loaders, each with N = all cores (``--threads``):
``ThreadedLoader`` (N threads decoding straight into batches, ``load_batch``) and the DataLoader with
N worker processes (``__getitem__``). Two rates each: the loader alone (uint8 batches), and the loader
plus ``DevicePreprocess`` to a normalised 256 px batch on the device (CUDA when present, else this CPU:
the full decode then also pays the resize). Timed after 2 warm-up batches, ``--seconds`` each, over the
train files named as often as needed. Pass order alternates full/reduced, so drifts hit both.

usage: python benchmarks/bench_decode.py [--data PETALS_MINI] [--work /tmp/petals-512] [--batch 128]
       [--threads N] [--seconds 8] [--size 256] [--json FILE]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "data", "petals-mini")


def records_512(data: str, work: str) -> list[str]:
    """The train files of ``data`` converted to 512 px in ``work`` (converted once)."""
    pattern = os.path.join(glob.escape(work), "tfrecords-jpeg-512x512", "train", "*.tfrec")
    if not glob.glob(pattern):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "petalnet", "convert", data, work, "--size", "512", "--force"],
                       check=True, stdout=subprocess.DEVNULL)
        print(f"converted {data} to 512 px in {time.perf_counter() - t:.0f}s", flush=True)
    return sorted(glob.glob(pattern))


def rate(files: list[str], size: int, reduced: bool, loader_kind: str, threads: int, batch: int,
         seconds: float, prep: bool) -> float:
    from petalnet.accel import DevicePreprocess
    from petalnet.data.dataset import TFRecordImages
    from petalnet.data.loader import create_loader

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ds = TFRecordImages(files, decode_size=size if reduced else None)
    threaded = loader_kind == "threads"
    loader = create_loader(ds, batch, shuffle=True, num_workers=0 if threaded else threads,
                           threads=threads if threaded else 0, pin_memory=device.type == "cuda", drop_last=True,
                           prefetch_factor=2)
    pre = DevicePreprocess(device, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), size) if prep else None
    n, t0 = 0, None
    for i, (images, _) in enumerate(loader):
        if pre is not None:
            x = pre(images)
            assert x.shape[-1] == size
        if i == 1:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        elif i > 1:
            n += len(images)
            if time.perf_counter() - t0 > seconds:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    if t0 is None or not n:
        raise SystemExit(f"too few batches in {len(ds)} images for batch {batch}: pass more files or a smaller --batch")
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA, help="petals-mini (any size; converted to 512 px into --work)")
    ap.add_argument("--work", default="/tmp/petals-512")
    ap.add_argument("--size", type=int, default=256, help="training size (default 256: half of 512)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads / workers (default: all cores)")
    ap.add_argument("--seconds", type=float, default=8.0, help="timed seconds per measurement")
    ap.add_argument("--repeat-files", type=int, default=4, help="name the train files N times (a long epoch)")
    ap.add_argument("--loaders", default="threads,workers")
    ap.add_argument("--json", metavar="FILE", help="append each row as one JSON line")
    args = ap.parse_args(argv)
    files = records_512(args.data, args.work) * args.repeat_files
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"512 -> {args.size} px, batch {args.batch}, {args.threads} threads/workers, {os.cpu_count()} CPUs, "
          f"preprocessing on {device}", flush=True)
    rows = []
    for kind in args.loaders.split(","):
        for prep in (False, True):
            r = {}
            for reduced in (False, True) if prep else (True, False):   # alternate the order
                r[reduced] = rate(files, args.size, reduced, kind, args.threads, args.batch, args.seconds, prep)
            what = f"{kind} x{args.threads}, " + (f"+ DevicePreprocess on {device}" if prep else "loader only")
            rows.append({"what": what, "full_img_s": r[False], "reduced_img_s": r[True],
                         "speedup": r[True] / r[False], "size": args.size, "threads": args.threads,
                         "cpus": os.cpu_count(), "device": device})
            print(f"  {what}: full decode {r[False]:.0f} img/s, reduced-scale {r[True]:.0f} img/s, "
                  f"x{r[True] / r[False]:.2f}", flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(rows[-1]) + "\n")
    print(f"\n| 512 -> {args.size} px, {os.cpu_count()} CPUs | full decode img/s | reduced-scale img/s | speed-up |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['what']} | {r['full_img_s']:.0f} | {r['reduced_img_s']:.0f} | {r['speedup']:.2f} |")
    write_records(rows, args.size)
    return rows


def write_records(rows: list[dict], size: int) -> None:
    """benchmarks/records/decode-*.json: per loader, the reduced-scale decode against the full one."""
    from record import record
    for kind in dict.fromkeys(r["what"].split(" x")[0] for r in rows):
        alone, prep = (next((r for r in rows if r["what"].startswith(kind + " ") and (p in r["what"])), None)
                       for p in ("loader only", "DevicePreprocess"))
        if alone is None:
            continue
        record(f"decode-{alone['device']}-{size}-{kind}", f"Input, 512 px records -> {size} px, {alone['threads']} "
               f"{kind}: reduced-scale decode against a full decode", round(alone["reduced_img_s"]), "img/s",
               peer=round(alone["full_img_s"]), peer_label="full decode", ratio=round(alone["speedup"], 2),
               detail=f"with the resize on {prep['device']}: {prep['full_img_s']:.0f} -> {prep['reduced_img_s']:.0f} "
                      f"({prep['speedup']:.2f}x)" if prep else "")


if __name__ == "__main__":
    main()
