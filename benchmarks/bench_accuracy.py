"""Accuracy per recipe on petals-mini: each trained by `petalnet train` within its own wall-clock budget,
then one table of val accuracy, val macro-F1 and minutes.

Default runs: the competition tutorial's recipe (VGG16 frozen; the offline Lite0 backbone instead when
VGG16 weights cannot be had), a linear head on frozen Lite0 features, the previous default (`fast`),
the default recipe, and the default recipe under `--budget 5m` and `--budget 20m`. After the default
run, `petalnet predict`'s pass over the test split (503 images) is timed in this process: images/s with
the run's own TTA (None: the checkpoint's), loading and preparing the model counted.
Ablations: --run "LABEL: petalnet train options" (repeatable) replaces the default runs, e.g.
  --run "default: " --run "no flips: --no-flip" --run "stage 4: --unfreeze-from 4"

usage: python benchmarks/bench_accuracy.py [--data DIR] [--budget-min 20] [--run "LABEL: OPTIONS"]...
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "data", "petals-mini")


def vgg16_weights_available() -> bool:
    from petalnet.errors import PetalnetError
    from petalnet.models import create_model
    try:
        create_model("vgg16", 104)
        return True
    except PetalnetError:
        return False


def train(data: str, out: str, options: list[str], budget_s: float) -> dict:
    cmd = [sys.executable, "-m", "petalnet", "train", "--data", data, "--out", out, "--quiet", "--force", *options]
    t = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=budget_s)
    except subprocess.TimeoutExpired:
        return {"minutes": budget_s / 60, "error": f"over its {budget_s / 60:.0f}-minute budget"}
    minutes = (time.perf_counter() - t) / 60
    if r.returncode:
        return {"minutes": minutes, "error": (r.stderr.strip().splitlines() or ["?"])[-1]}
    with open(os.path.join(out, "summary.json")) as f:
        s = json.load(f)
    return {"minutes": minutes, "val_accuracy": s["best_val_accuracy"], "val_macro_f1": s["best_val_macro_f1"],
            "best_epoch": s["best_epoch"], "epochs": s["epochs"]}


def predict_rate(run: str, data: str) -> dict:
    """images/s of predict's pass over the test split with the run's best model and its TTA, loading and
    preparing the model counted: ``--precision auto`` (bf16 on this CPU for a run trained in bf16), ``--precision
    32``, and auto with the TTA views run for every image (``--tta-margin 1``); ``agree``: the share of labels
    the default margin gives that every image's views give too."""
    from petalnet.data.dataset import open_split
    from petalnet.options import TTA_MARGIN
    from petalnet.predict import evaluation, load_predictor, predict_dataset
    ds = open_split(data, "test")
    rates, labels = {}, {}
    for key, precision, margin in (("auto", "auto", None), ("32", "32", None), ("auto, every image", "auto", 1.0)):
        t = time.perf_counter()
        probs, _ = predict_dataset([load_predictor(os.path.join(run, "checkpoints", "best.pt"))], ds, batch_size=64,
                                   precision=precision, **({} if margin is None else {"tta_margin": margin}))
        rates[key] = len(probs) / (time.perf_counter() - t)
        labels[key] = probs.argmax(1)
    rates["agree"] = float((labels["auto"] == labels["auto, every image"]).mean())
    # val as predict sees it (the default margin), against training's validation (every view)
    predictor = load_predictor(os.path.join(run, "checkpoints", "best.pt"))
    val = open_split(data, "val")
    for key, margin in (("val", TTA_MARGIN), ("val, every image", 1.0)):
        probs, targets = predict_dataset([predictor], val, batch_size=64, tta_margin=margin)
        result = evaluation(probs, targets)
        rates[key] = {"accuracy": result["accuracy"], "macro_f1": result["macro_f1"]}
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--budget-min", type=float, default=20, help="wall-clock budget of each run (default: 20)")
    ap.add_argument("--run", action="append", metavar="LABEL: OPTIONS", help="a run instead of the defaults")
    ap.add_argument("--json", metavar="FILE", help="append each result as a JSON line")
    args = ap.parse_args()
    if args.run:
        runs = [(label.strip(), shlex.split(opts)) for label, _, opts in (r.partition(":") for r in args.run)]
    else:
        tutorial = ["--recipe", "tutorial"] + ([] if vgg16_weights_available() else ["--model", "tf_efficientnet_lite0"])
        runs = [("tutorial" + ("" if len(tutorial) == 2 else " (Lite0 for VGG16)"), tutorial),
                ("linear head, frozen Lite0", ["--recipe", "linear"]),
                ("fast (the previous default)", ["--recipe", "fast"]),
                ("default (no options)", []),
                ("default, 5-minute budget", ["--budget", "5m"]),
                ("default, 20-minute budget", ["--budget", "20m"])]
    print(f"data {args.data}, {os.cpu_count()} CPUs, budget {args.budget_min:g} min per run", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, options) in enumerate(runs):
            row = {"label": label, "options": " ".join(options),
                   **train(args.data, os.path.join(tmp, f"run{i}"), options, args.budget_min * 60)}
            if options == [] and "error" not in row:
                row["predict_images_per_second"] = predict_rate(os.path.join(tmp, f"run{i}"), args.data)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")
    print("\n| recipe | options | minutes | epochs | val accuracy | val macro-F1 |\n| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "error" in r:
            print(f"| {r['label']} | `{r['options']}` | {r['minutes']:.1f} | | failed: {r['error']} | |")
        else:
            print(f"| {r['label']} | `{r['options']}` | {r['minutes']:.1f} | {r['epochs']} | {r['val_accuracy']:.4f} | "
                  f"{r['val_macro_f1']:.4f} |")
    for r in rows:
        if "predict_images_per_second" in r:
            rates = r["predict_images_per_second"]
            print(f"\npetalnet predict, test split (503 images, the run's TTA), {r['label']}: "
                  f"{rates['auto']:.0f} img/s (--precision auto), {rates['32']:.0f} img/s (--precision 32), "
                  f"{rates['auto, every image']:.0f} img/s (auto, --tta-margin 1: the views for every image; "
                  f"same labels for {rates['agree']:.1%}); val at the default margin "
                  f"{rates['val']['macro_f1']:.4f} / {rates['val']['accuracy']:.4f} (macro-F1 / accuracy; every "
                  f"image's views {rates['val, every image']['macro_f1']:.4f} / {rates['val, every image']['accuracy']:.4f})")
    write_records(rows)


def record_name(options: str) -> str:
    """``default``, ``linear``, ``default-budget-5m``: the recipe, then the other options, as a file name."""
    words = shlex.split(options)
    recipe = words[words.index("--recipe") + 1] if "--recipe" in words[:-1] else "default"
    rest = [w for i, w in enumerate(words) if w != "--recipe" and (i == 0 or words[i - 1] != "--recipe")]
    return "-".join(filter(None, re.split(r"[^a-z0-9]+", " ".join([recipe, *rest]).lower())))


def write_records(rows: list[dict]) -> None:
    """benchmarks/records/accuracy-*.json per finished run; predict-*.json for the default's predict pass."""
    from record import record
    for r in rows:
        if "error" in r:
            continue
        name = record_name(r["options"])
        record(f"accuracy-{name}", f"Accuracy: {r['label']} (`{'petalnet train ' + r['options']}`), petals-mini val".replace(" `)", "`)"),
               round(r["val_macro_f1"], 4), "macro-F1", detail=f"accuracy {r['val_accuracy']:.4f}, {r['epochs']} "
               f"epochs, {r['minutes']:.1f} min wall")
        rates = r.get("predict_images_per_second")
        if rates:
            record(f"predict-{name}", f"Predict, {r['label']}'s best.pt, petals-mini test (its TTA for the unsure "
                   "images, `--precision auto`; loading and preparing counted)", round(rates["auto"]), "img/s",
                   detail=f"{rates['32']:.0f} img/s `--precision 32`; {rates['auto, every image']:.0f} img/s with "
                          f"the views of every image (`--tta-margin 1`), same labels for {rates['agree']:.1%}; val "
                          f"{rates['val']['macro_f1']:.4f} / {rates['val']['accuracy']:.4f} macro-F1 / accuracy")


if __name__ == "__main__":
    main()
