"""Batch augmentations on the device, after the uint8 batch arrives (timm's PrefetchLoader idea).

Each sample gets its own random draw; the draws come from a generator seeded by (seed, epoch, step,
rank), so a run resumed mid-epoch sees the same augmentations as one that never stopped. Geometry
(Deotte's affine: rotation, shear, zoom, shift; or a random resized crop) is one ``grid_sample`` that
also resizes to the model's input size; colour works on the 0..255 floats; CutOut writes the mean
(zero after normalisation). MixUp/CutMix change the targets too: timm's ``Mixup`` does them, and
``loss_for`` gives the loss for either kind of target.

Flips are coins per (sample, epoch, seed) (``flip_mask``), whoever applies them: the CPU loader thread
while it decodes, the device step, or a cache of both views. Test-time augmentation's views
(``tta_views``: the image, its mirror, a centre zoom) live here too.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import torch
import torch.nn.functional as F
from timm.data.mixup import Mixup, cutmix_bbox_and_lam

from petalnet.options import TTA_VIEWS   # test-time augmentation -> views averaged (tta_view: zoom: centre 87.5 %)


@dataclasses.dataclass
class AugmentConfig:
    affine: float = 0.0          # strength of Deotte's affine: 1 = rot N(0,15deg), shear N(0,5deg),
                                 # zoom 1+N(0,0.1) per axis, shift N(0,16px at 512px); 0 = off
    rrc: float = 0.0             # random resized crop: smallest area kept (e.g. 0.35); 0 = off
    color: float = 0.0           # brightness and saturation factors drawn from 1 +- color; 0 = off
    cutout: float = 0.0          # side of one square hole, as a fraction of the image; 0 = off
    mixup: float = 0.0           # MixUp alpha (timm), 0 = off
    cutmix: float = 0.0          # CutMix alpha (timm), 0 = off

    @property
    def geometric(self) -> bool:
        return self.affine > 0 or self.rrc > 0

    def any(self) -> bool:
        return any(v > 0 for v in dataclasses.asdict(self).values())


def flip_mask(indices: torch.Tensor, epoch: int, seed: int) -> torch.Tensor:
    """A coin per (sample, epoch, seed), the same whichever rank, worker or step sees the sample, so
    runs on 1 or N devices, and runs resumed mid-epoch, augment identically."""
    # one Python term, never 0 or 1 (+2**32 vanishes under the mask): XLA bakes 0 and 1 into the graph as
    # constants, so epoch 0 with seed 0 would compile a graph of its own
    h = (indices.long() * 0x9E3779B1 + (epoch * 0x85EBCA77 + seed * 0xC2B2AE3D + (1 << 32))) & 0xFFFFFFFF
    h = ((h ^ (h >> 15)) * 0x2C1B3C6D) & 0xFFFFFFFF
    return ((h ^ (h >> 12)) >> 7) & 1 == 1


def view_choice(indices: torch.Tensor, epoch: int, seed: int, views: int) -> torch.Tensor:
    """Which of ``views`` cached views each sample shows in ``epoch`` (``cache.FeatureCache``): with 2
    (the image and its mirror) the flip coin itself, so a cache of mirrors augments as the loader does;
    with more, one of them drawn per (sample, epoch, seed) from the same kind of hash."""
    if views == 2:
        return flip_mask(indices, epoch, seed).long()
    h = (indices.long() * 0x27D4EB2F + (epoch * 0x165667B1 + seed * 0x9E3779B1 + (1 << 32))) & 0xFFFFFFFF
    h = ((h ^ (h >> 15)) * 0x2C1B3C6D) & 0xFFFFFFFF
    return ((h ^ (h >> 13)) >> 3) % views


def step_generator(device: torch.device, seed: int, epoch: int, step: int, rank: int = 0) -> torch.Generator:
    """The generator of one step's per-sample draws, on ``device``; on XLA on the host (XLA has no
    generator object): its draws are a few numbers per sample, uploaded as the step's data, so the
    step's graph is the same whatever is drawn."""
    g = torch.Generator(device="cpu" if torch.device(device).type == "xla" else device)
    g.manual_seed((seed * 1_000_003 + epoch) * 1_000_033 + step * 101 + rank)
    return g


def _affine_matrices(n: int, cfg: AugmentConfig, g: torch.Generator, out) -> torch.Tensor:
    """(n, 2, 3) matrices mapping output coordinates to input ones, in affine_grid's [-1, 1] units, drawn
    and composed where ``g`` is and returned on device ``out``."""
    device = g.device

    def normal(std):
        return torch.randn(n, generator=g, device=device) * std

    if cfg.rrc > 0:   # area in [rrc, 1], aspect ratio in [3/4, 4/3] (log-uniform), anywhere inside
        area = cfg.rrc + (1 - cfg.rrc) * torch.rand(n, generator=g, device=device)
        logr = (torch.rand(n, generator=g, device=device) * 2 - 1) * math.log(4 / 3)
        sx = (area * logr.exp()).sqrt().clamp(max=1)
        sy = (area / logr.exp()).sqrt().clamp(max=1)
        tx = (1 - sx) * (torch.rand(n, generator=g, device=device) * 2 - 1)
        ty = (1 - sy) * (torch.rand(n, generator=g, device=device) * 2 - 1)
        zero = torch.zeros_like(sx)
        crop = torch.stack([torch.stack([sx, zero, tx], 1), torch.stack([zero, sy, ty], 1)], 1)
    else:
        crop = torch.eye(2, 3, device=device).expand(n, 2, 3)
    if cfg.affine <= 0:
        return crop.contiguous().to(out)
    s = cfg.affine
    rot, shear = normal(math.radians(15) * s), normal(math.radians(5) * s)
    zx, zy = 1 + normal(0.1 * s), 1 + normal(0.1 * s)
    shift = 16 / 512 * 2 * s   # 16 px at 512 px, in [-1, 1] units (scales with the image)
    tx, ty = normal(shift), normal(shift)
    c, si = rot.cos(), rot.sin()
    # rotation x shear x zoom (output -> input), as in Deotte's transform; a zoom > 1 shows more
    a = torch.stack([torch.stack([c, -si], 1), torch.stack([si, c], 1)], 1)
    sh = torch.stack([torch.stack([torch.ones_like(shear), shear.sin()], 1),
                      torch.stack([torch.zeros_like(shear), shear.cos()], 1)], 1)
    z = torch.diag_embed(torch.stack([1 / zx, 1 / zy], 1))
    lin = a @ sh @ z
    m = torch.cat([lin, torch.stack([tx, ty], 1).unsqueeze(-1)], 2)
    # crop after affine: affine's output coordinates are fed through the crop first
    full = torch.cat([crop, torch.tensor([0, 0, 1.0], device=device).expand(n, 1, 3)], 1)
    mfull = torch.cat([m, torch.tensor([0, 0, 1.0], device=device).expand(n, 1, 3)], 1)
    return (mfull @ full)[:, :2].to(out)


def geometric(x: torch.Tensor, cfg: AugmentConfig, size: int, g: torch.Generator) -> torch.Tensor:
    """Per-sample affine / crop of a float batch, resampled to ``size`` (edges repeat, as Deotte's)."""
    theta = _affine_matrices(x.shape[0], cfg, g, x.device).to(x.dtype)
    grid = F.affine_grid(theta, [x.shape[0], x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def color(x: torch.Tensor, strength: float, g: torch.Generator) -> torch.Tensor:
    """Brightness and saturation jitter of a 0..255 float batch."""
    n = x.shape[0]
    bright = 1 + (torch.rand(n, 1, 1, 1, generator=g, device=g.device).to(x.device) * 2 - 1) * strength
    sat = 1 + (torch.rand(n, 1, 1, 1, generator=g, device=g.device).to(x.device) * 2 - 1) * strength
    gray = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return ((gray + (x - gray) * sat) * bright).clamp(0, 255)


def cutout(x: torch.Tensor, fraction: float, g: torch.Generator) -> torch.Tensor:
    """One square hole per image, filled with 0 (the mean, after normalisation)."""
    n, _, h, w = x.shape
    side = max(1, round(fraction * min(h, w)))
    cy = torch.randint(0, h, (n, 1, 1), generator=g, device=g.device).to(x.device)
    cx = torch.randint(0, w, (n, 1, 1), generator=g, device=g.device).to(x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    hole = ((ys - cy).abs() <= side // 2) & ((xs - cx).abs() <= side // 2)
    return x.masked_fill(hole.unsqueeze(1), 0)


def no_mixing(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x, y


def mixer(cfg: AugmentConfig, num_classes: int, label_smoothing: float):
    """timm's MixUp/CutMix on the batch (soft targets out; ``TensorMixup``), or None when both are off."""
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return None
    return TensorMixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=label_smoothing,
                       num_classes=num_classes)


class TensorMixup(Mixup):
    """timm's ``Mixup`` (per batch): its draws and its numbers, but what it draws is applied as tensors, the
    mixing weight and CutMix's box as a per-pixel weight, where timm uses Python numbers and slices. An XLA
    step's graph is then one whatever is drawn (each box's slice bounds, and a weight of exactly 1, would
    compile a graph of their own); on a CPU or GPU it costs one multiply-add more."""

    def _mix_batch(self, x):
        lam, use_cutmix = self._params_per_batch()
        keep = torch.full((1, 1, *x.shape[-2:]), float(lam))   # per pixel: 1 this image, 0 the flipped batch's
        if use_cutmix and lam != 1.:
            (yl, yh, xl, xh), lam = cutmix_bbox_and_lam(x.shape, lam, ratio_minmax=self.cutmix_minmax,
                                                        correct_lam=self.correct_lam)
            keep.fill_(1.)[..., yl:yh, xl:xh] = 0.
        keep = keep.to(x.device, x.dtype)
        flipped = x.flip(0).mul_(1. - keep)
        x.mul_(keep).add_(flipped)
        return torch.tensor([lam], dtype=torch.float32).to(x.device)


def loss_for(mix, label_smoothing: float):
    """(logits, targets) -> loss: cross-entropy on class indices with ``label_smoothing``, or on the soft
    targets ``mix`` (a ``mixer``) makes, whose smoothing is inside them."""
    if mix:
        return _soft_target_loss
    return functools.partial(_hard_target_loss, smoothing=label_smoothing)


def _hard_target_loss(logits, y, smoothing: float):
    return F.cross_entropy(logits.float(), y, label_smoothing=smoothing)


def _soft_target_loss(logits, target):
    return torch.sum(-target * F.log_softmax(logits.float(), dim=1), dim=1).mean()


def tta_views(x: torch.Tensor, tta: str) -> list[torch.Tensor]:
    """The views of a normalised batch that TTA mode ``tta`` averages (``TTA_VIEWS``)."""
    return [tta_view(x, view) for view in TTA_VIEWS[tta]]


def tta_view(x: torch.Tensor, view: str) -> torch.Tensor:
    """One view of ``TTA_VIEWS`` of a normalised batch."""
    return {"identity": lambda: x, "flip": lambda: x.flip(-1), "zoom": lambda: zoom(x)}[view]()


def zoom(x: torch.Tensor, keep: float = 0.875) -> torch.Tensor:
    size = x.shape[-1]
    crop = max(1, round(size * keep))
    off = (size - crop) // 2
    x = x[..., off:off + crop, off:off + crop]
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).contiguous(
        memory_format=torch.channels_last)
