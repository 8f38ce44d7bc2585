"""Every command's own options, declared once as ``options.option`` fields (training's are
``config.TrainConfig``; ``schedule``'s are ``config.ScheduleOptions``). ``parser`` generates the command line
from these classes; the entry points (``convert_any``, ``inspect``, ``demo``, ``serve``, the CLI's predict
and evaluate, ``petalnet.api``) validate their arguments with them (``Declared.check``) before anything
is read or written. Plain Python: imports only ``options``, so data/ and serve/ can use it.
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

from petalnet.errors import OptionError
from petalnet.options import (ARG, AUTO, INFERENCE_PRECISIONS, MAIN, MAX_IMAGE_SIZE, RECIPE_NAMES, SEED, TTA_MARGIN,
                              TTA_MODES, Declared, above, at_least, at_most, augment_spec, below, option)

RECORDS = "record features"
STORED_SIZE = (at_least(1), at_most(MAX_IMAGE_SIZE))   # a tfrecords-jpeg-SxS size to pick
DATA_HELP = "DATA in any layout `petalnet inspect` takes"
DEFAULT_VAL_FRACTION = 0.2   # convert: an image folder's share of each class put in val


def inference_precision():
    """predict's, evaluate's and serve's --precision (``predict.inference_precision``)."""
    return option(AUTO, "auto: bf16 autocast on a CUDA GPU, and on a CPU with native bf16 (AMX/AVX512-BF16) "
                  "for a model trained in bf16, else float32; 32: the exported ONNX model's labels exactly",
                  MAIN, choices=INFERENCE_PRECISIONS)


@dataclasses.dataclass
class ProgramOptions(Declared):
    version: None = option(None, "show petalnet's version and exit", MAIN, action="version")


@dataclasses.dataclass
class RecordKeys(Declared):
    """The features a TFRecord's records hold (inspect, predict, evaluate)."""
    image_key: str = option("image", "feature holding the JPEG bytes", RECORDS)
    label_key: str = option("class", "feature holding the int64 label", RECORDS)
    id_key: str = option("id", "feature holding the image id", RECORDS)
    skip_bad: bool = option(False, "skip bad records (bad checksums, truncation, missing or mistyped features, "
                            "classes outside 0..103, corrupt images; counted in a warning) instead of failing",
                            RECORDS, action="store_true")


@dataclasses.dataclass
class DemoOptions(Declared):
    out: str = option("petalnet-demo", "run folder to write", MAIN)
    image_size: int = option(128, "synthetic image size", MAIN, type=int,
                             rules=(at_least(16), at_most(MAX_IMAGE_SIZE)))
    epochs: int = option(3, "", MAIN, type=int, rules=(at_least(1),))
    workers: int | None = option(None, "DataLoader workers (default: 1 on CPU)", MAIN, type=int,
                                 rules=(at_least(0),))
    seed: int = option(0, "", MAIN, type=int, rules=SEED)
    quiet: bool = option(False, "no progress bar", MAIN, action="store_true")
    force: bool = option(False, "replace an existing --out folder", MAIN, action="store_true")


@dataclasses.dataclass
class InspectOptions(RecordKeys):
    data: list | str | None = option(None, "", ARG, nargs="+", metavar="DATA")
    image_size: int | None = option(None, "pick tfrecords-jpeg-SxS when DATA holds several sizes (not stored: "
                                    "the nearest above, else the largest, said in one line)", MAIN, type=int,
                                    rules=STORED_SIZE)
    json: bool = option(False, "print the summary as JSON", MAIN, action="store_true")
    verify: bool = option(False, "read every record, check every checksum and decode every image", MAIN,
                          action="store_true")
    grid: str | None = option(None, "write a grid of sample images titled with their classes", MAIN,
                              metavar="FILE.png")
    augment: str | None = option(None, "with --grid: each sample beside augmented copies, as training draws "
                                 "them. SPEC: comma-separated name=value of affine, rrc, color, cutout, mixup, "
                                 "cutmix (the train options of those names); bare --augment: "
                                 "affine=1,color=0.2,cutout=0.15", MAIN, nargs="?",
                                 const="affine=1,color=0.2,cutout=0.15", metavar="SPEC",
                                 check=augment_spec)

    def check_together(self) -> None:
        if self.augment and not self.grid:
            raise OptionError(f"--augment {self.augment}: it draws into the --grid FILE.png: give both")


@dataclasses.dataclass
class ConvertOptions(Declared):
    image_dir: str | None = option(None, "", ARG, metavar="IMAGE_DIR|DATA")
    out: str | None = option(None, "", ARG, metavar="OUT")
    # each worker holds a size x size RGB image and its JPEG: --size 100000 was killed by the kernel at 23 GB
    size: int = option(None, "square image size in pixels (192, 224, 331, 512)", MAIN, type=int, required=True,
                       rules=(at_least(8), at_most(MAX_IMAGE_SIZE)))
    val_fraction: float | None = option(None, "share of each class of an image folder put in val (default: "
                                        f"{DEFAULT_VAL_FRACTION}; TFRecords in keep their splits)", MAIN, type=float,
                                        rules=(at_least(0), below(1)))
    seed: int = option(0, "seed of an image folder's deterministic split", MAIN, type=int, rules=SEED)
    quality: int = option(95, "JPEG quality", MAIN, type=int, rules=(at_least(1), at_most(100)))
    shard_size: int = option(512, "records per file", MAIN, type=int, rules=(at_least(1),))
    force: bool = option(False, "replace an existing OUT/tfrecords-jpeg-SxS", MAIN, action="store_true")


@dataclasses.dataclass
class InferenceOptions(RecordKeys):
    """What predict and evaluate share."""
    default_split: ClassVar[str] = "test"
    model: str | None = option(None, "a run folder (its best checkpoint) or a .pt file", ARG,
                               metavar="RUN_DIR|CHECKPOINT")
    data: str | None = option(None, DATA_HELP, MAIN)
    split: str | None = option(None, "split to use (default: test, or the only one)", MAIN)
    image_size: int | None = option(None, "the stored tfrecords-jpeg-SxS size to read (not stored: the nearest "
                                    "above, else the largest, said in one line); the model runs at its own "
                                    "size. Default: of several, the model's", MAIN, type=int, rules=STORED_SIZE)
    tta: str | None = option(None, "average predictions over views: none, flip (the image and its mirror), full "
                             "(and a centre zoom; bare --tta). Default: what the run was validated with (its "
                             "config's tta)", MAIN, nargs="?", const="full", choices=TTA_MODES)
    tta_margin: float = option(TTA_MARGIN, "run the TTA views beyond the image itself only for images whose two "
                               "likeliest classes are less than M apart in probability; 1: for every image",
                               MAIN, type=float, metavar="M", rules=(at_least(0),))
    ensemble: list | None = option(None, "more runs or checkpoints to average with", MAIN, nargs="+",
                                   metavar="RUN")
    ensemble_weights: list | None = option(None, "one weight per model (the first, then --ensemble's), default "
                                           "equal", MAIN, nargs="+", type=float, metavar="W")
    batch_size: int = option(64, "", MAIN, type=int, rules=(at_least(1),))
    workers: int | None = option(None, "loader processes decoding JPEGs (default: on a CPU none, one loader "
                                 "thread; on a GPU up to 8)", MAIN, type=int, rules=(at_least(0),))
    device: str = option("auto", "where the model runs: auto (a CUDA GPU if visible, else the CPU), cpu, cuda, "
                         "cuda:N", MAIN)
    precision: str = inference_precision()

    def check_together(self) -> None:
        check_weights(self.ensemble_weights, 1 + len(self.ensemble or []))


def check_weights(weights: list | None, models: int) -> None:
    """Ensemble weights: one finite non-negative number per model, not all zero (``nan 1`` once gave a
    submission of all-0 labels)."""
    if weights is None:
        return
    if len(weights) != models or not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0
                                         for v in weights) or sum(weights) <= 0:
        given = " ".join(f"{v:g}" if isinstance(v, (int, float)) else repr(v) for v in weights)
        raise OptionError(f"--ensemble-weights {given}: needs {models} finite non-negative number(s), one per "
                          "model, not all zero")


@dataclasses.dataclass
class EvaluateOptions(InferenceOptions):
    default_split: ClassVar[str] = "val"
    split: str | None = option(None, "split to use (default: val, or the only one)", MAIN)
    json: bool = option(False, "print the metrics as JSON", MAIN, action="store_true")
    out: str | None = option(None, "where to write (default: RUN_DIR/eval-SPLIT)", MAIN, metavar="DIR")


@dataclasses.dataclass
class PredictOptions(InferenceOptions):
    photos: list = option([], "image files (any size, JPEG/PNG/WebP/...)", ARG, nargs="*", metavar="PHOTO")
    output: str = option("submission.csv", "submission file", MAIN)
    probs: str | None = option(None, "also save the probabilities (and ids)", MAIN, metavar="FILE.npz")
    top_k: int = option(5, "", MAIN, type=int, rules=(at_least(1),))
    json: bool = option(False, "photos: print the answers as JSON", MAIN, action="store_true")


@dataclasses.dataclass
class RecipeOption(Declared):
    recipe: str = option(AUTO, "preset of the options below, which override it: auto (the recipe that wins on the "
                         "hardware found: default on a CPU or TPU, finetune on a GPU), default (partial "
                         "fine-tune of Lite0, the best found on a CPU), tutorial (the competition notebook: "
                         "frozen VGG16, Adam, its schedule), linear (head on frozen features), finetune (every "
                         "layer, affine augmentation). Values shown as default are the default recipe's", MAIN,
                         choices=(AUTO, *RECIPE_NAMES))


@dataclasses.dataclass
class TrainCommand(RecipeOption):
    """``train``'s options beside ``TrainConfig``'s."""
    resume: str | None = option(None, "continue a stopped run from its last checkpoint, with the options it was "
                                "started with", MAIN, metavar="RUN_DIR")


@dataclasses.dataclass
class CompareOptions(RecipeOption):
    runs: list = option([], "", ARG, nargs="*", metavar="RUN_DIR")
    out: str = option("comparison", "folder to write", MAIN)
    split: str = option("val", "", MAIN)
    train: bool = option(False, "train --models first, into OUT/<model>", MAIN, action="store_true")
    models: list | None = option(None, "timm model names to train with --train", MAIN, nargs="+", metavar="NAME")
    data: str | None = option(None, "DATA to evaluate on (and to train on with --train)", MAIN)
    quiet: bool = option(False, "", MAIN, action="store_true")
    force: bool = option(False, "", MAIN, action="store_true")

    def check_together(self) -> None:
        if self.train and not (self.models and self.data):
            raise OptionError("--train: needs --models NAME [NAME ...] and --data DATA")


@dataclasses.dataclass
class ReportOptions(Declared):
    run: str | None = option(None, "", ARG, metavar="RUN_DIR")
    output: str | None = option(None, "HTML file (default: RUN_DIR/report.html)", MAIN)
    eval: str | None = option(None, "an evaluate --out folder (default: RUN_DIR/eval-val)", MAIN, metavar="DIR")
    data: str | None = option(None, "DATA to evaluate on (default: the run's)", MAIN)


@dataclasses.dataclass
class ServeOptions(Declared):
    model: str | None = option(None, "", ARG, metavar="RUN_DIR|CHECKPOINT|MODEL.onnx")
    host: str = option("127.0.0.1", "address to bind (127.0.0.1: this machine only)", MAIN)
    port: int = option(8000, "", MAIN, type=int, rules=(at_least(1), at_most(65535)))
    max_upload_mb: float = option(20, "largest upload accepted", MAIN, type=float, rules=(above(0),))
    max_batch: int = option(16, "requests answered by one forward pass at most", MAIN, type=int,
                            rules=(at_least(1),))
    max_decode_mb: float = option(128, "memory that decoding one uploaded image may take, in MiB; a larger one "
                                  "is refused with 413 (a JPEG is decoded at reduced scale where the model's "
                                  "size allows)", MAIN, type=float, rules=(above(0),))
    decode_threads: int = option(2, "images decoded at once: decodes take at most this x --max-decode-mb", MAIN,
                                 type=int, rules=(at_least(1),))
    precision: str = inference_precision()


@dataclasses.dataclass
class ExportOptions(Declared):
    model: str | None = option(None, "", ARG, metavar="RUN_DIR|CHECKPOINT")
    format: str = option("onnx", "", MAIN, choices=("onnx",))
    output: str | None = option(None, "", MAIN, required=True, metavar="MODEL.onnx")


@dataclasses.dataclass
class ClassesOptions(Declared):
    pass
