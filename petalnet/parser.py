"""The command line's grammar, generated from the option declarations (``commands``, ``config.TrainConfig``,
``config.ScheduleOptions``): ``add_options`` is the one place an argument is added. Building it imports no
torch (``--help`` is instant); ``cli`` dispatches."""
from __future__ import annotations

import argparse
import dataclasses

from petalnet import __version__, commands as c
from petalnet.config import RUN, ScheduleOptions, TrainConfig
from petalnet.options import ARG, MAIN
from petalnet.recipes import RECIPES

DESCRIPTION = "petalnet: train, evaluate and serve flower classifiers on competition TFRecords."

EXAMPLES = """examples:
  petalnet demo                                    # built-in synthetic flowers, no download
  petalnet inspect DATA --verify                   # DATA: a folder of tfrecords-jpeg-SxS/, a split, a glob
  petalnet inspect DATA --json
  petalnet train --data DATA --out runs/lite0      # the recipe for the hardware found
  petalnet convert my_photos/ out/ --size 224 --val-fraction 0.2
"""


# name, help, description, the option classes (TrainConfig with how add_options shows it)
COMMANDS = (
    ("demo", "train on the built-in synthetic flowers (no download): the main job", None, (c.DemoOptions,)),
    ("inspect", "count, check and picture a TFRecord dataset",
     "DATA: the folder holding tfrecords-jpeg-SxS/, one tfrecords-jpeg-SxS folder, a split folder, a glob or a "
     "file; local or an fsspec URL (gs://, s3://, https://).", (c.InspectOptions,)),
    ("convert", "turn a class-per-folder image tree into competition TFRecords, or resize TFRecords",
     "IMAGE_DIR/<class>/*.jpg, where <class> is a competition class name (daisy, common_tulip) or index (48), "
     "becomes OUT/tfrecords-jpeg-SxS/{train,val}/NN-SxS-COUNT.tfrec. When IMAGE_DIR holds competition "
     "TFRecords instead, every split is re-encoded at --size with its ids and labels.", (c.ConvertOptions,)),
    ("train", "transfer learning on competition TFRecords, on any accelerator",
     "Fine-tune an ImageNet backbone with a new head. Writes RUN_DIR with config.json, history.jsonl, "
     "summary.json, checkpoints/{last,best}.pt, curves.png, lr.png.", (c.TrainCommand, (TrainConfig, ()))),
    ("evaluate", "accuracy, macro-F1, per-class table, confusion matrix, examples",
     "Evaluate a run (or checkpoint, or --ensemble of them) on a labelled split. Writes OUT/metrics.json, "
     "confusion.png, examples.png.", (c.EvaluateOptions,)),
    ("predict", "submission.csv for a split, or the top species for photos",
     "With --data: one id,label row per image of the split (default test), written atomically. With photo "
     "files: the top-k species of each.", (c.PredictOptions,)),
    ("compare", "several runs side by side: table, curves, per-class F1, HTML report",
     "Compare finished runs on a labelled split (each run's own data, or --data). With --train --models a b c "
     "--data DATA, train each with the same options first.", (c.CompareOptions, (TrainConfig, (RUN,)))),
    ("report", "one self-contained HTML page for a run",
     "Config, curves, LR, metrics, per-class table, confusion matrix and examples (evaluating on the run's "
     "val split first when that was not done).", (c.ReportOptions,)),
    ("serve", "a local web page and JSON API that name the flower in a photo",
     "Serves / (upload page), POST /api/predict (multipart field 'file'), GET /api/health and the OpenAPI "
     "schema at /openapi.json; logs one line per request (client, method, path, status, ms) on stderr.",
     (c.ServeOptions,)),
    ("export", "export a run for deployment without PyTorch (ONNX)", None, (c.ExportOptions,)),
    ("schedule", "print and plot the learning-rate schedule train's options give, before training", None,
     (ScheduleOptions,)),
    ("classes", "list the 104 competition class names with their indices", None, (c.ClassesOptions,)),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="petalnet", description=DESCRIPTION,
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(parser, c.ProgramOptions)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    shown = dataclasses.asdict(TrainConfig(**RECIPES["default"]))   # train's help shows the default recipe's
    for name, help_, description, classes in COMMANDS:
        p = sub.add_parser(name, help=help_, description=description)
        for cls in classes:
            if isinstance(cls, tuple):   # TrainConfig: an option not given keeps the recipe's value
                add_options(p, cls[0], shown=shown, exclude_groups=cls[1])
            else:
                add_options(p, cls)
        p.set_defaults(command=name)
    return parser


def add_options(parser: argparse.ArgumentParser, cls, *, shown: dict | None = None, exclude_groups=()) -> None:
    """One argument per field of ``cls`` that has a group (``options.option``), in its group. ``shown``:
    leave defaults out of the parsed arguments (``argparse.SUPPRESS``), so an option not given is absent
    and the recipe's value stands; the help calls ``shown``'s values the defaults."""
    groups = {ARG: parser, MAIN: parser}
    for f in dataclasses.fields(cls):
        meta, group = f.metadata, f.metadata.get("group")
        if not group or group in exclude_groups:
            continue
        g = groups.get(group) or groups.setdefault(group, parser.add_argument_group(group))
        kw = dict(meta["kw"])
        if group == ARG:
            g.add_argument(f.name, help=meta["help"] or None, **kw)
            continue
        flag = meta["flag"] or "--" + f.name.replace("_", "-")
        if kw.get("action") == "version":
            g.add_argument(flag, action="version", version=f"petalnet {__version__}", help=meta["help"])
            continue
        default = _default(f) if shown is None else shown.get(f.name, _default(f))
        help_ = _help(meta, default)
        dest = dict(dest=f.name, default=argparse.SUPPRESS if shown is not None else default)
        if meta["negate"]:
            g.add_argument(meta["negate"], action="store_false", help=meta["negate_help"] or help_, **dest)
        if not meta["negate"] or kw.get("action"):
            g.add_argument(flag, help=help_, **dest, **kw)


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _help(meta, default) -> str | None:
    """The help, with the default where it says something: not for flags, required options or None."""
    help_ = meta["help"]
    if help_ == argparse.SUPPRESS or meta["negate"] or meta["kw"].get("action") or meta["kw"].get("required") \
            or default is None or meta["group"] == RUN:
        return help_ or None
    return f"{help_} (default: {default})" if help_ else f"(default: {default})"
