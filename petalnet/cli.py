"""petalnet: train, evaluate and serve flower classifiers on competition TFRecords.

One subcommand per job; bad input is one error line and a non-zero exit.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings

from petalnet import __version__
from petalnet.errors import PetalnetError

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
    from petalnet.data.convert import convert_any
    written = convert_any(args.image_dir, args.out, args.size, val_fraction=args.val_fraction, seed=args.seed,
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


def _train_args(p: argparse.ArgumentParser, exclude_groups=()) -> None:
    """Training options, generated from TrainConfig (``config.add_train_options``). Their defaults come
    from the recipe (--recipe, default 'default'): an option not given is absent from the parsed
    arguments, so the recipe's value stands."""
    from petalnet.config import TrainConfig, add_train_options
    from petalnet.recipes import RECIPES
    p.add_argument("--recipe", default="default", choices=list(RECIPES),
                   help="preset of the options below, which override it: default (partial fine-tune of "
                        "Lite0, the best found), tutorial (the competition notebook: frozen VGG16, Adam, its "
                        "schedule), linear (head on frozen features), finetune (every layer, affine "
                        "augmentation; for GPUs). Values shown as default are the default recipe's")
    add_train_options(p, dataclasses.asdict(TrainConfig(**RECIPES["default"])), exclude_groups)


def _config_from_args(args, exclude=()):
    """The recipe's TrainConfig with the options given on the command line on top."""
    from petalnet.config import TrainConfig
    from petalnet.recipes import recipe_config
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"recipe", *exclude}
    return recipe_config(args.recipe, **{k: v for k, v in vars(args).items() if k in fields})


def cmd_train(args) -> int:
    from petalnet.train import Stop, train
    cfg = _config_from_args(args)
    try:
        summary = train(cfg, resume=args.resume)
    except Stop as e:
        print(f"petalnet: {e}; continue with: petalnet train --resume {args.resume or cfg.out}", file=sys.stderr)
        return 130
    if summary.get("global_rank", 0) == 0 and summary.get("best_val_macro_f1") is not None:
        print(f"best val macro-F1 {summary['best_val_macro_f1']:.4f} (accuracy {summary['best_val_accuracy']:.4f}) "
              f"at epoch {summary['best_epoch']}; run folder: {args.resume or cfg.out}")
    return 0


def cmd_schedule(args) -> int:
    from petalnet.plots import plot_schedule
    from petalnet.config import TrainConfig
    from petalnet.optim import lr_schedule
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, lr_schedule=args.lr_schedule, warmup_epochs=args.warmup_epochs,
                      lr_start=args.lr_start, min_lr=args.min_lr, sustain_epochs=args.sustain_epochs,
                      lr_decay=args.lr_decay)
    schedule = lr_schedule(cfg, args.replicas)
    for e in range(args.epochs + 1):
        print(f"epoch {e:>3}: lr {schedule(e):.3e}")
    if args.plot:
        plot_schedule(schedule, args.steps_per_epoch, args.plot)
        print(f"plot: {args.plot}")
    return 0


def _predictors(args):
    """The models named on the command line, on ``args.device`` (resolved: set to a torch.device)."""
    from petalnet.predict import load_predictor, resolve_device
    args.device = resolve_device(args.device)
    return [load_predictor(m, args.device) for m in [args.model, *(args.ensemble or [])]]


def _split(args, labeled: bool | None):
    from petalnet.predict import inference_split
    return inference_split(args.data, args.split, args.default_split, image_size=args.image_size, labeled=labeled,
                           skip_bad=args.skip_bad, image_key=args.image_key, label_key=args.label_key,
                           id_key=args.id_key)


def cmd_evaluate(args) -> int:
    from petalnet.evaluate import SUMMARY_KEYS, default_out, evaluate_split, format_evaluation
    predictors = _predictors(args)
    name, ds = _split(args, None)
    out = args.out or default_out(args.model, name)
    result = evaluate_split(predictors, ds, name, out, data=args.data, label_key=args.label_key,
                            batch_size=args.batch_size, tta=args.tta, weights=args.ensemble_weights,
                            workers=args.workers, progress=_progress(), device=args.device)
    if args.json:
        print(json.dumps({k: result[k] for k in SUMMARY_KEYS} | {"per_class": result["per_class"]}, indent=1))
    else:
        print(format_evaluation(name, result, out))
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
    from petalnet.evaluate import format_evaluation
    from petalnet.report import report_run
    page, evaluated = report_run(args.run, args.output or os.path.join(args.run, "report.html"), args.eval, args.data)
    if evaluated:
        print(format_evaluation("val", evaluated, os.path.join(args.run, "eval-val")))
    print(page)
    return 0


def cmd_serve(args) -> int:
    from petalnet.serve.app import serve
    serve(args.model, host=args.host, port=args.port, max_bytes=int(args.max_upload_mb * 1024 * 1024),
          max_batch=args.max_batch)
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

    for add in (_add_demo, _add_inspect, _add_convert, _add_train, _add_evaluate, _add_predict, _add_compare,
                _add_report, _add_serve, _add_export, _add_schedule, _add_classes):
        add(sub)
    return parser


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="train on the built-in synthetic flowers (no download): the main job")
    p.add_argument("--out", default="petalnet-demo", help="run folder to write (default: petalnet-demo)")
    p.add_argument("--image-size", type=int, default=128, help="synthetic image size (default: 128)")
    p.add_argument("--epochs", type=int, default=3, help="(default: 3)")
    p.add_argument("--workers", type=int, help="DataLoader workers (default: 1 on CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")
    p.set_defaults(func=cmd_demo)


def _add_inspect(sub) -> None:
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


def _add_convert(sub) -> None:
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


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="transfer learning on competition TFRecords, on any accelerator",
                       description="Fine-tune an ImageNet backbone with a new head. Writes RUN_DIR with config.json, "
                                   "history.jsonl, summary.json, checkpoints/{last,best}.pt, curves.png, lr.png.")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its last checkpoint, with the "
                                                        "options it was started with")
    _train_args(p)
    p.set_defaults(func=cmd_train)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="accuracy, macro-F1, per-class table, confusion matrix, examples",
                       description="Evaluate a run (or checkpoint, or --ensemble of them) on a labelled split. "
                                   "Writes OUT/metrics.json, confusion.png, examples.png.")
    _predict_args(p, "val")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--out", metavar="DIR", help="where to write (default: RUN_DIR/eval-SPLIT)")
    p.set_defaults(func=cmd_evaluate)


def _add_predict(sub) -> None:
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


def _add_compare(sub) -> None:
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
    _train_args(p, exclude_groups=("run",))
    p.set_defaults(func=cmd_compare)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="one self-contained HTML page for a run",
                       description="Config, curves, LR, metrics, per-class table, confusion matrix and examples "
                                   "(evaluating on the run's val split first when that was not done).")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--output", help="HTML file (default: RUN_DIR/report.html)")
    p.add_argument("--eval", metavar="DIR", help="an evaluate --out folder (default: RUN_DIR/eval-val)")
    p.add_argument("--data", help="DATA to evaluate on (default: the run's)")
    p.set_defaults(func=cmd_report)


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="a local web page and JSON API that name the flower in a photo",
                       description="Serves / (upload page), POST /api/predict (multipart field 'file'), "
                                   "GET /api/health and the OpenAPI schema at /openapi.json (docs at /docs).")
    p.add_argument("model", metavar="RUN_DIR|CHECKPOINT|MODEL.onnx")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=float, default=20, help="largest upload accepted (default: 20)")
    p.add_argument("--max-batch", type=int, default=16, help="requests answered by one forward pass at most")
    p.set_defaults(func=cmd_serve)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a run for deployment without PyTorch (ONNX)")
    p.add_argument("model", metavar="RUN_DIR|CHECKPOINT")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--output", required=True, metavar="MODEL.onnx")
    p.set_defaults(func=cmd_export)


def _add_schedule(sub) -> None:
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


def _add_classes(sub) -> None:
    p = sub.add_parser("classes", help="list the 104 competition class names with their indices")
    p.set_defaults(func=cmd_classes)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = lambda msg, *a, **k: print(f"petalnet: warning: {msg}", file=sys.stderr)
            return args.func(args)
    except PetalnetError as e:
        print(f"petalnet: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:   # permissions, full disk, missing folders: the OS names the file
        print(f"petalnet: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("petalnet: interrupted", file=sys.stderr)
        return 130
