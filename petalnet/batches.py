"""Batch sources: what the training loop iterates, built from the plan (``plan.Plan``).

A training source yields device-ready ``(x, y)`` for one epoch from a given step (resume), mirrored,
augmented and normalised as the plan says; a validation source yields ``(views, labels)``, the TTA
views whose probabilities evaluation averages. Two kinds of each:
- ``ImageBatches`` / ``ImageViews``: uint8 batches read from the records (a loader thread or worker
  processes), then on the device: flip coins, augmentation, normalisation (``accel.DevicePreprocess``);
- ``CachedBatches`` / ``cache.FeatureCache.view_batches``: rows of the frozen part's cached outputs.
On XLA (``_xla_sources``) the image sources read through ``xla.DeviceLoader`` with one batch shape.
"""
from __future__ import annotations

import time

import torch

from petalnet.augment import flip_mask, step_generator, tta_views, view_choice
from petalnet.cache import FeatureCache, cache_dtype, frozen_part
from petalnet.data.loader import WithIndex, create_loader
from petalnet.errors import PetalnetError
from petalnet.xla import DeviceLoader, Padded


class ImageBatches:
    """Training batches from the records: the loader's uint8 batch, then on the device the flip coins
    (unless the loader mirrored while decoding), per-sample augmentation and normalisation."""

    def __init__(self, loader, prep, device, *, batch_size: int, seed: int, rank: int, aug, step_flips: bool):
        self.loader, self.prep, self.device = loader, prep, device
        self.batch_size, self.seed, self.rank, self.aug = batch_size, seed, rank, aug
        self.step_flips, self.augmenting = step_flips, aug.any()
        self.steps = len(loader)   # a whole epoch's: the loader's length shrinks once a resume sets a start

    def __len__(self) -> int:
        return self.steps

    def epoch(self, epoch: int, start_step: int):
        self.loader.sampler.set_epoch(epoch, start=start_step * self.batch_size)
        for step, (images, labels, indices) in enumerate(self.loader, start_step):
            # the coin is computed where the batch goes: a pageable host->device copy would block
            flips = flip_mask(indices.to(self.device, non_blocking=True), epoch, self.seed) \
                if self.step_flips else None
            g = step_generator(self.device, self.seed, epoch, step, self.rank) if self.augmenting else None
            yield self.prep(images, flips, self.aug, g), labels.to(self.device, non_blocking=True)


class CachedBatches:
    """Training batches of cached rows, each in one of its views drawn per (sample, epoch): the image or
    its mirror by the same coins as above, or one of the augmented views (``--cache-views``)."""

    def __init__(self, cache: FeatureCache, *, batch_size: int, seed: int, flips: bool):
        self.cache, self.batch_size, self.seed = cache, batch_size, seed
        # the views an epoch may show (the mirror, view 1, only with flips on)
        self.allowed = torch.tensor([v for v in range(cache.views) if flips or v != 1])

    def __len__(self) -> int:
        return -(-len(self.cache) // self.batch_size)

    def epoch(self, epoch: int, start_step: int):
        for rows, labels, indices in self.cache.batches(self.batch_size, epoch, self.seed, start_step):
            views = self.allowed[view_choice(indices, epoch, self.seed, len(self.allowed))] \
                if len(self.allowed) > 1 else None
            yield self.cache.gather(rows, views), labels


class ImageViews:
    """Validation batches from the records: (TTA views of the normalised batch, labels)."""

    def __init__(self, loader, prep, tta: str):
        self.loader, self.prep, self.tta = loader, prep, tta

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, labels in self.loader:
            yield tta_views(self.prep(images), self.tta), labels


def build_sources(plan, cfg, fabric, model, train_ds, val_ds, image_size: int, prep, say, progress=None):
    """(training source, validation source or None) as ``plan`` says; a cached plan computes its cache
    here (the first pass over the images: a line before and after it, and ``progress``'s bar: see
    ``pace.stage_progress``)."""
    rank, world = fabric.global_rank, fabric.world_size
    common = dict(rank=rank, world_size=world, num_workers=plan.workers, threads=plan.threads,
                  background=plan.background)
    if plan.cached:
        return _cached_sources(plan, cfg, fabric, model, train_ds, val_ds, image_size, prep, common, say, progress)
    if plan.device == "xla":
        return _xla_sources(plan, cfg, fabric, train_ds, val_ds, prep, common)
    keep = dict(pin_memory=plan.pin_memory, persistent_workers=plan.pin_memory and plan.workers > 0)
    train = create_loader(WithIndex(train_ds), cfg.batch_size, shuffle=True, seed=cfg.seed, pad=True,
                          flip=plan.flips == "loader", **keep, **common)
    val = val_ds and create_loader(val_ds, cfg.batch_size * 2, **keep, **common)
    return (ImageBatches(train, prep, fabric.device, batch_size=cfg.batch_size, seed=cfg.seed, rank=rank,
                         aug=cfg.augment(), step_flips=plan.flips == "step"),
            val and ImageViews(val, prep, cfg.tta))


def _xla_sources(plan, cfg, fabric, train_ds, val_ds, prep, common):
    """Every batch one shape, so XLA compiles one training and one evaluation graph: training drops an
    epoch's last partial batch (each epoch reshuffles, so no record is always left out), evaluation pads
    its last batch with rows the metrics skip (``xla.Padded``); both uploaded by torch_xla's loader."""
    train = create_loader(WithIndex(train_ds), cfg.batch_size, shuffle=True, seed=cfg.seed, pad=True,
                          drop_last=True, **common)
    if len(train) == 0:
        raise PetalnetError(f"--batch-size {cfg.batch_size}: more than this device's {len(train.sampler)} "
                            "training images; on XLA every batch is full (a smaller --batch-size)")
    device = fabric.device
    val = val_ds and DeviceLoader(Padded(create_loader(val_ds, cfg.batch_size * 2, **common), cfg.batch_size * 2),
                                  device)
    return (ImageBatches(DeviceLoader(train, device), prep, device, batch_size=cfg.batch_size, seed=cfg.seed,
                         rank=fabric.global_rank, aug=cfg.augment(), step_flips=plan.flips == "step"),
            val and ImageViews(val, prep, cfg.tta))


def _cached_sources(plan, cfg, fabric, model, train_ds, val_ds, image_size, prep, common, say, progress):
    dtype = cache_dtype(plan.precision)
    stage = plan.unfreeze_from if plan.frozen == "cached-bottom" else None
    bottom, chunk = frozen_part(model, stage, fabric.device, image_size, bf16=dtype == torch.bfloat16)
    t0 = time.perf_counter()
    # this rank's fixed shard of each split, in dataset order (epochs reshuffle the training rows locally)
    loaders = [create_loader(WithIndex(train_ds), cfg.batch_size * 2, pad=True, **common)]
    if val_ds:
        loaders.append(create_loader(val_ds, cfg.batch_size * 2, **common))
    part = f"frozen bottom (stem + blocks[:{plan.unfreeze_from}])" if plan.frozen == "cached-bottom" \
        else "frozen backbone"
    extra = f" and {plan.cache_views} augmented views of each training image" if plan.cache_views else ""
    say(f"caching the {part} for {len(train_ds)} train + {len(val_ds) if val_ds else 0} val images, their "
        f"mirrors{extra}: one pass, then the epochs read no images")
    caches = [FeatureCache.build(bottom, loader, prep, fabric.autocast, dtype, chunk=chunk,
                                 progress=progress and (lambda it, name=name: progress(it, f"caching {name}")),
                                 augmented=plan.cache_views if name == "train" else 0, aug=cfg.augment(),
                                 seed=cfg.seed, mirror=cfg.flip)
              for loader, name in zip(loaders, ("train", "val"))]
    say(f"{part} cached for {sum(len(c) for c in caches)} images and their mirrors{extra} in "
        f"{time.perf_counter() - t0:.0f}s ({sum(c.nbytes() for c in caches) / 2**20:.0f} MiB)")
    train = CachedBatches(caches[0], batch_size=cfg.batch_size, seed=cfg.seed, flips=plan.flips == "cache")
    return train, (_CachedViews(caches[1], cfg.batch_size * 2, cfg.tta) if val_ds else None)


class _CachedViews:
    def __init__(self, cache: FeatureCache, batch_size: int, tta: str):
        self.cache, self.batch_size, self.tta = cache, batch_size, tta

    def __len__(self) -> int:
        return -(-len(self.cache) // self.batch_size)

    def __iter__(self):
        return self.cache.view_batches(self.batch_size, self.tta)
