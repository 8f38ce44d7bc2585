"""Named training recipes (``petalnet train --recipe NAME``), like torchvision's reference presets.

A recipe is a set of TrainConfig values; options given on the command line override them. Figures
for each on petals-mini are in benchmarks/RESULTS.md (``benchmarks/bench_accuracy.py``).
"""
from __future__ import annotations

import dataclasses

from petalnet.errors import PetalnetError

RECIPES: dict[str, dict] = {
    # The best found for about 10 minutes on 2 CPU cores: ImageNet Lite0 at its native 224 px; the stem
    # and stages 0-4 frozen and computed once per image and mirror; stages 5-6, the head convolution
    # and a new head trained with AdamW (head at 3x the LR), cosine with a short warm-up, label
    # smoothing, flips, 10 epochs; validated (and predicted, by default) on the image and its mirror.
    "default": dict(model="tf_efficientnet_lite0", image_size=224, unfreeze_from=5, cache_frozen=True,
                    epochs=10, lr=1e-3, head_lr_scale=3.0, lr_schedule="cosine", warmup_epochs=0.5,
                    optimizer="adamw", weight_decay=0.01, label_smoothing=0.1, flip=True, tta="flip"),
    # The competition's getting-started notebook: frozen VGG16, global average pooling, one dense
    # layer, Adam, its ramp-up/sustain/exponential-decay schedule (LR_MAX = 5e-5 x replicas), batch 16
    # per replica, 12 epochs, plain cross-entropy, random flips.
    "tutorial": dict(model="vgg16", freeze_backbone=True, unfreeze_from=None, optimizer="adam",
                     lr_schedule="competition", lr=None, warmup_epochs=5, sustain_epochs=0, lr_decay=0.8,
                     lr_start=1e-5, min_lr=1e-5, epochs=12, batch_size=16, label_smoothing=0.0,
                     weight_decay=0.0, flip=True, tta="none"),
    # A linear head on frozen features (timm-style AdamW + cosine).
    "linear": dict(model="tf_efficientnet_lite0", freeze_backbone=True, unfreeze_from=None, epochs=8, lr=1e-3,
                   lr_schedule="cosine", optimizer="adamw", label_smoothing=0.1, flip=True, tta="none"),
    # Every layer trained, with the strong notebooks' geometric augmentation: for GPUs and TPUs.
    "finetune": dict(model="tf_efficientnet_lite0", freeze_backbone=False, unfreeze_from=None, epochs=12,
                     lr=3e-4, head_lr_scale=10.0, lr_schedule="cosine", warmup_epochs=1, optimizer="adamw",
                     weight_decay=0.01, label_smoothing=0.1, flip=True, affine=1.0, tta="flip"),
}


def recipe_config(name: str, **overrides):
    """TrainConfig of recipe ``name`` with ``overrides`` (explicit options) on top. Saying how much of
    the backbone trains (``freeze_backbone``: --fine-tune / --freeze-backbone) replaces a recipe's
    partial fine-tune (``unfreeze_from``) unless that is given too."""
    from petalnet.config import TrainConfig
    if name not in RECIPES:
        raise PetalnetError(f"--recipe {name}: choose one of {', '.join(RECIPES)}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(overrides) - fields
    if unknown:
        raise PetalnetError(f"unknown training options: {', '.join(sorted(unknown))}")
    if "freeze_backbone" in overrides and "unfreeze_from" not in overrides:
        overrides["unfreeze_from"] = None
    return TrainConfig(**{**RECIPES[name], **overrides, "recipe": name})
