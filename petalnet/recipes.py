"""Named training recipes (``petalnet train --recipe NAME``), like torchvision's reference presets.

A recipe is a set of TrainConfig values; options given on the command line override them. Figures
for each on petals-mini are in benchmarks/RESULTS.md (``benchmarks/bench_accuracy.py``).
"""
from __future__ import annotations

import dataclasses

from petalnet.errors import OptionError, PetalnetError
from petalnet.options import AUTO, RECIPE_NAMES

RECIPES: dict[str, dict] = {
    # The most accurate found for 20 minutes on 2 CPU cores (issue 17, benchmarks/RESULTS.md): ImageNet Lite0
    # at 224 px; the stem and stages 0-4 frozen and computed once for each image, its mirror and 4 random
    # resized crops of it (area 0.4-1, mirrored by a coin); stages 5-6, the head convolution and a new
    # head trained on those views (one per image per epoch) with AdamW (head at 3x the LR), cosine with a
    # short warm-up, label smoothing, 12 epochs; validated, kept and predicted with the moving average of
    # the weights (EMA 0.995) on the image and its mirror.
    "default": dict(model="tf_efficientnet_lite0", image_size=224, unfreeze_from=5, cache_frozen=True,
                    rrc=0.4, cache_views=4, ema=0.995, epochs=12, lr=1e-3, head_lr_scale=3.0,
                    lr_schedule="cosine", warmup_epochs=0.5, optimizer="adamw", weight_decay=0.01,
                    label_smoothing=0.1, flip=True, tta="flip"),
    # The default until issue 17 (about 6 minutes here): the same without the augmented views and the
    # average, 10 epochs.
    "fast": dict(model="tf_efficientnet_lite0", image_size=224, unfreeze_from=5, cache_frozen=True,
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


if tuple(RECIPES) != RECIPE_NAMES:   # the names are the options' vocabulary: --recipe's choices, the API's check
    raise ImportError(f"petalnet.recipes: RECIPES names {tuple(RECIPES)}; options.RECIPE_NAMES says {RECIPE_NAMES}")


def recipe_config(name: str, **overrides):
    """TrainConfig of recipe ``name`` with ``overrides`` (explicit options) on top. Saying how much of
    the backbone trains (``freeze_backbone``: --fine-tune / --freeze-backbone) replaces a recipe's
    partial fine-tune (``unfreeze_from``) unless that is given too."""
    from petalnet.config import TrainConfig
    if name not in RECIPES:
        raise OptionError(f"--recipe {name}: choose one of {', '.join(RECIPES)}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(overrides) - fields
    if unknown:
        raise PetalnetError(f"unknown training options: {', '.join(sorted(unknown))}")
    if "freeze_backbone" in overrides and "unfreeze_from" not in overrides:
        overrides["unfreeze_from"] = None
    return TrainConfig(**{**RECIPES[name], **overrides, "recipe": name})


# The recipe `--recipe auto` (the future default) picks per accelerator. One dict, set from measurements:
# On a CPU the default recipe (benchmarks/RESULTS.md, accuracy section: the best found for 20 minutes
# on 2 cores). On a GPU the accelerator recipe: on an H100 (issue 16, benchmarks/bench_gpu.py --only
# accuracy) it won at 331 px (0.911 against 0.900 macro-F1 for the then default, now `fast`) and tied at
# 224 px (0.905 each); the new default is not measured there yet. On TPUs the default: its cached bottom
# and crops run on XLA (the cache in host memory, uploaded split over the SPMD mesh; plan.make_plan).
AUTO_RECIPES: dict[str, str] = {"cpu": "default", "cuda": "finetune", "tpu": "default", "mps": "default"}


def config_for(recipe: str | None, say=print, **overrides):
    """``recipe_config`` of ``recipe`` with ``overrides``; ``auto`` (or None) picks the recipe for the
    hardware that ``overrides``' accelerator finds, and ``say``s which (``say`` None: silently). The CLI
    and ``petalnet.train`` both start here: the same defaults for the same recipe."""
    from petalnet.accel import device_type
    name, reason = resolve_recipe(recipe, device_type(overrides.get("accelerator", "auto")))
    if recipe in (None, AUTO) and say:
        say(reason)
    return recipe_config(name, **overrides)


def resolve_recipe(name: str | None, device_type: str) -> tuple[str, str]:
    """(recipe name, reason to print) for ``--recipe NAME`` on a ``device_type`` device ('cpu', 'cuda',
    'tpu', 'mps'; Fabric's ``device.type``; 'gpu' is read as 'cuda'). ``auto`` (or None) picks from
    ``AUTO_RECIPES``; any other name is checked and kept."""
    if name not in (None, AUTO):
        if name not in RECIPES:
            raise OptionError(f"--recipe {name}: choose {AUTO} or one of {', '.join(RECIPES)}")
        return name, f"recipe {name} (as asked)"
    kind = {"gpu": "cuda", "xla": "tpu"}.get(device_type, device_type)
    if kind not in AUTO_RECIPES:
        raise PetalnetError(f"--recipe auto: no recipe chosen for a {device_type} device; name one with --recipe "
                            f"({', '.join(RECIPES)})")
    chosen = AUTO_RECIPES[kind]
    where = {"cpu": "a CPU", "cuda": "a GPU", "tpu": "a TPU", "mps": "an Apple GPU (MPS)"}.get(kind, kind)
    return chosen, f"recipe {chosen}: the one for {where} (--recipe auto; --recipe NAME for another)"
