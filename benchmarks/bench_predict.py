"""`petalnet predict` throughput on petals-mini test (503 images), no TTA: images/s of the predict pass
(read, decode, preprocess, model, softmax) with the model prepared for the CPU (`petalnet/inference.py`:
batch norm folded, bf16 weights, chunks of 16), counting that preparation and not; the same pass with
the eager model under bf16 autocast (how petalnet ran before), in fp32, and exported to ONNX
(onnxruntime); and the whole `petalnet predict` command (process start, imports, model load, CSV;
`--precision auto`: bf16 for a run trained in bf16 on a CPU with native bf16, else float32). Then what
bf16 changes: labels and largest probability difference against float32 on petals-mini val (what
`--precision 32` avoids: the labels of the run's ONNX export).

usage: python benchmarks/bench_predict.py [RUN_DIR] [--data PETALS_MINI] [--batch 64] [--workers N]
Without RUN_DIR, a 1-epoch `linear` run of tf_efficientnet_lite0 at 192 px is trained first (the
speed does not depend on how well it was trained). --workers: loader processes (default: one thread).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "data", "petals-mini")


def rate(load, ds, batch: int, workers, precision: str, warm: bool = True) -> float:
    """images/s of one predict pass; ``warm``: after a first pass with the same predictor (model
    prepared, caches warm), else with a freshly loaded one (its preparation counted)."""
    from petalnet.predict import predict_dataset
    p = load()
    if warm:
        predict_dataset([p], ds, batch_size=batch, workers=workers, precision=precision, tta="none")
    else:
        predict_dataset([load()], ds, batch_size=batch, workers=workers, precision=precision, tta="none")
    t = time.perf_counter()
    probs, _ = predict_dataset([p], ds, batch_size=batch, workers=workers, precision=precision, tta="none")
    return len(probs) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int)
    args = ap.parse_args()
    from petalnet.data.dataset import open_split
    from petalnet.predict import load_predictor
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if not run:
            run = os.path.join(tmp, "run")
            subprocess.run([sys.executable, "-m", "petalnet", "train", "--data", args.data, "--out", run, "--recipe",
                            "linear", "--epochs", "1", "--image-size", "192", "--quiet"], check=True,
                           stdout=subprocess.DEVNULL)
        ds = open_split(args.data, "test")
        p = load_predictor(run)
        eager = lambda: dataclasses.replace(p, model=p.model.__call__, cpu_models={})   # noqa: E731 - not a Module: runs as is
        print(f"{p.model_name} at {p.image_size}px, {len(ds)} test images, batch {args.batch}, "
              + (f"{args.workers} loader worker(s)" if args.workers else "1 loader thread")
              + f", {os.cpu_count()} CPUs", flush=True)
        rows = [("bf16, prepared for the CPU, preparation counted", rate(lambda: load_predictor(run), ds, args.batch,
                                                                         args.workers, "bf16", warm=False)),
                ("bf16, prepared for the CPU, steady state", rate(lambda: p, ds, args.batch, args.workers, "bf16")),
                ("bf16 autocast, eager model (before)", rate(eager, ds, args.batch, args.workers, "bf16")),
                ("fp32, prepared for the CPU", rate(lambda: p, ds, args.batch, args.workers, "32"))]
        onnx = os.path.join(tmp, "model.onnx")
        subprocess.run([sys.executable, "-m", "petalnet", "export", run, "--output", onnx], check=True,
                       stdout=subprocess.DEVNULL)
        rows.append(("onnxruntime (petalnet export)",
                     rate(lambda: load_predictor(onnx), ds, args.batch, args.workers, "32")))
        cmd = [sys.executable, "-m", "petalnet", "predict", run, "--data", args.data, "--output",
               os.path.join(tmp, "submission.csv"), "--tta", "none", "--batch-size", str(args.batch)]
        t = time.perf_counter()
        subprocess.run(cmd + (["--workers", str(args.workers)] if args.workers else []), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rows.append(("`petalnet predict` command, start to end", len(ds) / (time.perf_counter() - t)))
        val = open_split(args.data, "val")
        from petalnet.predict import predict_dataset
        fp32, _ = predict_dataset([p], val, batch_size=args.batch, workers=args.workers, precision="32")
        bf16, _ = predict_dataset([p], val, batch_size=args.batch, workers=args.workers, precision="bf16")
    for name, r in rows:
        print(f"{name}: {r:.0f} img/s")
    print(f"bf16 against float32 on val (the run's TTA): {(fp32.argmax(1) != bf16.argmax(1)).sum()} of {len(fp32)} "
          f"labels differ, probabilities by up to {abs(fp32 - bf16).max():.3f}")
    write_records(dict(rows), p, len(ds), args.batch, int((fp32.argmax(1) != bf16.argmax(1)).sum()), len(fp32),
                  float(abs(fp32 - bf16).max()))


def write_records(rates: dict, p, images: int, batch: int, differ: int, val: int, most: float) -> None:
    """benchmarks/records/predict-cpu-*.json."""
    from record import record
    setting = f"{p.model_name} {p.image_size} px, petals-mini test ({images} images), batch {batch}, no TTA"
    bf16, fp32 = rates["bf16, prepared for the CPU, preparation counted"], rates["fp32, prepared for the CPU"]
    record("predict-cpu-prepared", f"CPU predict, prepared model ({setting}): `--precision bf16` against `32`",
           round(bf16), "img/s", peer=round(fp32), peer_label="`--precision 32`", ratio=round(bf16 / fp32, 2),
           detail=f"preparation counted; {rates['bf16, prepared for the CPU, steady state']:.0f} steady")
    record("predict-cpu-other", f"CPU predict, other paths ({setting})",
           round(rates["onnxruntime (petalnet export)"]), "img/s (onnxruntime)",
           detail=f"eager bf16 autocast {rates['bf16 autocast, eager model (before)']:.0f} img/s")
    record("predict-cpu-bf16-labels", f"CPU predict, bf16 against float32 labels ({p.model_name}, petals-mini val, "
           "the run's TTA)", differ, f"of {val} labels differ", detail=f"probabilities by up to {most:.3f}")
    record("predict-cpu-command", "CPU predict, the whole `petalnet predict` command (process start to CSV written)",
           round(rates["`petalnet predict` command, start to end"]), "img/s")


if __name__ == "__main__":
    main()
