"""`petalnet predict` throughput on petals-mini test (503 images): images/s of the whole predict pass
(read, decode, preprocess, model, softmax) after one warm-up pass, for bf16 and fp32 PyTorch and
the same model exported to ONNX (onnxruntime), no TTA.

usage: python benchmarks/bench_predict.py [RUN_DIR] [--data PETALS_MINI] [--batch 64] [--workers 1]
Without RUN_DIR, a 1-epoch `linear` run of tf_efficientnet_lite0 at 192 px is trained first (the
speed does not depend on how well it was trained).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "data", "petals-mini")


def rate(predictors, ds, batch: int, workers: int, precision: str) -> float:
    from petalnet.predict import predict_dataset
    predict_dataset(predictors, ds, batch_size=batch, workers=workers, precision=precision, tta="none")
    t = time.perf_counter()
    probs, _ = predict_dataset(predictors, ds, batch_size=batch, workers=workers, precision=precision, tta="none")
    return len(probs) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
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
        print(f"{p.model_name} at {p.image_size}px, {len(ds)} test images, batch {args.batch}, "
              f"{args.workers} loader worker(s), {os.cpu_count()} CPUs", flush=True)
        rows = [("PyTorch bf16 autocast", rate([p], ds, args.batch, args.workers, "auto")),
                ("PyTorch fp32", rate([p], ds, args.batch, args.workers, "32"))]
        onnx = os.path.join(tmp, "model.onnx")
        subprocess.run([sys.executable, "-m", "petalnet", "export", run, "--output", onnx], check=True,
                       stdout=subprocess.DEVNULL)
        rows.append(("onnxruntime (petalnet export)", rate([load_predictor(onnx)], ds, args.batch, args.workers, "32")))
    for name, r in rows:
        print(f"{name}: {r:.0f} img/s")


if __name__ == "__main__":
    main()
