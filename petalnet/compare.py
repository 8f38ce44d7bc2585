"""``petalnet compare``: the tutorial's closing study, several runs side by side (optionally trained first)."""
from __future__ import annotations

import os
import time

from petalnet.atomic import write_json
from petalnet.classes import CLASSES
from petalnet.data.dataset import open_split
from petalnet.errors import OptionError, PetalnetError
from petalnet.outputs import same_file
from petalnet.predict import check_labels, evaluation, load_predictor, predict_dataset
from petalnet.rundir import read_finished


def compare(runs: list[str], out: str, *, data: str | None = None, split: str = "val", progress=None) -> list[dict]:
    """Table rows per run; writes OUT/compare.json, curves.png, per_class_f1.png, report.html."""
    from petalnet.plots import plot_compare_curves, plot_per_class_f1
    from petalnet.report import compare_report
    if not runs:
        raise PetalnetError("compare needs run folders (or --train --models ...)")
    finished = [read_finished(run) for run in runs]   # every run folder checked before anything is written
    for run in runs:   # its curves.png and report.html would be replaced
        if same_file(out, run):
            raise OptionError(f"--out {out} is the run folder {run}, one of those compared: writing there would "
                              "replace its files; choose another --out")
    os.makedirs(out, exist_ok=True)
    rows, histories, per_class = [], {}, {}
    for run, (summary, history, config) in zip(runs, finished):
        name = os.path.basename(os.path.abspath(run))
        predictor = load_predictor(run)
        ds = open_split(data or config["data"], split, image_size=predictor.image_size)   # several stored: the run's
        labels, _ = ds.metadata()
        check_labels(predictor.num_classes, labels, f"{data or config['data']} ({split})")
        warm_up(predictor, ds)
        t0 = time.perf_counter()
        probs, targets = predict_dataset([predictor], ds, progress=progress)
        seconds = time.perf_counter() - t0
        ev = evaluation(probs, targets)
        rows.append({"run": name, "model": summary["model"], "parameters": summary.get("parameters"),
                     "image_size": summary["image_size"], "epochs": summary["epochs"],
                     "best_val_macro_f1": summary.get("best_val_macro_f1"),
                     "best_val_accuracy": summary.get("best_val_accuracy"),
                     # the run's wall time, caching included (older runs: their epochs' time)
                     "train_seconds": summary.get("wall_seconds", summary["train_seconds"]),
                     "train_images_per_second": summary["train_images_per_second"],
                     "inference_images_per_second": len(ds) / seconds,
                     "eval_macro_f1": ev["macro_f1"], "eval_accuracy": ev["accuracy"]})
        histories[name] = history
        per_class[name] = {r["class"]: r["f1"] for r in ev["per_class"] if r["support"] > 0}
    curves = plot_compare_curves(histories, os.path.join(out, "curves.png"))
    bars = plot_per_class_f1(per_class, CLASSES, os.path.join(out, "per_class_f1.png"))
    write_json({"runs": rows, "per_class_f1": {k: {str(c): v for c, v in s.items()} for k, s in per_class.items()}},
               os.path.join(out, "compare.json"))
    compare_report(rows, [(curves, "Training curves"), (bars, f"Per-class F1 on {split}")],
                   os.path.join(out, "report.html"))
    return rows


def warm_up(predictor, ds, images: int = 16) -> None:
    """One untimed batch before the timed pass: the CPU copy of the model is prepared (batch norm
    folded, bf16) and the threads and allocator are warm, so "infer/s" is the rate of a full pass
    rather than a figure that includes one-off set-up."""
    import torch

    from petalnet.predict import predict_batches
    batch = torch.stack([ds.load(i)[0] for i in range(min(images, len(ds)))])
    for _ in predict_batches([predictor], [(batch, None)]):
        pass


def format_table(rows: list[dict]) -> str:
    head = (f"{'run':<20} {'model':<24} {'params':>10} {'size':>5} {'ep':>3} {'val F1':>7} {'val acc':>7} "
            f"{'train s':>8} {'train/s':>8} {'infer/s':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['run'][:20]:<20} {r['model'][:24]:<24} {r['parameters'] or 0:>10,} {r['image_size']:>5} "
                     f"{r['epochs']:>3} {r['best_val_macro_f1'] or 0:>7.4f} {r['best_val_accuracy'] or 0:>7.4f} "
                     f"{r['train_seconds']:>8.0f} {r['train_images_per_second']:>8.0f} "
                     f"{r['inference_images_per_second']:>8.0f}")
    return "\n".join(lines)


def train_models(base, models: list[str], out: str) -> list[str]:
    """``compare --train``: train each of ``models`` with the options of ``base`` (a TrainConfig) into
    OUT/<model>; returns the run folders."""
    import dataclasses

    from petalnet.engine import train
    os.makedirs(out, exist_ok=True)
    runs = []
    for model in models:
        run = os.path.join(out, model)
        print(f"training {model} -> {run}")
        train(dataclasses.replace(base, model=model, out=run))
        runs.append(run)
    return runs
