"""The frozen part's outputs computed once: for each image and its mirror, on the device.

When nothing but flips augments what a frozen bottom (``frozen.Bottom``) or a whole frozen backbone
(``frozen.Features``) sees, its outputs for every image and mirror are computed once and the epochs
run on them: after that pass an epoch of a head-only run reads no images at all (benchmarks/RESULTS.md).
"""
from __future__ import annotations

import torch
from torch import nn

from petalnet.inference import chunked


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
                pair = torch.stack([chunked(bottom, view, chunk) for view in (x, x.flip(-1))])
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
