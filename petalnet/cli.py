"""petalnet: train, evaluate and serve flower classifiers on competition TFRecords.

One subcommand per job; bad input is one error line and a non-zero exit.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from petalnet import __version__
from petalnet.errors import OptionError, PetalnetError

EXAMPLES = """examples:
  petalnet demo                                    # built-in synthetic flowers, no download
  petalnet inspect ../shared/data/petals-mini --verify
  petalnet inspect DATA --json
  petalnet convert my_photos/ out/ --size 224 --val-fraction 0.2
"""


def _progress():
    """tqdm on a terminal, nothing otherwise (logs stay one line per event)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm
    return lambda it, **kw: tqdm(it, leave=False, **kw)


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-key", default="image", help="feature holding the JPEG bytes (default: image)")
    p.add_argument("--label-key", default="class", help="feature holding the int64 label (default: class)")
    p.add_argument("--id-key", default="id", help="feature holding the image id (default: id)")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip records with bad checksums or truncation (counted in a warning) instead of failing")


def cmd_inspect(args) -> int:
    from petalnet.data.discovery import discover
    from petalnet.data.summary import format_summary, open_splits, sample_grid, summarize, verify
    src = discover(args.data if len(args.data) > 1 else args.data[0], args.image_size)
    datasets = open_splits(src, image_key=args.image_key, label_key=args.label_key, id_key=args.id_key,
                           skip_bad=args.skip_bad, use_cache=not args.verify)
    summary = summarize(src, datasets)
    problems = verify(datasets, skip_bad=args.skip_bad, progress=_progress()) if args.verify else []
    if args.augment and not args.grid:
        raise PetalnetError("--augment draws into the --grid FILE.png: give both")
    if args.grid:
        name = next((n for n, d in datasets.items() if d.labeled), next(iter(datasets)))
        if args.augment:
            from petalnet.data.summary import augment_grid, parse_augment
            augment_grid(datasets[name], args.grid, parse_augment(args.augment),
                         title=f"{name}: {args.augment}")
        else:
            sample_grid(datasets[name], args.grid, title=f"{name} ({summary['image_size']} px)")
    if args.json:
        if args.verify:
            summary["verified"] = {"problems": problems}
        print(json.dumps(summary, indent=1))
    else:
        print(format_summary(src.root, summary))
        if args.verify:
            print(f"verified {sum(len(d) for d in datasets.values())} records: "
                  + (f"{len(problems)} problem(s)" if problems else "all checksums and images good"))
        for p in problems:
            print(f"  bad: {p}")
        if args.grid:
            print(f"grid: {args.grid}")
    return 1 if problems else 0


def cmd_convert(args) -> int:
    from petalnet.data.convert import convert, resize_records
    from petalnet.data.discovery import discover
    try:
        discover(args.image_dir)
        records = True
    except PetalnetError:
        records = False
    if records:   # TFRecords in: same splits, ids and labels, new size
        written = resize_records(args.image_dir, args.out, args.size, quality=args.quality,
                                 shard_size=args.shard_size, force=args.force, progress=_progress())
    else:
        written = convert(args.image_dir, args.out, args.size, val_fraction=args.val_fraction, seed=args.seed,
                          quality=args.quality, shard_size=args.shard_size, force=args.force, progress=_progress())
    for split, paths in written.items():
        print(f"{split}: {len(paths)} file(s) in {os.path.dirname(paths[0])}")
    return 0


def cmd_classes(args) -> int:
    from petalnet.classes import CLASSES
    for i, name in enumerate(CLASSES):
        print(f"{i:>3} {name}")
    return 0


def cmd_demo(args) -> int:
    """The main job on built-in data: generate drawn flowers, check them, train, leave a run folder."""
    from petalnet.data.discovery import discover
    from petalnet.data.summary import format_summary, open_splits, sample_grid, summarize, verify
    from petalnet.data.synthetic import synthetic_data
    from petalnet.train import TrainConfig, train
    root = synthetic_data(args.image_size, seed=args.seed)
    print(f"synthetic flowers: {root}")
    src = discover(root)
    datasets = open_splits(src)
    summary = summarize(src, datasets)
    verify(datasets, skip_bad=False)
    print(format_summary(src.root, summary))
    result = train(TrainConfig(data=root, out=args.out, epochs=args.epochs, seed=args.seed, force=args.force,
                               quiet=args.quiet, workers=args.workers))
    grid = sample_grid(datasets["train"], os.path.join(args.out, "train_samples.png"), title="synthetic train")
    from petalnet.atomic import write_json
    write_json({"data": root, **summary}, os.path.join(args.out, "data.json"))
    print(f"val macro-F1 {result['best_val_macro_f1']:.4f}, accuracy {result['best_val_accuracy']:.4f}; "
          f"run folder {args.out}: summary.json, history.jsonl, curves.png, lr.png, checkpoints/, {os.path.basename(grid)}")
    return 0


def _train_args(p: argparse.ArgumentParser) -> None:
    """Training options. Their defaults come from the recipe (--recipe, default 'default'): an option
    not given is absent from the parsed arguments, so the recipe's value stands."""
    from petalnet.config import TrainConfig
    from petalnet.recipes import RECIPES
    d = TrainConfig(**RECIPES["default"])
    first = len(p._actions)
    p.add_argument("--recipe", default="default", choices=list(RECIPES),
                   help="preset of the options below, which override it: default (partial fine-tune of "
                        "Lite0, the best found), tutorial (the competition notebook: frozen VGG16, Adam, its "
                        "schedule), linear (head on frozen features), finetune (every layer, affine "
                        "augmentation; for GPUs). Values shown as default are the default recipe's")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=d.model, help=f"any timm model name (default: {d.model}); vgg16 gets the "
                   "tutorial's head: conv base, global average pooling, one dense layer")
    g.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                   help="random init (default: ImageNet weights from timm's hub, or a packaged offline copy)")
    g.add_argument("--weights", metavar="FILE", help="initial weights: state dict, .safetensors or checkpoint "
                   "(lukemelas EfficientNet naming is remapped)")
    g.add_argument("--num-classes", type=int, default=d.num_classes, help="head outputs (default: 104)")
    g.add_argument("--freeze-backbone", action="store_true", default=True,
                   help="train the head only: the tutorial's recipe and the default")
    g.add_argument("--fine-tune", dest="freeze_backbone", action="store_false", help="train every layer")
    g.add_argument("--freeze-epochs", type=int, default=0, metavar="K",
                   help="train the head for K epochs, then every layer")
    g.add_argument("--unfreeze-from", type=int, metavar="STAGE",
                   help=f"train backbone stages STAGE.. and the head, keep the stem and earlier stages frozen "
                        f"(EfficientNet-family models; default: {d.unfreeze_from})")
    g.add_argument("--no-cache-frozen", dest="cache_frozen", action="store_false",
                   help="with --unfreeze-from or a head-only run (--freeze-backbone): run the frozen stages or "
                        "backbone every step instead of once per image and mirror (the cache is skipped anyway "
                        "when other augmentations are on or memory is short)")
    g.add_argument("--head-lr-scale", type=float, help=f"the head's LR as a multiple of --lr (default: {d.head_lr_scale})")
    g = p.add_argument_group("optimisation")
    g.add_argument("--image-size", type=int, help="train/eval size, resized on the device (default: the data's)")
    g.add_argument("--epochs", type=int, default=d.epochs, help=f"(default: {d.epochs})")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help=f"per device (default: {d.batch_size}); "
                   "the global batch is this x devices x nodes")
    g.add_argument("--lr", type=float, help="peak learning rate, used as given; default: 1e-3 (cosine) or 5e-5 "
                   "(competition) x replicas, the tutorial's LR_MAX = 5e-5 * replicas rule")
    g.add_argument("--lr-schedule", default=d.lr_schedule, choices=["cosine", "competition", "constant"])
    g.add_argument("--warmup-epochs", type=float, help="cosine warm-up / competition ramp-up (default: min(1, epochs/3) / 5)")
    g.add_argument("--lr-start", type=float, default=d.lr_start, help="LR_START (default: 1e-5)")
    g.add_argument("--min-lr", type=float, default=d.min_lr, help="LR_MIN / cosine floor (default: 1e-5)")
    g.add_argument("--sustain-epochs", type=float, default=d.sustain_epochs, help="competition (default: 0)")
    g.add_argument("--lr-decay", type=float, default=d.lr_decay, help="competition LR_EXP_DECAY (default: 0.8)")
    g.add_argument("--optimizer", default=d.optimizer, choices=["adamw", "adam", "sgd"])
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--label-smoothing", type=float, default=d.label_smoothing, help="(default: 0.1)")
    g.add_argument("--train-on-val", action="store_true", help="train on train + val: a final model for a "
                   "submission (no validation; the last epoch is kept)")
    g.add_argument("--tta", choices=["none", "flip", "full"],
                   help=f"views averaged at validation, and by predict/evaluate unless they say otherwise: none, "
                        f"flip (image and mirror), full (also a centre zoom) (default: {d.tta})")
    g = p.add_argument_group("augmentation (on the device, per sample)")
    g.add_argument("--no-flip", dest="flip", action="store_false", help="no random horizontal flips")
    g.add_argument("--affine", type=float, metavar="S", help="Deotte's random affine at strength S (1: rotation "
                   "N(0,15deg), shear N(0,5deg), zoom 1+N(0,0.1) per axis, shift N(0,16px at 512px)); 0 = off")
    g.add_argument("--rrc", type=float, metavar="AREA", help="random resized crop keeping AREA..1 of the image "
                   "(e.g. 0.35); 0 = off")
    g.add_argument("--color", type=float, metavar="J", help="brightness and saturation x U(1-J, 1+J); 0 = off")
    g.add_argument("--cutout", type=float, metavar="F", help="one square hole of side F x image size; 0 = off")
    g.add_argument("--mixup", type=float, metavar="ALPHA", help="MixUp with Beta(ALPHA, ALPHA) (timm); 0 = off")
    g.add_argument("--cutmix", type=float, metavar="ALPHA", help="CutMix with Beta(ALPHA, ALPHA) (timm); with "
                   "--mixup, one of the two per batch; 0 = off")
    g = p.add_argument_group("reproducibility")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--deterministic", action="store_true", help="deterministic algorithms (reproducible, slower)")
    g = p.add_argument_group("hardware")
    g.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu", "cuda", "tpu", "mps"])
    g.add_argument("--devices", type=int, default=1, help="processes on this machine; >1 runs DDP (default: 1)")
    g.add_argument("--num-nodes", type=int, default=1, help="machines (under torchrun or SLURM)")
    g.add_argument("--precision", default="auto", choices=["auto", "32", "bf16-mixed", "16-mixed"],
                   help="auto: bf16 autocast where the CPU/GPU supports it, else 32")
    g.add_argument("--workers", type=int, help="DataLoader workers per device (default: 1 on CPU, "
                   "CPUs / GPUs on GPU)")
    g.add_argument("--decode", default=d.decode, choices=["cpu", "gpu"],
                   help="where JPEGs are decoded: cpu (loader workers, libjpeg-turbo) or gpu (batched nvJPEG; "
                        "workers only read records) (default: cpu)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (first steps slower)")
    g.add_argument("--max-steps", type=int, help=argparse.SUPPRESS)
    for action in p._actions[first:]:
        if action.dest != "recipe":
            action.default = argparse.SUPPRESS


def _config_from_args(args, exclude=()):
    """The recipe's TrainConfig with the options given on the command line on top."""
    import dataclasses

    from petalnet.config import TrainConfig
    from petalnet.recipes import recipe_config
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"recipe", *exclude}
    given = {k: v for k, v in vars(args).items() if k in fields}
    if "freeze_backbone" in given and "unfreeze_from" not in given:   # --fine-tune / --freeze-backbone win
        given["unfreeze_from"] = None
    return recipe_config(args.recipe, **given)


def cmd_train(args) -> int:
    from petalnet.train import Stop, train
    cfg = _config_from_args(args)
    try:
        summary = train(cfg, resume=args.resume)
    except Stop as e:
        print(f"petalnet: {e}; continue with: petalnet train --resume {args.resume or args.out}", file=sys.stderr)
        return 130
    if summary.get("global_rank", 0) == 0 and summary.get("best_val_macro_f1") is not None:
        print(f"best val macro-F1 {summary['best_val_macro_f1']:.4f} (accuracy {summary['best_val_accuracy']:.4f}) "
              f"at epoch {summary['best_epoch']}; run folder: {args.resume or args.out}")
    return 0


def cmd_schedule(args) -> int:
    from petalnet.plots import plot_schedule
    from petalnet.schedules import check_options
    from petalnet.train import TrainConfig, _lr_schedule
    check_options(args.epochs, args.steps_per_epoch, args.replicas)
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, lr_schedule=args.lr_schedule, warmup_epochs=args.warmup_epochs,
                      lr_start=args.lr_start, min_lr=args.min_lr, sustain_epochs=args.sustain_epochs,
                      lr_decay=args.lr_decay)
    schedule = _lr_schedule(cfg, args.replicas)
    for e in range(args.epochs + 1):
        print(f"epoch {e:>3}: lr {schedule(e):.3e}")
    if args.plot:
        plot_schedule(schedule, args.steps_per_epoch, args.plot)
        print(f"plot: {args.plot}")
    return 0


def _predictors(args):
    """The models named on the command line, on ``args.device`` (resolved: set to a torch.device)."""
    from petalnet.predict import check_options, load_predictor, resolve_device
    check_options(args.batch_size, getattr(args, "top_k", 5), args.ensemble_weights, 1 + len(args.ensemble or []),
                  args.workers)
    args.device = resolve_device(args.device)
    return [load_predictor(m, args.device) for m in [args.model, *(args.ensemble or [])]]


def _split(args, labeled: bool | None):
    from petalnet.data.dataset import TFRecordImages
    from petalnet.data.discovery import discover
    src = discover(args.data, args.image_size)
    name = args.split or (next(iter(src.splits)) if len(src.splits) == 1 else args.default_split)
    ds = TFRecordImages(src.split(name), image_size=src.image_size, labeled=labeled, skip_bad=args.skip_bad,
                        image_key=args.image_key, label_key=args.label_key, id_key=args.id_key)
    return name, ds


def cmd_evaluate(args) -> int:
    from petalnet.classes import CLASSES
    from petalnet.plots import plot_confusion, prediction_grid
    from petalnet.predict import check_labels, evaluation, predict_dataset, tta_mode
    predictors = _predictors(args)
    name, ds = _split(args, None)
    if not ds.labeled:
        raise PetalnetError(f"{args.data}: split '{name}' is unlabelled (no '{args.label_key}' feature): "
                            "evaluate needs labels; use `petalnet predict` for a submission")
    labels, _ = ds.metadata()
    check_labels(predictors[0].num_classes, labels, f"{args.data} ({name})")
    out = args.out or (os.path.join(args.model, f"eval-{name}") if os.path.isdir(args.model) else f"eval-{name}")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise PetalnetError(f"{out}: its parent folder does not exist")
    probs, targets = predict_dataset(predictors, ds, batch_size=args.batch_size, tta=args.tta,
                                     weights=args.ensemble_weights, workers=args.workers, progress=_progress(),
                                     device=args.device)
    result = evaluation(probs, targets)
    os.makedirs(out, exist_ok=True)
    from petalnet.atomic import write_json
    report = {k: v for k, v in result.items() if k != "confusion_matrix"}
    write_json({**report, "split": name, "models": [p.name for p in predictors],
                "tta": tta_mode(args.tta, predictors)},
               os.path.join(out, "metrics.json"))
    plot_confusion(result["confusion_matrix"], CLASSES, os.path.join(out, "confusion.png"),
                   title=f"{name}: accuracy {result['accuracy']:.3f}, macro-F1 {result['macro_f1']:.3f}")
    preds = probs.argmax(1)
    wrong = [i for i in range(len(ds)) if preds[i] != targets[i]]
    right = [i for i in range(len(ds)) if preds[i] == targets[i]]
    picks = sorted(wrong[:12] + right[: 24 - min(len(wrong), 12)])
    prediction_grid([ds.load(i)[0] for i in picks], [int(targets[i]) for i in picks], [int(preds[i]) for i in picks],
                    CLASSES, os.path.join(out, "examples.png"), title=f"{name}: right (green) and wrong (red)")
    if args.json:
        print(json.dumps({k: report[k] for k in ("accuracy", "macro_f1", "macro_precision", "macro_recall",
                                                  "images")} | {"per_class": report["per_class"]}, indent=1))
    else:
        print(f"{name}: {result['images']} images, accuracy {result['accuracy']:.4f}, macro-F1 {result['macro_f1']:.4f}, "
              f"macro precision {result['macro_precision']:.4f}, macro recall {result['macro_recall']:.4f}")
        print(f"  {'class':<32} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}")
        for row in result["per_class"]:
            print(f"  {row['class']:>3} {row['name']:<28} {row['precision']:>9.3f} {row['recall']:>7.3f} "
                  f"{row['f1']:>7.3f} {row['support']:>8}")
        print(f"wrote {out}/metrics.json, confusion.png, examples.png")
    return 0


def cmd_predict(args) -> int:
    import numpy as np

    from petalnet.predict import predict_dataset, top_k, tta_mode, write_submission
    predictors = _predictors(args)
    if args.photos:
        failed = 0
        results = top_k(predictors, args.photos, k=args.top_k, tta=args.tta, weights=args.ensemble_weights,
                        device=args.device)
        if args.json:
            print(json.dumps([{"file": p, "error": str(r)} if isinstance(r, Exception) else
                              {"file": p, "top": [{"label": c, "name": n, "probability": v} for c, n, v in r]}
                              for p, r in results], indent=1))
        for path, r in results:
            if isinstance(r, Exception):
                failed += 1
                print(f"petalnet: error: {r}", file=sys.stderr)
            elif not args.json:
                print(f"{path}: " + ", ".join(f"{n} ({c}) {v:.3f}" for c, n, v in r))
        return 1 if failed else 0
    if not args.data:
        raise PetalnetError("predict needs --data DATA (a split to submit) or photo files")
    for path in filter(None, (args.output, args.probs)):   # fail before the slow part, not after it
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise PetalnetError(f"{path}: folder {os.path.dirname(os.path.abspath(path))} does not exist")
    name, ds = _split(args, False)
    _, ids = ds.metadata()
    probs, _ = predict_dataset(predictors, ds, batch_size=args.batch_size, tta=args.tta,
                               weights=args.ensemble_weights, workers=args.workers, progress=_progress(),
                               device=args.device)
    if args.probs:
        from petalnet.atomic import atomic_path
        with atomic_path(args.probs, ".npz") as tmp:
            np.savez(tmp, probs=probs.astype(np.float32), ids=np.asarray(ids))
    write_submission(args.output, ids, probs.argmax(1))
    print(f"{args.output}: {len(ids)} rows (split '{name}', TTA {tta_mode(args.tta, predictors)}"
          + (f", ensemble of {len(predictors)}" if len(predictors) > 1 else "") + ")")
    return 0


def cmd_compare(args) -> int:
    import dataclasses

    from petalnet.compare import compare, format_table
    from petalnet.train import train
    runs = list(args.runs)
    if args.train:
        if not (args.models and args.data):
            raise PetalnetError("compare --train needs --models NAME [NAME ...] and --data DATA")
        os.makedirs(args.out, exist_ok=True)
        base = _config_from_args(args, exclude=("model", "out"))
        for model in args.models:
            run = os.path.join(args.out, model)
            print(f"training {model} -> {run}")
            train(dataclasses.replace(base, model=model, out=run))
            runs.append(run)
    rows = compare(runs, args.out, data=args.data, split=args.split, progress=_progress())
    print(format_table(rows))
    print(f"wrote {args.out}/compare.json, curves.png, per_class_f1.png, report.html")
    return 0


def cmd_report(args) -> int:
    from petalnet.report import run_report
    eval_dir = args.eval or os.path.join(args.run, "eval-val")
    out = args.output or os.path.join(args.run, "report.html")
    if not os.path.isdir(eval_dir):   # evaluate first, so the report has the confusion matrix and examples
        data = args.data
        if data is None and os.path.isfile(os.path.join(args.run, "config.json")):
            with open(os.path.join(args.run, "config.json")) as fh:
                data = json.load(fh).get("data")
        if data and main(["evaluate", args.run, "--data", data, "--out", eval_dir]) != 0:
            return 1
    print(run_report(args.run, eval_dir, out))
    return 0


def cmd_serve(args) -> int:
    from petalnet.serve.app import serve
    serve(args.model, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb, max_batch=args.max_batch)
    return 0


def cmd_export(args) -> int:
    from petalnet.onnx_export import export_onnx
    if args.format != "onnx":
        raise PetalnetError(f"--format {args.format}: only onnx is supported")
    print(f"wrote {export_onnx(args.model, args.output)}")
    return 0


def _predict_args(p: argparse.ArgumentParser, default_split: str) -> None:
    p.add_argument("model", metavar="RUN_DIR|CHECKPOINT", help="a run folder (its best checkpoint) or a .pt file")
    p.add_argument("--data", help="DATA in any layout `petalnet inspect` takes")
    p.add_argument("--split", help=f"split to use (default: {default_split}, or the only one)")
    p.add_argument("--image-size", type=int, help="pick tfrecords-jpeg-SxS when DATA holds several sizes")
    p.add_argument("--tta", nargs="?", const="full", choices=["none", "flip", "full"],
                   help="average predictions over views: none, flip (the image and its mirror), full (and a "
                        "centre zoom; bare --tta). Default: what the run was validated with (its config's tta)")
    p.add_argument("--ensemble", nargs="+", metavar="RUN", help="more runs or checkpoints to average with")
    p.add_argument("--ensemble-weights", nargs="+", type=float, metavar="W",
                   help="one weight per model (the first, then --ensemble's), default equal")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, help="loader processes decoding JPEGs (default: on a CPU none, one "
                                                "loader thread; on a GPU up to 8)")
    p.add_argument("--device", default="auto", help="where the model runs: auto (a CUDA GPU if visible, else the "
                                                    "CPU), cpu, cuda, cuda:N (default: auto)")
    p.set_defaults(default_split=default_split)
    _data_args(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="petalnet", description=__doc__.splitlines()[0] if __doc__ else None,
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"petalnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("demo", help="train on the built-in synthetic flowers (no download): the main job")
    p.add_argument("--out", default="petalnet-demo", help="run folder to write (default: petalnet-demo)")
    p.add_argument("--image-size", type=int, default=128, help="synthetic image size (default: 128)")
    p.add_argument("--epochs", type=int, default=3, help="(default: 3)")
    p.add_argument("--workers", type=int, help="DataLoader workers (default: 1 on CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("inspect", help="count, check and picture a TFRecord dataset",
                       description="DATA: the folder holding tfrecords-jpeg-SxS/, one tfrecords-jpeg-SxS folder, "
                                   "a split folder, a glob or a file; local or an fsspec URL (gs://, s3://, https://).")
    p.add_argument("data", nargs="+", metavar="DATA")
    p.add_argument("--image-size", type=int, help="pick tfrecords-jpeg-SxS when DATA holds several sizes")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--verify", action="store_true",
                   help="read every record, check every checksum and decode every image")
    p.add_argument("--grid", metavar="FILE.png", help="write a grid of sample images titled with their classes")
    p.add_argument("--augment", nargs="?", const="affine=1,color=0.2,cutout=0.15", metavar="SPEC",
                   help="with --grid: each sample beside augmented copies, as training draws them. SPEC: "
                        "comma-separated name=value of affine, rrc, color, cutout, mixup, cutmix (the train "
                        "options of those names); bare --augment: affine=1,color=0.2,cutout=0.15")
    _data_args(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("convert", help="turn a class-per-folder image tree into competition TFRecords, "
                                       "or resize TFRecords",
                       description="IMAGE_DIR/<class>/*.jpg, where <class> is a competition class name "
                                   "(daisy, common_tulip) or index (48), becomes "
                                   "OUT/tfrecords-jpeg-SxS/{train,val}/NN-SxS-COUNT.tfrec. When IMAGE_DIR holds "
                                   "competition TFRecords instead, every split is re-encoded at --size "
                                   "with its ids and labels.")
    p.add_argument("image_dir", metavar="IMAGE_DIR|DATA")
    p.add_argument("out", metavar="OUT")
    p.add_argument("--size", type=int, required=True, help="square image size in pixels (192, 224, 331, 512)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of each class put in val (default: 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the deterministic split (default: 0)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality (default: 95)")
    p.add_argument("--shard-size", type=int, default=512, help="records per file (default: 512)")
    p.add_argument("--force", action="store_true", help="replace an existing OUT/tfrecords-jpeg-SxS")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("train", help="transfer learning on competition TFRecords, on any accelerator",
                       description="Fine-tune an ImageNet backbone with a new head. Writes RUN_DIR with config.json, "
                                   "history.jsonl, summary.json, checkpoints/{last,best}.pt, curves.png, lr.png.")
    p.add_argument("--data", help="DATA in any layout `petalnet inspect` takes, with train (and val) splits")
    p.add_argument("--out", metavar="RUN_DIR", help="run folder to create")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its last checkpoint, with the options it was started with")
    p.add_argument("--force", action="store_true", help="replace an existing RUN_DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar, one line per epoch")
    _train_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="accuracy, macro-F1, per-class table, confusion matrix, examples",
                       description="Evaluate a run (or checkpoint, or --ensemble of them) on a labelled split. "
                                   "Writes OUT/metrics.json, confusion.png, examples.png.")
    _predict_args(p, "val")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--out", metavar="DIR", help="where to write (default: RUN_DIR/eval-SPLIT)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="submission.csv for a split, or the top species for photos",
                       description="With --data: one id,label row per image of the split (default test), "
                                   "written atomically. With photo files: the top-k species of each.")
    _predict_args(p, "test")
    p.add_argument("photos", nargs="*", metavar="PHOTO", help="image files (any size, JPEG/PNG/WebP/...)")
    p.add_argument("--output", default="submission.csv", help="submission file (default: submission.csv)")
    p.add_argument("--probs", metavar="FILE.npz", help="also save the probabilities (and ids)")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--json", action="store_true", help="photos: print the answers as JSON")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("compare", help="several runs side by side: table, curves, per-class F1, HTML report",
                       description="Compare finished runs on a labelled split (each run's own data, or --data). "
                                   "With --train --models a b c --data DATA, train each with the same options first.")
    p.add_argument("runs", nargs="*", metavar="RUN_DIR")
    p.add_argument("--out", default="comparison", help="folder to write (default: comparison)")
    p.add_argument("--split", default="val")
    p.add_argument("--train", action="store_true", help="train --models first, into OUT/<model>")
    p.add_argument("--models", nargs="+", metavar="NAME", help="timm model names to train with --train")
    p.add_argument("--data", help="DATA to evaluate on (and to train on with --train)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--force", action="store_true")
    _train_args(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("report", help="one self-contained HTML page for a run",
                       description="Config, curves, LR, metrics, per-class table, confusion matrix and examples "
                                   "(evaluating on the run's val split first when that was not done).")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--output", help="HTML file (default: RUN_DIR/report.html)")
    p.add_argument("--eval", metavar="DIR", help="an evaluate --out folder (default: RUN_DIR/eval-val)")
    p.add_argument("--data", help="DATA to evaluate on (default: the run's)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("serve", help="a local web page and JSON API that name the flower in a photo",
                       description="Serves / (upload page), POST /api/predict (multipart field 'file'), "
                                   "GET /api/health and the OpenAPI schema at /openapi.json (docs at /docs).")
    p.add_argument("model", metavar="RUN_DIR|CHECKPOINT|MODEL.onnx")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=float, default=20, help="largest upload accepted (default: 20)")
    p.add_argument("--max-batch", type=int, default=16, help="requests answered by one forward pass at most")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("export", help="export a run for deployment without PyTorch (ONNX)")
    p.add_argument("model", metavar="RUN_DIR|CHECKPOINT")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--output", required=True, metavar="MODEL.onnx")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("schedule", help="print and plot a learning-rate schedule before training")
    p.add_argument("--lr-schedule", default="competition", choices=["cosine", "competition", "constant"])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--lr", type=float, help="peak (default: the recipe's base x replicas)")
    p.add_argument("--replicas", type=int, default=1, help="devices x nodes (default: 1)")
    p.add_argument("--warmup-epochs", type=float)
    p.add_argument("--lr-start", type=float, default=1e-5)
    p.add_argument("--min-lr", type=float, default=1e-5)
    p.add_argument("--sustain-epochs", type=float, default=0)
    p.add_argument("--lr-decay", type=float, default=0.8)
    p.add_argument("--steps-per-epoch", type=int, default=100, help="resolution of the plot")
    p.add_argument("--plot", metavar="FILE.png")
    p.set_defaults(func=cmd_schedule)

    p = sub.add_parser("classes", help="list the 104 competition class names with their indices")
    p.set_defaults(func=cmd_classes)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = lambda msg, *a, **k: print(f"petalnet: warning: {msg}", file=sys.stderr)
            return args.func(args)
    except PetalnetError as e:
        print(f"petalnet: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, OptionError) else 1
    except OSError as e:   # permissions, full disk, missing folders: the OS names the file
        print(f"petalnet: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("petalnet: interrupted", file=sys.stderr)
        return 130
