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

from petalnet import xla
from petalnet.augment import flip_mask, step_generator, tta_views, view_choice
from petalnet.cache import FeatureCache, cache_dtype, frozen_part
from petalnet.data.loader import WithIndex, create_loader
from petalnet.errors import PetalnetError


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
    its mirror by the same coins as above, or one of the augmented views (``--cache-views``). On XLA
    (``upload``: ``xla.uploader``) the rows are gathered in host memory, full batches only, and uploaded
    split over the mesh: one copy a step, the same graph every step."""

    def __init__(self, cache: FeatureCache, *, batch_size: int, seed: int, flips: bool, upload=None):
        self.cache, self.batch_size, self.seed, self.upload = cache, batch_size, seed, upload
        # the views an epoch may show (the mirror, view 1, only with flips on)
        self.allowed = torch.tensor([v for v in range(cache.views) if flips or v != 1])

    def __len__(self) -> int:
        return len(self.cache) // self.batch_size if self.upload else -(-len(self.cache) // self.batch_size)

    def epoch(self, epoch: int, start_step: int):
        batches = self._gathered(epoch, start_step)
        return self.upload(batches) if self.upload else batches

    def _gathered(self, epoch: int, start_step: int):
        for step, (rows, labels, indices) in enumerate(self.cache.batches(self.batch_size, epoch, self.seed,
                                                                          start_step), start_step):
            if step == len(self):   # XLA: the epoch's last partial batch is dropped
                return
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


def build_sources(plan, cfg, fabric, top, model, train_ds, val_ds, image_size: int, prep, say, progress=None):
    """(training source, validation source or None) as ``plan`` says, for this process's share of the
    records (``top``: a ``parallel.Topology``; its batches feed ``top.per_shard`` replicas); a cached plan
    computes its cache here (the first pass over the images: a line before and after it, and
    ``progress``'s bar: see ``pace.stage_progress``). On XLA every batch has one shape, so XLA compiles
    one training and one evaluation graph: training drops an epoch's last partial batch (each epoch
    reshuffles, so no record is always left out), evaluation pads its last batch with rows the metrics
    skip (``xla.Padded``); every batch is uploaded split over the mesh (``xla.uploader``)."""
    common = dict(rank=top.shard, world_size=top.shards, num_workers=plan.workers, threads=plan.threads,
                  background=plan.background)
    batch, fixed = cfg.batch_size * top.per_shard, plan.device == "xla"
    upload = xla.uploader(fabric.device) if fixed else None
    if plan.cached:
        return _cached_sources(plan, cfg, fabric, model, train_ds, val_ds, image_size, prep, common, say, progress,
                               batch, upload)
    keep = dict(pin_memory=plan.pin_memory, persistent_workers=plan.pin_memory and plan.workers > 0)
    train = create_loader(WithIndex(train_ds), batch, shuffle=True, seed=cfg.seed, pad=True, drop_last=fixed,
                          flip=plan.flips == "loader", **keep, **common)
    _check_full_batch(len(train), cfg.batch_size, batch, len(train.sampler))
    val = val_ds and create_loader(val_ds, batch * 2, **keep, **common)
    if fixed:
        train, val = xla.DeviceLoader(train, upload), val and xla.DeviceLoader(xla.Padded(val, batch * 2), upload)
    return (ImageBatches(train, prep, fabric.device, batch_size=batch, seed=cfg.seed, rank=top.shard,
                         aug=cfg.augment(), step_flips=plan.flips == "step"),
            val and ImageViews(val, prep, cfg.tta))


def _cached_sources(plan, cfg, fabric, model, train_ds, val_ds, image_size, prep, common, say, progress, batch,
                    upload):
    dtype = cache_dtype(plan.precision)
    stage = plan.unfreeze_from if plan.frozen == "cached-bottom" else None
    bottom, chunk = frozen_part(model, stage, fabric.device, image_size, bf16=dtype == torch.bfloat16)
    t0 = time.perf_counter()
    # this process's fixed shard of each split, in dataset order (epochs reshuffle the training rows locally)
    loaders = [create_loader(WithIndex(train_ds), batch * 2, pad=True, **common)]
    if val_ds:
        loaders.append(create_loader(val_ds, batch * 2, **common))
    if upload:   # XLA: computed on the devices in batches of one shape, kept in host memory
        loaders = [xla.DeviceLoader(xla.Padded(loader, batch * 2), upload) for loader in loaders]
    part = f"frozen bottom (stem + blocks[:{plan.unfreeze_from}])" if plan.frozen == "cached-bottom" \
        else "frozen backbone"
    extra = f" and {plan.cache_views} augmented views of each training image" if plan.cache_views else ""
    say(f"caching the {part} for {len(train_ds)} train + {len(val_ds) if val_ds else 0} val images, their "
        f"mirrors{extra}: one pass, then the epochs read no images")
    caches = [FeatureCache.build(bottom, loader, prep, fabric.autocast, dtype, chunk=chunk,
                                 progress=progress and (lambda it, name=name: progress(it, f"caching {name}")),
                                 augmented=plan.cache_views if name == "train" else 0, aug=cfg.augment(),
                                 seed=cfg.seed, mirror=cfg.flip, store=torch.device("cpu") if upload else None)
              for loader, name in zip(loaders, ("train", "val"))]
    say(f"{part} cached for {sum(len(c) for c in caches)} images and their mirrors{extra} in "
        f"{time.perf_counter() - t0:.0f}s ({sum(c.nbytes() for c in caches) / 2**20:.0f} MiB)")
    train = CachedBatches(caches[0], batch_size=batch, seed=cfg.seed, flips=plan.flips == "cache", upload=upload)
    _check_full_batch(len(train), cfg.batch_size, batch, len(caches[0]))
    return train, (_CachedViews(caches[1], batch * 2, cfg.tta, upload) if val_ds else None)


def _check_full_batch(steps: int, per_device: int, batch: int, images: int) -> None:
    if steps == 0:   # XLA's full batches only: none fits
        raise PetalnetError(f"--batch-size {per_device}: {batch} images a step is more than the {images} training "
                            "images this process reads; on XLA every batch is full (a smaller --batch-size)")


class _CachedViews:
    """Validation batches of cached rows: (the image's and the mirror's maps, labels); on XLA (``upload``)
    the last batch padded to the others' size and every batch uploaded to the mesh."""

    def __init__(self, cache: FeatureCache, batch_size: int, tta: str, upload=None):
        self.cache, self.batch_size, self.tta, self.upload = cache, batch_size, tta, upload

    def __len__(self) -> int:
        return -(-len(self.cache) // self.batch_size)

    def __iter__(self):
        batches = self.cache.view_batches(self.batch_size, self.tta)
        if self.upload is None:
            return batches
        return self.upload(xla.padded(batches, self.batch_size))
