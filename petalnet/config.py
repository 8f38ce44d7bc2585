"""A training run's settings: plain values (no torch import), so the CLI builds its parser fast."""
from __future__ import annotations

import dataclasses
import math

from petalnet.classes import NUM_CLASSES
from petalnet.errors import OptionError

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


# TrainConfig field -> rules its value must pass (checked by TrainConfig.check)
TRAIN_RULES = {
    "image_size": (at_least(16), at_most(MAX_IMAGE_SIZE)),
    "epochs": (at_least(1),),
    "batch_size": (at_least(1),),
    "lr": (above(0),),
    "warmup_epochs": (at_least(0),),
    "lr_start": (at_least(0),),
    "min_lr": (at_least(0),),
    "sustain_epochs": (at_least(0),),
    "lr_decay": (above(0), at_most(1)),
    "weight_decay": (at_least(0),),
    "label_smoothing": (at_least(0), below(1)),
    "freeze_epochs": (at_least(0),),
    "unfreeze_from": (at_least(0),),
    "head_lr_scale": (above(0),),
    "num_classes": (at_least(1),),
    "affine": (at_least(0),),
    "rrc": (at_least(0), at_most(1)),            # smallest share of the area kept
    "color": (at_least(0), at_most(1)),          # factors 1 +- color must stay >= 0
    "cutout": (at_least(0), at_most(1)),         # side as a share of the image
    "mixup": (at_least(0),),
    "cutmix": (at_least(0),),
    "seed": (at_least(0), below(2 ** 32)),       # numpy's seeds are 32-bit
    "devices": (at_least(1),),
    "num_nodes": (at_least(1),),
    "workers": (at_least(0),),
    "max_steps": (at_least(1),),
}


@dataclasses.dataclass
class TrainConfig:
    data: str | None = None
    out: str | None = None
    model: str = "tf_efficientnet_lite0"
    image_size: int | None = None          # default: the data's size
    epochs: int = 8
    batch_size: int = 32                   # per device
    lr: float | None = None                # peak; None: BASE_LR[schedule] x replicas
    lr_schedule: str = "cosine"
    warmup_epochs: float | None = None     # cosine warm-up / competition ramp-up (default min(1, epochs/3) / 5)
    lr_start: float = 1e-5
    min_lr: float = 1e-5
    sustain_epochs: float = 0
    lr_decay: float = 0.8
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    freeze_backbone: bool = True           # train the head only (ignored with unfreeze_from)
    freeze_epochs: int = 0
    unfreeze_from: int | None = None       # train blocks[k:] and the head; stem and blocks[:k] stay frozen
    head_lr_scale: float = 1.0             # the head's LR is this x the schedule's (layer-wise LR)
    cache_frozen: bool = True              # compute the frozen bottom (or whole frozen backbone) once per
                                           # image and mirror (when nothing but flips augments it)
    tta: str = "none"                      # views averaged at validation, and predict's default: none|flip|full
    pretrained: bool = True
    weights: str | None = None
    num_classes: int = NUM_CLASSES
    flip: bool = True
    affine: float = 0.0                    # augmentations on the device: see petalnet.augment.AugmentConfig
    rrc: float = 0.0
    color: float = 0.0
    cutout: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    train_on_val: bool = False             # train on train + val (a final model; no validation)
    seed: int = 0
    deterministic: bool = False
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    precision: str = "auto"
    workers: int | None = None             # None: 1 on CPU (the model needs the cores), else CPUs / devices
    decode: str = "cpu"                    # "gpu": loader workers only read; nvJPEG decodes batches on the GPU
    compile: bool = False                  # torch.compile the training forward/backward
    train_split: str = "train"
    val_split: str = "val"
    quiet: bool = False
    force: bool = False
    max_steps: int | None = None           # stop after this many steps (benchmarks, smoke tests)
    recipe: str | None = None              # the preset the values came from (recorded, see petalnet.recipes)

    def check(self) -> None:
        """Raise OptionError naming the option (``--batch-size 0: must be at least 1``) for the first
        value out of range; called before anything is written."""
        kinds = {f.name: str(f.type) for f in dataclasses.fields(self)}
        for name, rules in TRAIN_RULES.items():
            kind = kinds[name]
            check_number("--" + name.replace("_", "-"), getattr(self, name), *rules,
                         integer="int" in kind and "float" not in kind, optional="None" in kind)

    def augment(self):
        from petalnet.augment import AugmentConfig   # torch: not needed to build the CLI's parser
        return AugmentConfig(self.affine, self.rrc, self.color, self.cutout, self.mixup, self.cutmix)
