"""A training run's settings, each declared once: name, default, help, rules and command-line form.

Plain values, no torch import, so the CLI builds its parser fast. ``parser`` generates the ``train`` (and
``compare``) options from these fields, as litgpt builds its CLI from dataclasses; a recipe
(``petalnet.recipes``) supplies the values an option not given takes. ``ScheduleOptions``: ``petalnet
schedule``'s, eight of them these fields themselves.
"""
from __future__ import annotations

import argparse
import dataclasses

from petalnet.budget import MAX_EPOCHS
from petalnet.classes import NUM_CLASSES
from petalnet.durations import parse_duration
from petalnet.errors import OptionError
from petalnet.options import (AUGMENT_RULES, MAIN, MAX_IMAGE_SIZE, PRECISIONS, SEED, TRAIN_PRECISIONS, TTA_MODES,
                              Declared, above, at_least, at_most, below, option)

RUN, MODEL, OPT, AUG, REPRO, HW = "run", "model", "optimisation", "augmentation (on the device, per sample)", \
    "reproducibility", "hardware"


@dataclasses.dataclass
class TrainConfig(Declared):
    data: str | None = option(None, "DATA in any layout `petalnet inspect` takes, with train (and val) splits",
                              RUN)
    out: str | None = option(None, "run folder to create", RUN, metavar="RUN_DIR")
    model: str = option("tf_efficientnet_lite0", "any timm model name; vgg16 gets the tutorial's head: conv "
                        "base, global average pooling, one dense layer", MODEL)
    pretrained: bool = option(True, "random init (default: ImageNet weights from timm's hub, or a packaged "
                              "offline copy)", MODEL, negate="--no-pretrained")
    weights: str | None = option(None, "initial weights: state dict, .safetensors or checkpoint (lukemelas "
                                 "EfficientNet naming is remapped)", MODEL, metavar="FILE")
    num_classes: int = option(NUM_CLASSES, "head outputs", MODEL, type=int, rules=(at_least(1),))
    freeze_backbone: bool = option(True, "train the head only (ignored with --unfreeze-from)", MODEL,
                                   action="store_true", negate="--fine-tune", negate_help="train every layer")
    freeze_epochs: int = option(0, "train the head for K epochs, then every layer", MODEL, type=int, metavar="K",
                                rules=(at_least(0),))
    unfreeze_from: int | None = option(None, "train backbone stages STAGE.. and the head, keep the stem and "
                                       "earlier stages frozen (EfficientNet-family models)", MODEL, type=int,
                                       metavar="STAGE", rules=(at_least(0),))
    cache_frozen: bool = option(True, "with --unfreeze-from or a head-only run: run the frozen stages or "
                                "backbone every step instead of once per image and mirror (the cache is "
                                "skipped anyway when other augmentations are on or memory is short)", MODEL,
                                negate="--no-cache-frozen")
    cache_views: int = option(0, "with a cached frozen part: N augmented views of each training image cached "
                              "beside it and its mirror, drawn once by --rrc/--affine/--color/--cutout; each "
                              "epoch shows one of the 2+N per image", MODEL, type=int, metavar="N",
                              rules=(at_least(0), at_most(64)))
    head_lr_scale: float = option(1.0, "the head's LR as a multiple of --lr (layer-wise LR)", MODEL, type=float,
                                  rules=(above(0),))
    image_size: int | None = option(None, "the stored tfrecords-jpeg-SxS size to read and to train at; a size "
                                    "not stored is read from the nearest stored size above it (else the "
                                    "largest) and resized on the device, said in one line (default: the "
                                    "recipe's; without one, the data's, of several the nearest to 224 at or "
                                    "above it)", OPT,
                                    type=int, rules=(at_least(16), at_most(MAX_IMAGE_SIZE)))
    epochs: int = option(8, "(ignored with --budget)", OPT, type=int, rules=(at_least(1),))
    budget: str | float | None = option(None, "wall-clock time for the whole command (90s, 20m, 1h30m): the "
                                        "epochs that fit are planned from the speed of the first steps (at most "
                                        f"{MAX_EPOCHS}), the LR schedule is fitted to them, and the run ends in "
                                        "time with its best checkpoint; --epochs is ignored", OPT,
                                        metavar="DURATION", check=parse_duration)
    batch_size: int = option(32, "per device; the global batch is this x devices (x nodes, x TPU hosts)", OPT, type=int,
                             rules=(at_least(1),))
    lr: float | None = option(None, "peak learning rate, used as given; default: 1e-3 (cosine) or 5e-5 "
                              "(competition) x replicas, the tutorial's LR_MAX = 5e-5 * replicas rule", OPT,
                              type=float, rules=(above(0),))
    lr_schedule: str = option("cosine", "", OPT, choices=["cosine", "competition", "constant"])
    warmup_epochs: float | None = option(None, "cosine warm-up / competition ramp-up (default: min(1, "
                                         "epochs/3) / 5)", OPT, type=float, rules=(at_least(0),))
    lr_start: float = option(1e-5, "LR_START", OPT, type=float, rules=(at_least(0),))
    min_lr: float = option(1e-5, "LR_MIN / cosine floor", OPT, type=float, rules=(at_least(0),))
    sustain_epochs: float = option(0, "competition's sustain epochs", OPT, type=float, rules=(at_least(0),))
    lr_decay: float = option(0.8, "competition's LR_EXP_DECAY", OPT, type=float, rules=(above(0), at_most(1)))
    optimizer: str = option("adamw", "", OPT, choices=["adamw", "adam", "sgd"])
    weight_decay: float = option(0.01, "", OPT, type=float, rules=(at_least(0),))
    label_smoothing: float = option(0.1, "", OPT, type=float, rules=(at_least(0), below(1)))
    ema: float = option(0.0, "validate, keep (best.pt) and predict with an exponential moving average of the "
                        "trained weights, decay D per step (warmed up as TensorFlow's: min(D, (1+n)/(10+n))); "
                        "0 = off", OPT, type=float, metavar="D", rules=(at_least(0), below(1)))
    train_on_val: bool = option(False, "train on train + val: a final model for a submission (no validation; "
                                "the last epoch is kept)", OPT, action="store_true")
    tta: str = option("none", "views averaged at validation, and by predict/evaluate unless they say "
                      "otherwise: none, flip (image and mirror), full (also a centre zoom)", OPT,
                      choices=TTA_MODES)
    flip: bool = option(True, "no random horizontal flips", AUG, negate="--no-flip")
    affine: float = option(0.0, "Deotte's random affine at strength S (1: rotation N(0,15deg), shear "
                           "N(0,5deg), zoom 1+N(0,0.1) per axis, shift N(0,16px at 512px)); 0 = off", AUG,
                           type=float, metavar="S", rules=AUGMENT_RULES["affine"])
    rrc: float = option(0.0, "random resized crop keeping AREA..1 of the image (e.g. 0.35); 0 = off", AUG,
                        type=float, metavar="AREA", rules=AUGMENT_RULES["rrc"])
    color: float = option(0.0, "brightness and saturation x U(1-J, 1+J); 0 = off", AUG, type=float, metavar="J",
                          rules=AUGMENT_RULES["color"])
    cutout: float = option(0.0, "one square hole of side F x image size; 0 = off", AUG, type=float, metavar="F",
                           rules=AUGMENT_RULES["cutout"])
    mixup: float = option(0.0, "MixUp with Beta(ALPHA, ALPHA) (timm); 0 = off", AUG, type=float, metavar="ALPHA",
                          rules=AUGMENT_RULES["mixup"])
    cutmix: float = option(0.0, "CutMix with Beta(ALPHA, ALPHA) (timm); with --mixup, one of the two per "
                           "batch; 0 = off", AUG, type=float, metavar="ALPHA", rules=AUGMENT_RULES["cutmix"])
    seed: int = option(0, "", REPRO, type=int, rules=SEED)
    deterministic: bool = option(False, "deterministic algorithms (reproducible, slower)", REPRO,
                                 action="store_true")
    accelerator: str = option("auto", "", HW, choices=["auto", "cpu", "gpu", "cuda", "tpu", "mps"])
    devices: int | None = option(None, "devices on this machine: on CPUs and GPUs processes, >1 runs DDP "
                                 "(default 1); on TPUs (XLA) the devices one process trains on through SPMD "
                                 "(default: every one)", HW, type=int, rules=(at_least(1),))
    num_nodes: int = option(1, "machines (under torchrun or SLURM)", HW, type=int, rules=(at_least(1),))
    precision: str = option("auto", "auto: bf16 autocast where the CPU/GPU supports it, else 32", HW,
                            choices=TRAIN_PRECISIONS, also=tuple(PRECISIONS))
    workers: int | None = option(None, "loader worker processes (or threads, --loader threads) per device "
                                 "(default: on CPU one thread; on GPU CPUs / GPUs, at most 8)", HW, type=int,
                                 rules=(at_least(0),))
    loader: str = option("auto", "how batches are read and decoded: threads of this process (decoding straight "
                         "into the batch; pinned, reused buffers on a GPU) or worker processes; auto: one "
                         "thread on a CPU without --workers, worker processes on a GPU", HW,
                         choices=["auto", "threads", "workers"])
    decode: str = option("cpu", "where JPEGs are decoded: cpu (loader, libjpeg-turbo) or gpu (batched "
                         "nvJPEG; workers only read records)", HW, choices=["cpu", "gpu"])
    compile: bool = option(False, "torch.compile the model (first steps slower)", HW, action="store_true")
    compile_mode: str = option("default", "torch.compile's mode with --compile: reduce-overhead replays CUDA graphs "
                               "(no per-kernel launch cost on the host; a fixed batch shape)", HW,
                               choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"])
    max_steps: int | None = option(None, argparse.SUPPRESS, HW, type=int,
                                   rules=(at_least(1),))   # benchmarks, smoke tests
    train_split: str = option("train", "")
    val_split: str = option("val", "")
    quiet: bool = option(False, "no progress bar, one line per epoch", RUN, action="store_true")
    force: bool = option(False, "replace an existing RUN_DIR (only a petalnet run folder)", RUN,
                         action="store_true")
    recipe: str | None = option(None, "")   # the preset the values came from (recorded, see petalnet.recipes)

    def check_together(self) -> None:
        """``check`` (``options.Declared``) raises OptionError naming the option (``--batch-size 0: must be
        at least 1``) for the first value out of range; called before anything is written."""
        aug = self.augment()
        if self.cache_views and not (aug.geometric or aug.color or aug.cutout):
            raise OptionError(f"--cache-views {self.cache_views}: the views are drawn by --rrc, --affine, --color "
                              "or --cutout; none is on")

    def augment(self):
        from petalnet.augment import AugmentConfig   # torch: not needed to build the CLI's parser
        return AugmentConfig(self.affine, self.rrc, self.color, self.cutout, self.mixup, self.cutmix)


# ``petalnet schedule`` shows the schedule these options of train give (``optim.lr_schedule``)
SCHEDULE_FIELDS = ("lr_schedule", "epochs", "lr", "warmup_epochs", "lr_start", "min_lr", "sustain_epochs", "lr_decay")


def _schedule_field(f: dataclasses.Field):
    return f.name, f.type, dataclasses.field(default=f.default, metadata={**f.metadata, "group": MAIN})


ScheduleOptions = dataclasses.make_dataclass("ScheduleOptions", [
    *(_schedule_field(f) for f in dataclasses.fields(TrainConfig) if f.name in SCHEDULE_FIELDS),
    ("replicas", "int", option(1, "devices x nodes: the peak when --lr is not given is the base x replicas",
                               MAIN, type=int, rules=(at_least(1),))),
    ("steps_per_epoch", "int", option(100, "resolution of the plot", MAIN, type=int, rules=(at_least(1),))),
    ("plot", "str | None", option(None, "", MAIN, metavar="FILE.png"))], bases=(Declared,))
ScheduleOptions.__doc__ = "``petalnet schedule``'s options: train's schedule options (``SCHEDULE_FIELDS``) and its own."
