"""Partial fine-tuning: train the top stages of a backbone, and compute the frozen bottom only once.

On petals-mini, training the last stages of an ImageNet EfficientNet beats both a linear head on frozen
features and fine-tuning every layer (see benchmarks/RESULTS.md). The frozen bottom is most of the
compute; when it sees no random augmentation but flips, its outputs for every image and its mirror
are computed once and the epochs run on them (``FeatureCache``), a few times faster per epoch.

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
from petalnet.inference import CHUNK, prepare_for_cpu
from petalnet.models import train_mode

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
        if self.float32:
            with torch.autocast(x.device.type, enabled=False):
                return self._forward(x.float())
        return self._forward(x)

    def _forward(self, x):
        x = self.global_pool(self.bn2(self.conv_head(self.blocks(x))))
        if self.drop_rate:
            x = F.dropout(x, self.drop_rate, self.training)
        return self.classifier(x)


def set_trainable_from(model: nn.Module, stage: int) -> None:
    """Freeze the stem and ``blocks[:stage]`` (kept in eval mode by ``models.train_mode``)."""
    for p in model.parameters():
        p.requires_grad_(True)
    for p in Bottom(model, stage).parameters():
        p.requires_grad_(False)
    model.petalnet_frozen_stage = stage


class FeatureCache:
    """The bottom's outputs for this rank's shard of a dataset, for each image and its mirror, on the device.

    Training draws batches of rows (``batches``: a fresh order per epoch, resumable); evaluation reads
    slices of both views (``views``). Under DDP each rank keeps the shard it cached for every epoch.
    """

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor):
        # features: (2, N, C, H, W); indices: each row's dataset index (flip coins are drawn per index)
        self.features, self.labels, self.indices = features, labels, indices

    @classmethod
    @torch.no_grad()
    def build(cls, bottom: nn.Module, loader, prep, autocast, dtype: torch.dtype, progress=None,
              chunk: int | None = None) -> "FeatureCache":
        """Run ``bottom`` once over ``loader`` (batches of (uint8 images, labels[, dataset indices])),
        ``chunk`` images at a time (all of a batch when None)."""
        bottom.eval()
        chunks, labels, order = [], [], []
        for batch in (progress(loader) if progress else loader):
            images, y = batch[0], batch[1]
            x = prep(images)
            with autocast():
                pair = torch.stack([torch.cat([bottom(part) for part in view.split(chunk or len(view))])
                                    for view in (x, x.flip(-1))])
            chunks.append(pair.to(dtype))
            labels.append(y.to(x.device))
            order.append(batch[2] if len(batch) > 2 else torch.arange(len(y)))
        return cls(torch.cat(chunks, 1), torch.cat(labels), torch.cat(order))

    def __len__(self) -> int:
        return self.features.shape[1]

    def nbytes(self) -> int:
        return self.features.numel() * self.features.element_size()

    def batches(self, batch_size: int, epoch: int, seed: int, start_step: int = 0):
        """(rows, labels, dataset indices) per step, in an order drawn per (seed, epoch)."""
        from petalnet.data.loader import ShardSampler   # the loader's per-epoch order, over the cache's rows
        sampler = ShardSampler(len(self), shuffle=True, seed=seed)
        sampler.set_epoch(epoch, start=start_step * batch_size)
        order = torch.tensor(list(sampler), dtype=torch.long)
        for i in range(0, len(order), batch_size):
            rows = order[i:i + batch_size]
            yield rows, self.labels[rows.to(self.labels.device)], self.indices[rows]

    def gather(self, rows: torch.Tensor, flips: torch.Tensor | None) -> torch.Tensor:
        rows = rows.to(self.features.device)
        view = flips.to(self.features.device).long() if flips is not None else torch.zeros_like(rows)
        return self.features[view, rows]

    def view_batches(self, batch_size: int, tta: str):
        """(views, labels) per slice for evaluation: the image, and its mirror unless ``tta`` is 'none'
        (a 'full' TTA's zoom view is not cached: flip only)."""
        for i in range(0, len(self), batch_size):
            views = [self.features[0, i:i + batch_size]] + ([self.features[1, i:i + batch_size]] if tta != "none" else [])
            yield views, self.labels[i:i + batch_size]


def estimate_bytes(bottom: nn.Module, image_size: int, count: int, dtype: torch.dtype, device) -> int:
    """Bytes a cache of ``count`` images (and mirrors) would take, from one tiny forward pass."""
    with torch.no_grad():
        out = bottom.eval()(torch.zeros(1, 3, image_size, image_size, device=device))
    return 2 * count * out.numel() * torch.finfo(dtype).bits // 8


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
        if self.float32:
            with torch.autocast(x.device.type, enabled=False):
                return self.model.forward_head(x.float())
        return self.model.forward_head(x)


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
            return not model.forward_features(torch.zeros(1, 3, image_size, image_size)).requires_grad
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
            features = torch.cat([self.features.forward_features(part) for part in x.split(CHUNK)])
        return self.model.forward_head(features)
