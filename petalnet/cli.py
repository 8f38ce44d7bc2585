"""petalnet: train, evaluate and serve flower classifiers on competition TFRecords.

One subcommand per job; bad input is one error line and a non-zero exit.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
import warnings

from petalnet.errors import OptionError, PetalnetError
from petalnet.parser import build_parser


def _progress():
    """tqdm on a terminal, nothing otherwise (logs stay one line per event)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm
    return lambda it, **kw: tqdm(it, leave=False, **kw)


def cmd_inspect(args) -> int:
    from petalnet.data.summary import inspect
    report, problems = inspect(args.data if len(args.data) > 1 else args.data[0], image_size=args.image_size,
                               verify_all=args.verify, grid=args.grid, augment=args.augment, as_json=args.json,
                               skip_bad=args.skip_bad, progress=_progress(), image_key=args.image_key,
                               label_key=args.label_key, id_key=args.id_key)
    print(report)
    return 1 if problems else 0


def cmd_convert(args) -> int:
    from petalnet.data.convert import convert_any
    written = convert_any(args.image_dir, args.out, args.size, val_fraction=args.val_fraction, seed=args.seed,
                          quality=args.quality, shard_size=args.shard_size, force=args.force,
                          progress=_progress())   # which checks every option (commands.ConvertOptions)
    for split, paths in written.items():
        print(f"{split}: {len(paths)} file(s) in {os.path.dirname(paths[0])}")
    return 0


def cmd_classes(args) -> int:
    from petalnet.classes import CLASSES
    for i, name in enumerate(CLASSES):
        print(f"{i:>3} {name}")
    return 0


def cmd_demo(args) -> int:
    from petalnet.demo import demo
    demo(args.out, image_size=args.image_size, epochs=args.epochs, seed=args.seed, force=args.force,
         quiet=args.quiet, workers=args.workers)
    return 0


def _config_from_args(args, exclude=(), say: bool = True):
    """The recipe's TrainConfig with the options given on the command line on top; ``--recipe auto``
    picks the recipe by the hardware found (and says which, when ``say``)."""
    from petalnet.config import TrainConfig
    from petalnet.recipes import config_for
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"recipe", *exclude}
    return config_for(args.recipe, say=functools.partial(print, flush=True) if say else None,
                      **{k: v for k, v in vars(args).items() if k in fields})


def cmd_train(args) -> int:
    started = time.perf_counter()   # --budget counts from here: the imports below take seconds on a busy machine
    # a line before torch, timm and Fabric load (seconds on a busy machine): the run has started
    print(f"petalnet train: {'resuming ' + args.resume if args.resume else 'run folder ' + str(getattr(args, 'out', None))}",
          flush=True)
    from petalnet.api import run_training   # the same as petalnet.train's
    from petalnet.config import TrainConfig
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"recipe"}
    summary, folder, stopped = run_training(args.recipe, {k: v for k, v in vars(args).items() if k in fields},
                                            resume=args.resume, say=functools.partial(print, flush=True),
                                            started=started)
    if stopped:
        print(f"petalnet: {stopped}; continue with: petalnet train --resume {folder}", file=sys.stderr)
        return 130
    if summary.get("global_rank", 0) == 0 and summary.get("best_val_macro_f1") is not None:
        print(f"best val macro-F1 {summary['best_val_macro_f1']:.4f} (accuracy {summary['best_val_accuracy']:.4f}) "
              f"at epoch {summary['best_epoch']}; run folder: {folder}")
    return 0


def cmd_schedule(args) -> int:
    from petalnet.config import SCHEDULE_FIELDS, ScheduleOptions, TrainConfig
    o = ScheduleOptions.pick(vars(args)).check()
    from petalnet.optim import lr_schedule
    from petalnet.plots import plot_schedule
    schedule = lr_schedule(TrainConfig(**{k: getattr(o, k) for k in SCHEDULE_FIELDS}), o.replicas)
    for e in range(o.epochs + 1):
        print(f"epoch {e:>3}: lr {schedule(e):.3e}")
    if o.plot:
        plot_schedule(schedule, o.steps_per_epoch, o.plot)
        print(f"plot: {o.plot}")
    return 0


def _inference_options(args):
    """predict's or evaluate's declarations (``commands.PredictOptions``, ``EvaluateOptions``)."""
    from petalnet.commands import EvaluateOptions, PredictOptions
    return PredictOptions if args.command == "predict" else EvaluateOptions


def _predictors(args):
    """The models named on the command line, on ``args.device`` (resolved: set to a torch.device), once
    every option passed its declaration."""
    _inference_options(args).pick(vars(args)).check()
    from petalnet.predict import load_predictor, resolve_device
    args.device = resolve_device(args.device)
    return [load_predictor(m, args.device) for m in [args.model, *(args.ensemble or [])]]


def _split(args, labeled: bool | None, predictors):
    from petalnet.predict import inference_split
    return inference_split(args.data, args.split, _inference_options(args).default_split, image_size=args.image_size, labeled=labeled,
                           skip_bad=args.skip_bad, image_key=args.image_key, label_key=args.label_key,
                           id_key=args.id_key, model_size=predictors[0].image_size)


def cmd_evaluate(args) -> int:
    from petalnet.evaluate import SUMMARY_KEYS, default_out, evaluate_split, format_evaluation
    predictors = _predictors(args)
    name, ds = _split(args, None, predictors)
    out = args.out or default_out(args.model, name)
    result = evaluate_split(predictors, ds, name, out, data=args.data, label_key=args.label_key,
                            batch_size=args.batch_size, tta=args.tta, weights=args.ensemble_weights,
                            workers=args.workers, progress=_progress(), device=args.device, precision=args.precision,
                            tta_margin=args.tta_margin)
    if args.json:
        print(json.dumps({k: result[k] for k in SUMMARY_KEYS} | {"per_class": result["per_class"]}, indent=1))
    else:
        print(format_evaluation(name, result, out))
    return 0


def cmd_predict(args) -> int:
    from petalnet.predict import format_top_k, submit, top_k, tta_mode
    predictors = _predictors(args)
    if args.photos:
        results = top_k(predictors, args.photos, k=args.top_k, tta=args.tta, weights=args.ensemble_weights,
                        device=args.device, precision=args.precision, tta_margin=args.tta_margin)
        answers, errors = format_top_k(results, args.json)
        if answers:
            print(answers)
        for line in errors:
            print(f"petalnet: error: {line}", file=sys.stderr)
        return 1 if errors else 0
    if not args.data:
        raise PetalnetError("predict needs --data DATA (a split to submit) or photo files")
    name, ds = _split(args, False, predictors)
    ids = submit(predictors, ds, args.output, probs_path=args.probs, batch_size=args.batch_size, tta=args.tta,
                 weights=args.ensemble_weights, workers=args.workers, progress=_progress(), device=args.device,
                 precision=args.precision, tta_margin=args.tta_margin)
    print(f"{args.output}: {len(ids)} rows (split '{name}', TTA {tta_mode(args.tta, predictors)}"
          + (f", ensemble of {len(predictors)}" if len(predictors) > 1 else "") + ")")
    return 0


def cmd_compare(args) -> int:
    from petalnet.commands import CompareOptions
    CompareOptions.pick(vars(args)).check()
    from petalnet.compare import compare, format_table, train_models
    runs = list(args.runs)
    if args.train:
        runs += train_models(_config_from_args(args, exclude=("model", "out")), args.models, args.out)
    rows = compare(runs, args.out, data=args.data, split=args.split, progress=_progress())
    print(format_table(rows))
    print(f"wrote {args.out}/compare.json, curves.png, per_class_f1.png, report.html")
    return 0


def cmd_report(args) -> int:
    from petalnet.commands import ReportOptions
    ReportOptions.pick(vars(args)).check()
    from petalnet.evaluate import format_evaluation
    from petalnet.report import report_run
    page, evaluated = report_run(args.run, args.output or os.path.join(args.run, "report.html"), args.eval, args.data)
    if evaluated:
        print(format_evaluation("val", evaluated, os.path.join(args.run, "eval-val")))
    print(page)
    return 0


def cmd_serve(args) -> int:
    from petalnet.serve.app import serve
    serve(args.model, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb, max_batch=args.max_batch,
          max_decode_mb=args.max_decode_mb, decode_threads=args.decode_threads,
          precision=args.precision)   # which checks every option (commands.ServeOptions)
    return 0


def cmd_export(args) -> int:
    from petalnet.commands import ExportOptions
    ExportOptions.pick(vars(args)).check()
    from petalnet.onnx_export import export_onnx
    print(f"wrote {export_onnx(args.model, args.output)}")
    return 0


COMMANDS = {"demo": cmd_demo, "inspect": cmd_inspect, "convert": cmd_convert, "train": cmd_train,
            "evaluate": cmd_evaluate, "predict": cmd_predict, "compare": cmd_compare, "report": cmd_report,
            "serve": cmd_serve, "export": cmd_export, "schedule": cmd_schedule, "classes": cmd_classes}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = lambda msg, *a, **k: print(f"petalnet: warning: {msg}", file=sys.stderr)
            return COMMANDS[args.command](args)
    except PetalnetError as e:
        from petalnet.data.mirror import named   # a remote file's local copy: the URL is what to name
        print(f"petalnet: error: {named(str(e))}", file=sys.stderr)
        return 2 if isinstance(e, OptionError) else 1
    except OSError as e:   # permissions, full disk, missing folders: the OS names the file
        print(f"petalnet: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("petalnet: interrupted", file=sys.stderr)
        return 130
