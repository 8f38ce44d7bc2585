"""The command line's grammar: every subcommand's options (the training options generated from
``config.TrainConfig``). Building it imports no torch (``--help`` is instant); ``cli`` dispatches."""
from __future__ import annotations

import argparse
import dataclasses

from petalnet import __version__

DESCRIPTION = "petalnet: train, evaluate and serve flower classifiers on competition TFRecords."

EXAMPLES = """examples:
  petalnet demo                                    # built-in synthetic flowers, no download
  petalnet inspect DATA --verify                   # DATA: a folder of tfrecords-jpeg-SxS/, a split, a glob
  petalnet inspect DATA --json
  petalnet train --data DATA --out runs/lite0      # the recipe for the hardware found
  petalnet convert my_photos/ out/ --size 224 --val-fraction 0.2
"""


def data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-key", default="image", help="feature holding the JPEG bytes (default: image)")
    p.add_argument("--label-key", default="class", help="feature holding the int64 label (default: class)")
    p.add_argument("--id-key", default="id", help="feature holding the image id (default: id)")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip bad records (bad checksums, truncation, missing or mistyped features, classes "
                        "outside 0..103, corrupt images; counted in a warning) instead of failing")


def train_args(p: argparse.ArgumentParser, exclude_groups=()) -> None:
    """Training options, generated from TrainConfig (``config.add_train_options``). Their defaults come
    from the recipe (--recipe, default 'auto': by the hardware): an option not given is absent from the parsed
    arguments, so the recipe's value stands."""
    from petalnet.config import TrainConfig, add_train_options
    from petalnet.recipes import RECIPES
    p.add_argument("--recipe", default="auto", choices=["auto", *RECIPES],
                   help="preset of the options below, which override it: auto (the recipe that wins on the "
                        "hardware found: default on a CPU or TPU, finetune on a GPU), default (partial "
                        "fine-tune of Lite0, the best found on a CPU), tutorial (the competition notebook: "
                        "frozen VGG16, Adam, its schedule), linear (head on frozen features), finetune (every "
                        "layer, affine augmentation). Values shown as default are the default recipe's")
    add_train_options(p, dataclasses.asdict(TrainConfig(**RECIPES["default"])), exclude_groups)


def predict_args(p: argparse.ArgumentParser, default_split: str) -> None:
    from petalnet.config import TTA_MARGIN
    p.add_argument("model", metavar="RUN_DIR|CHECKPOINT", help="a run folder (its best checkpoint) or a .pt file")
    p.add_argument("--data", help="DATA in any layout `petalnet inspect` takes")
    p.add_argument("--split", help=f"split to use (default: {default_split}, or the only one)")
    p.add_argument("--image-size", type=int, help="the stored tfrecords-jpeg-SxS size to read (not stored: the "
                                                   "nearest above, else the largest, said in one line); the model "
                                                   "runs at its own size. Default: of several, the model's")
    p.add_argument("--tta", nargs="?", const="full", choices=["none", "flip", "full"],
                   help="average predictions over views: none, flip (the image and its mirror), full (and a "
                        "centre zoom; bare --tta). Default: what the run was validated with (its config's tta)")
    p.add_argument("--tta-margin", type=float, default=TTA_MARGIN, metavar="M",
                   help="run the TTA views beyond the image itself only for images whose two likeliest classes "
                        f"are less than M apart in probability; 1: for every image (default: {TTA_MARGIN})")
    p.add_argument("--ensemble", nargs="+", metavar="RUN", help="more runs or checkpoints to average with")
    p.add_argument("--ensemble-weights", nargs="+", type=float, metavar="W",
                   help="one weight per model (the first, then --ensemble's), default equal")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, help="loader processes decoding JPEGs (default: on a CPU none, one "
                                                "loader thread; on a GPU up to 8)")
    p.add_argument("--device", default="auto", help="where the model runs: auto (a CUDA GPU if visible, else the "
                                                    "CPU), cpu, cuda, cuda:N (default: auto)")
    precision_arg(p)
    p.set_defaults(default_split=default_split)
    data_args(p)


def precision_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", default="auto", choices=["auto", "32", "bf16"],
                   help="auto: bf16 autocast on a CUDA GPU, and on a CPU with native bf16 (AMX/AVX512-BF16) for "
                        "a model trained in bf16, else float32; 32: the exported ONNX model's labels exactly "
                        "(default: auto)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="petalnet", description=DESCRIPTION,
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
    p.set_defaults(command="demo")


def _add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="count, check and picture a TFRecord dataset",
                       description="DATA: the folder holding tfrecords-jpeg-SxS/, one tfrecords-jpeg-SxS folder, "
                                   "a split folder, a glob or a file; local or an fsspec URL (gs://, s3://, https://).")
    p.add_argument("data", nargs="+", metavar="DATA")
    p.add_argument("--image-size", type=int, help="pick tfrecords-jpeg-SxS when DATA holds several sizes (not "
                                                   "stored: the nearest above, else the largest, said in one line)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--verify", action="store_true",
                   help="read every record, check every checksum and decode every image")
    p.add_argument("--grid", metavar="FILE.png", help="write a grid of sample images titled with their classes")
    p.add_argument("--augment", nargs="?", const="affine=1,color=0.2,cutout=0.15", metavar="SPEC",
                   help="with --grid: each sample beside augmented copies, as training draws them. SPEC: "
                        "comma-separated name=value of affine, rrc, color, cutout, mixup, cutmix (the train "
                        "options of those names); bare --augment: affine=1,color=0.2,cutout=0.15")
    data_args(p)
    p.set_defaults(command="inspect")


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
    p.set_defaults(command="convert")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="transfer learning on competition TFRecords, on any accelerator",
                       description="Fine-tune an ImageNet backbone with a new head. Writes RUN_DIR with config.json, "
                                   "history.jsonl, summary.json, checkpoints/{last,best}.pt, curves.png, lr.png.")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its last checkpoint, with the "
                                                        "options it was started with")
    train_args(p)
    p.set_defaults(command="train")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="accuracy, macro-F1, per-class table, confusion matrix, examples",
                       description="Evaluate a run (or checkpoint, or --ensemble of them) on a labelled split. "
                                   "Writes OUT/metrics.json, confusion.png, examples.png.")
    predict_args(p, "val")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--out", metavar="DIR", help="where to write (default: RUN_DIR/eval-SPLIT)")
    p.set_defaults(command="evaluate")


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="submission.csv for a split, or the top species for photos",
                       description="With --data: one id,label row per image of the split (default test), "
                                   "written atomically. With photo files: the top-k species of each.")
    predict_args(p, "test")
    p.add_argument("photos", nargs="*", metavar="PHOTO", help="image files (any size, JPEG/PNG/WebP/...)")
    p.add_argument("--output", default="submission.csv", help="submission file (default: submission.csv)")
    p.add_argument("--probs", metavar="FILE.npz", help="also save the probabilities (and ids)")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--json", action="store_true", help="photos: print the answers as JSON")
    p.set_defaults(command="predict")


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
    train_args(p, exclude_groups=("run",))
    p.set_defaults(command="compare")


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="one self-contained HTML page for a run",
                       description="Config, curves, LR, metrics, per-class table, confusion matrix and examples "
                                   "(evaluating on the run's val split first when that was not done).")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--output", help="HTML file (default: RUN_DIR/report.html)")
    p.add_argument("--eval", metavar="DIR", help="an evaluate --out folder (default: RUN_DIR/eval-val)")
    p.add_argument("--data", help="DATA to evaluate on (default: the run's)")
    p.set_defaults(command="report")


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="a local web page and JSON API that name the flower in a photo",
                       description="Serves / (upload page), POST /api/predict (multipart field 'file'), "
                                   "GET /api/health and the OpenAPI schema at /openapi.json; logs one line per "
                                   "request (client, method, path, status, ms) on stderr.")
    p.add_argument("model", metavar="RUN_DIR|CHECKPOINT|MODEL.onnx")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=float, default=20, help="largest upload accepted (default: 20)")
    p.add_argument("--max-batch", type=int, default=16, help="requests answered by one forward pass at most")
    p.add_argument("--max-decode-mb", type=float, default=128,
                   help="memory that decoding one uploaded image may take, in MiB; a larger one is refused with "
                        "413 (default: 128; a JPEG is decoded at reduced scale where the model's size allows)")
    p.add_argument("--decode-threads", type=int, default=2,
                   help="images decoded at once (default: 2): decodes take at most this x --max-decode-mb")
    precision_arg(p)
    p.set_defaults(command="serve")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a run for deployment without PyTorch (ONNX)")
    p.add_argument("model", metavar="RUN_DIR|CHECKPOINT")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--output", required=True, metavar="MODEL.onnx")
    p.set_defaults(command="export")


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
    p.set_defaults(command="schedule")


def _add_classes(sub) -> None:
    p = sub.add_parser("classes", help="list the 104 competition class names with their indices")
    p.set_defaults(command="classes")
