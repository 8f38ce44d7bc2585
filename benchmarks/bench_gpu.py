"""Issue 5's GPU measurements in one call (about 6 minutes on an H100), one table at the end.

1. petals-mini re-encoded at 224 px (`petalnet convert`), its train files named 20 times (one long epoch);
2. input pipeline alone: uint8 batches of 256 on the GPU, decoded by 8/16 loader workers (libjpeg-turbo)
   or by nvJPEG in batches (workers only read and check records);
3. `bench_train.py` (petalnet train from TFRecords against a bare loop on in-memory tensors, same model,
   batch, bf16, channels-last) for efficientnet_b0 and tf_efficientnet_lite0, all layers trained, eager,
   with GPU decode, and compiled; each in its own process so peak GPU memory is its own.

4. `predict_dataset` on the GPU (what `petalnet predict --device auto` runs there) for Lite0.

usage: python benchmarks/bench_gpu.py [--data PETALS_MINI] [--out DIR] [--skip-compile] [--skip-input]
                                      [--only compile|predict ...]
Each line of the table is also appended to OUT/gpu.jsonl. `--only compile` is the call still owed
(two compilations take minutes: give it a call of its own).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "data", "petals-mini")


def input_rate(files: list[str], decode: str, workers: int, batch: int = 256, seconds: float = 12.0) -> float:
    """uint8 batches on the GPU per second, after 5 warm-up batches."""
    from petalnet.accel import decode_on_device
    from petalnet.data.dataset import TFRecordImages
    from petalnet.data.loader import create_loader

    ds = TFRecordImages(files, decode=decode == "cpu")
    loader = create_loader(ds, batch, shuffle=True, num_workers=workers, pin_memory=True, drop_last=True)
    dev = torch.device("cuda")
    n, t0 = 0, None
    for i, (images, _) in enumerate(loader):
        x = decode_on_device(images, dev) if isinstance(images, list) else images.to(dev, non_blocking=True)
        if i == 5:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        elif i > 5:
            n += x.shape[0]
            if time.perf_counter() - t0 > seconds:
                break
    torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def predict_rate(files: list[str], model_name: str = "tf_efficientnet_lite0", batch: int = 256) -> float:
    """images/s of ``predict_dataset`` on the GPU (bf16 autocast, default loader workers, no TTA) over
    ``files``, after a warm-up pass over the first of them; a random-init model (speed only)."""
    from petalnet.data.dataset import TFRecordImages
    from petalnet.models import create_model, normalization
    from petalnet.predict import Predictor, predict_dataset

    dev = torch.device("cuda")
    model, _ = create_model(model_name, 104, pretrained=False)
    model = model.to(dev, memory_format=torch.channels_last).eval()
    p = Predictor(model_name, model, 104, 224, *normalization(model), model_name=model_name)
    predict_dataset([p], TFRecordImages(files[:4], labeled=False), batch_size=batch, tta="none", device=dev)
    ds = TFRecordImages(files, labeled=False)
    t = time.perf_counter()
    probs, _ = predict_dataset([p], ds, batch_size=batch, tta="none", device=dev)
    return len(probs) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu-results"))
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--skip-input", action="store_true", help="skip the input-only measurements")
    ap.add_argument("--only", choices=["compile", "predict"], action="append",
                    help="run only this measurement (repeatable: --only predict --only compile)")
    args = ap.parse_args()
    if args.only:
        args.skip_input = True
    os.makedirs(args.out, exist_ok=True)
    jsonl = os.path.join(args.out, "gpu.jsonl")
    import timm
    import torchvision
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}, "
          f"{torch.cuda.get_device_name()}, {os.cpu_count()} CPUs", flush=True)

    t = time.perf_counter()
    data224 = "/tmp/petals-224"
    subprocess.run([sys.executable, "-m", "petalnet", "convert", args.data, data224, "--size", "224", "--force"],
                   check=True, stdout=subprocess.DEVNULL)
    train_dir = os.path.join(data224, "tfrecords-jpeg-224x224", "train")
    files = sorted(os.path.join(train_dir, f) for f in os.listdir(train_dir))
    print(f"converted to 224 px in {time.perf_counter() - t:.0f}s", flush=True)

    rows = []
    for decode, workers in () if args.skip_input else (("cpu", 8), ("cpu", 16), ("gpu", 4)):
        rate = input_rate(files * 10, decode, workers)
        rows.append({"what": f"input only, decode {decode}, {workers} workers", "img_s": rate})
        print(rows[-1], flush=True)
        with open(jsonl, "a") as f:
            f.write(json.dumps(rows[-1]) + "\n")

    if args.only is None or "predict" in args.only:
        rate = predict_rate(files * 4)
        rows.append({"what": f"predict_dataset, tf_efficientnet_lite0 224 px bf16 b256, {len(files) * 4} "
                             "files' images, default loader workers", "img_s": rate})
        print(rows[-1], flush=True)

    common = ["--image-size", "224", "--batch", "256", "--fine-tune", "--no-pretrained", "--repeat-data", "20",
              "--repeats", "1", "--precision", "bf16-mixed", "--data", data224, "--json", jsonl]
    runs = [["--model", "efficientnet_b0"],
            ["--model", "efficientnet_b0", "--decode", "gpu"],
            ["--model", "tf_efficientnet_lite0"]] if args.only is None else []
    if not args.skip_compile and (args.only is None or "compile" in args.only):
        runs += [["--model", "efficientnet_b0", "--compile"]]
    for extra in runs:
        t = time.perf_counter()
        compiled = "--compile" in extra
        try:
            r = subprocess.run([sys.executable, os.path.join(HERE, "bench_train.py"), *common, *extra,
                                "--steps", str(args.steps + (60 if compiled else 0))], capture_output=True, text=True,
                               timeout=380 if compiled else 150,
                               env={**os.environ, **({"TORCH_LOGS": "recompiles"} if compiled else {})})
        except subprocess.TimeoutExpired:
            print(" ".join(extra), "timed out", flush=True)
            continue
        print(" ".join(extra), f"({time.perf_counter() - t:.0f}s):", (r.stdout.strip().splitlines() or ["?"])[-1],
              flush=True)
        recompiles = [line for line in r.stderr.splitlines() if "Recompiling" in line]
        if recompiles:
            print(f"  {len(recompiles)} recompilations, first: {recompiles[0][:300]}", flush=True)
        if r.returncode:
            print(r.stderr[-2000:], flush=True)

    print("\n| what | petalnet img/s | bare img/s | ratio | peak GPU MiB (petalnet / bare) |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['what']} | {row['img_s']:.0f} | | | |")
    if not os.path.exists(jsonl):
        return
    with open(jsonl) as f:
        for line in f:
            r = json.loads(line)
            if "petalnet" in r:
                what = f"{r['model']} {r['image_size']}px b{r['batch']} {r['precision']}, decode {r['decode']}" + \
                       (", compiled" if r["compile"] else "")
                print(f"| {what} | {r['petalnet']:.0f} | {r['bare']:.0f} | {r['ratio']:.3f} | "
                      f"{r.get('peak_gpu_mib_petalnet', 0):.0f} / {r.get('peak_gpu_mib_bare', 0):.0f} |")


if __name__ == "__main__":
    main()
