"""A training run's settings, each declared once: name, default, help and command-line form.

Plain values, no torch import, so the CLI builds its parser fast. ``add_train_options`` generates the
``train`` (and ``compare``) options from these fields, as litgpt builds its CLI from dataclasses; a
recipe (``petalnet.recipes``) supplies the values an option not given takes.
"""
from __future__ import annotations

import argparse
import dataclasses
import math

from petalnet.budget import MAX_EPOCHS
from petalnet.classes import NUM_CLASSES
from petalnet.durations import parse_duration
from petalnet.errors import OptionError

# --precision's names -> Fabric's (accel.resolve_precision); a resumed run's config holds the resolved ones
PRECISIONS = {"32": "32-true", "32-true": "32-true", "bf16-mixed": "bf16-mixed", "16-mixed": "16-mixed",
              "bf16": "bf16-mixed", "16": "16-mixed"}

# TTA's extra views (the mirror, the zoom) run only for the images whose own view is unsure: a margin below
# this between its two most probable classes. The default's model over petals-mini (val and test, 1276
# images) ran the mirror for 20 % of them and gave every label the mirror of every image gave (at 0.3:
# 99.7 %), so its flip TTA costs 1.2 forwards an image instead of 2 (benchmarks/RESULTS.md).
TTA_MARGIN = 0.5   # predict, evaluate, compare, report, serve; --tta-margin

MAX_IMAGE_SIZE = 4096   # pixels per side: a 4096 px RGB batch of 32 is 1.6 GB of uint8 before any model


def at_least(m):
    return lambda v: None if v >= m else f"must be at least {m}"


def above(m):
    return lambda v: None if v > m else f"must be greater than {m}"


def at_most(m):
    return lambda v: None if v <= m else f"must be at most {m}"


def below(m):
    return lambda v: None if v < m else f"must be less than {m}"


def check_number(flag: str, value, *rules, integer: bool = False, optional: bool = False) -> None:
    """Raise OptionError ``--flag VALUE: must be ...`` unless ``value`` is a finite number (a whole one when
    ``integer``; None when ``optional``) that every rule (``at_least(1)``...) accepts."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptionError(f"{flag} {value!r}: must be a number")
    if integer and not isinstance(value, int):
        raise OptionError(f"{flag} {value}: must be a whole number")
    if not math.isfinite(value):
        raise OptionError(f"{flag} {value}: must be a finite number")
    for rule in rules:
        problem = rule(value)
        if problem:
            raise OptionError(f"{flag} {value}: {problem}")




def option(default, help: str, group: str = "", *, flag: str | None = None, negate: str | None = None,
           rules: tuple = (), also: tuple = (), **argparse_kw):
    """A TrainConfig field and its command-line option. ``flag``: the option's name (default: the field's
    with dashes); ``negate``: a store_false option instead (``--no-flip``); no ``group``: not an option;
    ``rules``: what a number must pass (``at_least(1)``...; ``TrainConfig.check``); ``also``: values accepted
    beside ``choices`` but not offered by the command line (other spellings, a resumed run's resolved value)."""
    meta = dict(help=help, group=group, flag=flag, negate=negate, kw=argparse_kw, rules=rules, also=also)
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


RUN, MODEL, OPT, AUG, REPRO, HW = "run", "model", "optimisation", "augmentation (on the device, per sample)", \
    "reproducibility", "hardware"


@dataclasses.dataclass
class TrainConfig:
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
                                   action="store_true")
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
                                        metavar="DURATION")
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
                      choices=["none", "flip", "full"])
    flip: bool = option(True, "no random horizontal flips", AUG, negate="--no-flip")
    affine: float = option(0.0, "Deotte's random affine at strength S (1: rotation N(0,15deg), shear "
                           "N(0,5deg), zoom 1+N(0,0.1) per axis, shift N(0,16px at 512px)); 0 = off", AUG,
                           type=float, metavar="S", rules=(at_least(0),))
    rrc: float = option(0.0, "random resized crop keeping AREA..1 of the image (e.g. 0.35); 0 = off", AUG,
                        type=float, metavar="AREA", rules=(at_least(0), at_most(1)))
    color: float = option(0.0, "brightness and saturation x U(1-J, 1+J); 0 = off", AUG, type=float, metavar="J",
                          rules=(at_least(0), at_most(1)))
    cutout: float = option(0.0, "one square hole of side F x image size; 0 = off", AUG, type=float, metavar="F",
                           rules=(at_least(0), at_most(1)))
    mixup: float = option(0.0, "MixUp with Beta(ALPHA, ALPHA) (timm); 0 = off", AUG, type=float, metavar="ALPHA",
                          rules=(at_least(0),))
    cutmix: float = option(0.0, "CutMix with Beta(ALPHA, ALPHA) (timm); with --mixup, one of the two per "
                           "batch; 0 = off", AUG, type=float, metavar="ALPHA", rules=(at_least(0),))
    seed: int = option(0, "", REPRO, type=int, rules=(at_least(0), below(2 ** 32)))   # numpy seeds: 32-bit
    deterministic: bool = option(False, "deterministic algorithms (reproducible, slower)", REPRO,
                                 action="store_true")
    accelerator: str = option("auto", "", HW, choices=["auto", "cpu", "gpu", "cuda", "tpu", "mps"])
    devices: int | None = option(None, "devices on this machine: on CPUs and GPUs processes, >1 runs DDP "
                                 "(default 1); on TPUs (XLA) the devices one process trains on through SPMD "
                                 "(default: every one)", HW, type=int, rules=(at_least(1),))
    num_nodes: int = option(1, "machines (under torchrun or SLURM)", HW, type=int, rules=(at_least(1),))
    precision: str = option("auto", "auto: bf16 autocast where the CPU/GPU supports it, else 32", HW,
                            choices=["auto", "32", "bf16-mixed", "16-mixed"], also=tuple(PRECISIONS))
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

    def check(self) -> None:
        """Raise OptionError naming the option (``--batch-size 0: must be at least 1``) for the first
        value out of range; called before anything is written."""
        for f in dataclasses.fields(self):
            flag, value = f.metadata.get("flag") or "--" + f.name.replace("_", "-"), getattr(self, f.name)
            if f.metadata.get("rules"):
                kind = str(f.type)
                check_number(flag, value, *f.metadata["rules"], integer="int" in kind and "float" not in kind,
                             optional="None" in kind)
            choices = f.metadata.get("kw", {}).get("choices")
            if choices and value not in (*choices, *f.metadata.get("also", ())):   # the Python API: argparse checks the command line's
                raise OptionError(f"{flag} {value}: choose {', '.join(map(str, choices))}")
        aug = self.augment()
        if self.cache_views and not (aug.geometric or aug.color or aug.cutout):
            raise OptionError(f"--cache-views {self.cache_views}: the views are drawn by --rrc, --affine, --color "
                              "or --cutout; none is on")
        if self.budget is not None:
            parse_duration(self.budget, "--budget")

    def augment(self):
        from petalnet.augment import AugmentConfig   # torch: not needed to build the CLI's parser
        return AugmentConfig(self.affine, self.rrc, self.color, self.cutout, self.mixup, self.cutmix)


def add_train_options(parser: argparse.ArgumentParser, shown: dict, exclude_groups=()) -> None:
    """One option per TrainConfig field that has a group. Defaults are left out of the parsed arguments
    (``argparse.SUPPRESS``), so an option not given keeps the recipe's value; ``shown`` holds the values
    the help calls default (the default recipe's)."""
    groups = {}
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        if not meta.get("group") or meta["group"] in exclude_groups:
            continue
        g = groups.get(meta["group"]) or groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        default = shown.get(f.name, f.default)
        help_ = meta["help"]
        if help_ != argparse.SUPPRESS and not meta["negate"] and meta["kw"].get("action") is None \
                and meta["group"] != RUN:
            help_ = f"{help_} (default: {default})" if help_ else f"(default: {default})"
        if meta["negate"]:
            g.add_argument(meta["negate"], dest=f.name, action="store_false", help=help_, default=argparse.SUPPRESS)
        else:
            g.add_argument(meta["flag"] or "--" + f.name.replace("_", "-"), dest=f.name, help=help_,
                           default=argparse.SUPPRESS, **meta["kw"])
    groups[MODEL].add_argument("--fine-tune", dest="freeze_backbone", action="store_false",
                               default=argparse.SUPPRESS, help="train every layer")
