"""A training run's settings: plain values (no torch import), so the CLI builds its parser fast."""
from __future__ import annotations

import dataclasses

from petalnet.classes import NUM_CLASSES


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

    def augment(self):
        from petalnet.augment import AugmentConfig   # torch: not needed to build the CLI's parser
        return AugmentConfig(self.affine, self.rrc, self.color, self.cutout, self.mixup, self.cutmix)
