"""Partial fine-tuning: train the top stages of a backbone, and compute the frozen bottom only once.

On petals-mini, training the last stages of an ImageNet EfficientNet beats both a linear head on frozen
features and fine-tuning every layer (see benchmarks/RESULTS.md). The frozen bottom is most of the
compute; when it sees no random augmentation but flips, its outputs for every image and its mirror
are computed once and the epochs run on them (``cache.FeatureCache``), a few times faster per epoch.

A whole frozen backbone (a linear head, the tutorial's recipe) is cached the same way (``Features`` /
``Head``, any timm model); when it cannot be (other augmentations, too little memory), it runs on
CPU from a prepared copy (``CPUFrozenBackbone``: batch norm folded, bf16 weights, no autograd).

The split works on timm's EfficientNet/MobileNet layout (``conv_stem``, ``bn1``, ``blocks``,
``conv_head``, ``bn2``, ``global_pool``, ``classifier``): ``stage`` k trains ``blocks[k:]`` and above.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from petalnet.errors import PetalnetError
from petalnet.inference import CHUNK, chunked, forward_float32, prepare_for_cpu
from petalnet.models import head_parameters

LAYOUT = ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "global_pool", "classifier")


def splittable(model: nn.Module) -> bool:
    return all(hasattr(model, a) for a in LAYOUT)


def check_splittable(model: nn.Module, name: str, stage: int) -> None:
    if not splittable(model):
        raise PetalnetError(f"--unfreeze-from works with timm's EfficientNet/MobileNet family "
                            f"(conv_stem, blocks, conv_head); {name} has another layout: use --recipe linear or "
                            "finetune, or --fine-tune / --freeze-backbone")
    if not 0 <= stage <= len(model.blocks):
        raise PetalnetError(f"--unfreeze-from {stage}: {name} has stages 0..{len(model.blocks) - 1}")


class Bottom(nn.Module):
    """The frozen stem and ``blocks[:stage]`` (shares the model's modules)."""

    def __init__(self, model: nn.Module, stage: int):
        super().__init__()
        self.conv_stem, self.bn1 = model.conv_stem, model.bn1
        self.blocks = nn.Sequential(*model.blocks[:stage])

    def forward(self, x):
        return self.blocks(self.bn1(self.conv_stem(x)))


class Top(nn.Module):
    """``blocks[stage:]``, the head convolution and the classifier (shares the model's modules)."""

    def __init__(self, model: nn.Module, stage: int, float32: bool = False):
        super().__init__()
        self.float32 = float32   # no autocast: on CPU its bf16 backward here is 1.9x slower than fp32
        self.blocks = nn.Sequential(*model.blocks[stage:])
        self.conv_head, self.bn2, self.global_pool, self.classifier = \
            model.conv_head, model.bn2, model.global_pool, model.classifier
        self.drop_rate = getattr(model, "drop_rate", 0.0)

    def forward(self, x):
        return forward_float32(self._forward, x) if self.float32 else self._forward(x)

    def _forward(self, x):
        x = self.global_pool(self.bn2(self.conv_head(self.blocks(x))))
        if self.drop_rate:
            x = F.dropout(x, self.drop_rate, self.training)
        return self.classifier(x)


def freeze(model: nn.Module, cfg) -> str | None:
    """Set which of ``model``'s parameters train, as ``cfg`` (a TrainConfig) says: stages from
    ``unfreeze_from`` up, the head only (``freeze_backbone``, or for the first ``freeze_epochs``), or all.
    A recipe's partial fine-tune asked of another family (resnet, convnext...) trains its head instead:
    returns the line that says so."""
    stage, note = cfg.unfreeze_from, None
    if stage is not None and cfg.recipe and not splittable(model):
        note = (f"{cfg.model} has no EfficientNet-style stages to unfreeze from: training its head on the "
                "frozen backbone instead (--fine-tune to train every layer)")
        stage = None
    if stage is not None:
        check_splittable(model, cfg.model, stage)
        set_trainable_from(model, stage)
    else:
        set_backbone_frozen(model, cfg.freeze_backbone or cfg.freeze_epochs > 0)
    return note


def effective_freezing(model: nn.Module, cfg) -> dict:
    """The freezing options as ``freeze`` applied them to ``model``, for the config a run records: with
    stages unfrozen (``unfreeze_from``) the backbone is not frozen whatever ``freeze_backbone`` said; a
    partial fine-tune that fell back to the head has no ``unfreeze_from``. Applying them again gives
    the same freezing (a resume)."""
    stage = getattr(model, "petalnet_frozen_stage", None)
    return {"unfreeze_from": stage, "freeze_backbone": False if stage is not None else cfg.freeze_backbone}


def set_trainable_from(model: nn.Module, stage: int) -> None:
    """Freeze the stem and ``blocks[:stage]`` (kept in eval mode by ``models.train_mode``)."""
    for p in model.parameters():
        p.requires_grad_(True)
    for p in Bottom(model, stage).parameters():
        p.requires_grad_(False)
    model.petalnet_frozen_stage = stage


def set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    """Freeze (or unfreeze) everything but the head; frozen BatchNorm layers keep their statistics."""
    head = {id(p) for p in head_parameters(model)}
    for p in model.parameters():
        p.requires_grad_(not frozen or id(p) in head)
    model.petalnet_frozen = frozen
    model.petalnet_frozen_stage = None


def train_mode(model: nn.Module) -> None:
    """model.train(), except that frozen layers stay in eval mode (BatchNorm statistics, dropout)."""
    model.train()
    if getattr(model, "petalnet_frozen", False):
        model.eval()
        model.get_classifier().train()
    stage = getattr(model, "petalnet_frozen_stage", None)
    if stage is not None:
        Bottom(model, stage).eval()


class Features(nn.Module):
    """A whole frozen backbone (``forward_features``: the feature maps before pooling), the part a
    head-only run computes once per image and mirror (``FeatureCache``); any timm model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_features(x)


class _FrozenModes(nn.Module):
    """``train()``/``eval()`` set ``self.model``'s modes as ``models.train_mode`` does: its frozen layers
    stay in eval mode (batch-norm statistics, dropout) while the rest trains."""

    def train(self, mode: bool = True):
        self.training = mode
        if mode:
            train_mode(self.model)
        else:
            self.model.eval()
        return self


class Head(_FrozenModes):
    """``forward_head`` (pooling, classifier) on cached feature maps; ``float32`` as ``Top``. A frozen
    part of the head (VGG's fc6/fc7, a norm) stays in eval mode, as when the whole model runs."""

    def __init__(self, model: nn.Module, float32: bool = False):
        super().__init__()
        self.model, self.float32 = model, float32

    def forward(self, x):
        return forward_float32(self.model.forward_head, x) if self.float32 else self.model.forward_head(x)


def features_frozen(model: nn.Module, image_size: int) -> bool:
    """Whether ``model``'s features are all frozen (``models.set_backbone_frozen``): only what
    ``forward_head`` runs trains."""
    if not (getattr(model, "petalnet_frozen", False) and hasattr(model, "forward_features")
            and hasattr(model, "forward_head")):
        return False
    training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            device = next(model.parameters()).device   # the model may already be on the accelerator
            return not model.forward_features(torch.zeros(1, 3, image_size, image_size, device=device)).requires_grad
    finally:
        model.train(training)


class CPUFrozenBackbone(_FrozenModes):
    """A model whose backbone is frozen (``models.set_backbone_frozen``) as CPU training runs it: its
    features from a prepared copy (``inference.prepare_for_cpu``: batch norm folded, weights cast once,
    no autograd, chunks that stay in cache), its head (``forward_head``: pooling, classifier) from the
    model itself under the caller's autocast, so the head trains and checkpoints hold the model as it
    is. Lite0 at 192 px, batch 32, bf16 on 2 cores: ~2x the steps/s of running the model under autocast.
    The copy must be rebuilt if the backbone's weights change (they do not while it is frozen)."""

    def __init__(self, model: nn.Module, image_size: int, bf16: bool):
        super().__init__()
        self.model = model
        self.dtype = torch.bfloat16 if bf16 else torch.float32
        # not a registered submodule: a derived copy, which state_dict, .to() and DDP must not see
        object.__setattr__(self, "features", prepare_for_cpu(model, image_size, bf16)[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            x = x.to(self.dtype, memory_format=torch.channels_last)
            features = chunked(self.features.forward_features, x, CHUNK)
        return self.model.forward_head(features)
