"""The frozen part's outputs computed once: for each image, its mirror and augmented views, on the device.

When what a frozen bottom (``frozen.Bottom``) or a whole frozen backbone (``frozen.Features``) sees
can be drawn once (flips; crops, affine and colour as ``--cache-views`` augmented views), its outputs
for every image, mirror and view are computed once and the epochs run on them: after that pass an
epoch of a head-only run reads no images at all (benchmarks/RESULTS.md).
"""
from __future__ import annotations

import time

import torch
from torch import nn

from petalnet.augment import flip_mask, step_generator
from petalnet.frozen import Bottom, Features
from petalnet.inference import CHUNK, chunked, prepare_for_cpu
from petalnet.xla import PAD_LABEL


class FeatureCache:
    """The bottom's outputs for this rank's shard of a dataset, on the device: for each image and its
    mirror, and for training ``augmented`` views more of each image (random crops, affine, colour as
    the config's augmentation draws them, once: ``--cache-views``).

    Training draws batches of rows (``batches``: a fresh order per epoch, resumable) and for each row one
    of its views (``augment.view_choice``); evaluation reads slices of the image and mirror (``views``).
    Under DDP each rank keeps the shard it cached for every epoch.
    """

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor):
        # features: (views, N, C, H, W), views 0 and 1 the image and its mirror; indices: each row's dataset
        # index (views are drawn per index)
        self.features, self.labels, self.indices = features, labels, indices

    @classmethod
    @torch.no_grad()
    def build(cls, bottom: nn.Module, loader, prep, autocast, dtype: torch.dtype, progress=None,
              chunk: int | None = None, augmented: int = 0, aug=None, seed: int = 0,
              mirror: bool = True, store: torch.device | None = None) -> "FeatureCache":
        """Run ``bottom`` once over ``loader`` (batches of (uint8 images, labels[, dataset indices])),
        ``chunk`` images at a time (all of a batch when None); ``augmented`` views more of each image
        drawn by ``aug`` (an ``augment.AugmentConfig``), each mirrored by a coin where ``mirror``, from
        generators seeded by (``seed``, view, batch): the same cache on every run. ``store``: where the
        cache is kept (None: where it is computed); XLA keeps it in host memory, and its batches arrive
        padded to one shape (``xla.Padded``): the padded rows, labelled ``PAD_LABEL``, are dropped."""
        bottom.eval()
        chunks, labels, order = [], [], []
        for b, batch in enumerate(progress(loader) if progress else loader):
            images, y = batch[0], batch[1]
            index = batch[2] if len(batch) > 2 else torch.arange(len(y))
            x = prep(images)
            views = [x, x.flip(-1)]
            for k in range(augmented):
                g = step_generator(x.device, seed, -1 - k, b)
                views.append(prep(images, flip_mask(index, -1 - k, seed) if mirror else None, aug, g))
            with autocast():
                maps = torch.stack([chunked(bottom, view, chunk).to(dtype) for view in views])
            y = y.to(x.device)
            if store is not None:
                maps, y, index = maps.to(store), y.to(store), index.to(store)
                real = int((y != PAD_LABEL).sum())   # padding is at the end of the last batch
                maps, y, index = maps[:, :real], y[:real], index[:real]
            chunks.append(maps)
            labels.append(y)
            order.append(index)
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

    @property
    def views(self) -> int:
        return self.features.shape[0]

    def gather(self, rows: torch.Tensor, views: torch.Tensor | None) -> torch.Tensor:
        """The cached maps of ``rows``, each in its view (``views``; None: the images themselves)."""
        rows = rows.to(self.features.device)
        view = views.to(self.features.device) if views is not None else torch.zeros_like(rows)
        return self.features[view, rows]

    def view_batches(self, batch_size: int, tta: str):
        """(views, labels) per slice for evaluation: the image, and its mirror unless ``tta`` is 'none'
        (a 'full' TTA's zoom view is not cached: flip only)."""
        for i in range(0, len(self), batch_size):
            views = [self.features[0, i:i + batch_size]] + ([self.features[1, i:i + batch_size]] if tta != "none" else [])
            yield views, self.labels[i:i + batch_size]


def estimate_bytes(bottom: nn.Module, image_size: int, count: int, dtype: torch.dtype, device) -> int:
    """Bytes ``count`` cached views would take, from one tiny forward pass."""
    with torch.no_grad():
        out = bottom.eval()(torch.zeros(1, 3, image_size, image_size, device=device))
    return count * out.numel() * torch.finfo(dtype).bits // 8


def frozen_part(model: nn.Module, stage: int | None, device: torch.device, image_size: int, bf16: bool):
    """(the frozen part as the cache pass runs it, images per call): ``Bottom(model, stage)``, or the whole
    backbone (``Features``) when ``stage`` is None; on a CPU from a prepared copy (batch norm folded,
    weights cast once), ``CHUNK`` images at a time."""
    split = (lambda m: Bottom(m, stage)) if stage is not None else Features
    if device.type == "cpu":
        return split(prepare_for_cpu(model, image_size, bf16=bf16)[0]), CHUNK
    return split(model), None


def seconds_per_view(bottom: nn.Module, image_size: int, device, autocast) -> float:
    """Seconds the cache pass spends per image and view, from timing one chunk after a warm-up one."""
    x = torch.zeros(CHUNK, 3, image_size, image_size, device=device).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), autocast():
        bottom.eval()(x)
        t = time.perf_counter()
        bottom(x).float().sum().item()   # .item(): the device's queue is done too
    return (time.perf_counter() - t) / CHUNK


def free_memory(device: torch.device) -> int:
    """Bytes free where a cache would live: the GPU's free memory, else the host's available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 4 * 2**30


def cache_dtype(precision: str) -> torch.dtype:
    """What a cache holds under Fabric's ``precision``: the dtype the frozen part computes in."""
    return torch.bfloat16 if "bf16" in precision else torch.float16 if "16" in precision else torch.float32
