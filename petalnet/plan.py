"""The training path, chosen once before the loop: how batches are loaded and where images are mirrored,
which part of the model is frozen and how it is computed, precision, compile.

``make_plan`` turns (config, device, model, data sizes) into a ``Plan``; config.json's ``resolved``
section records it. ``batches.build_sources`` and ``step_module`` below realise it: the loop receives
a batch source yielding device-ready ``(x, y)`` and the module to step, and tests nothing itself.
A new path is a new branch here and a new batch source, not an edit of the loop (XLA: ``xla_refusals``).

Frozen parts (``frozen``):
- ``cached-bottom``: ``--unfreeze-from K``: the stem and stages < K computed once per image and mirror
  (``cache.FeatureCache``), the top stages trained on the cached maps (``frozen.Top``);
- ``cached-features``: head-only runs: the whole backbone computed once per image and mirror, the head
  trained on the cached maps (``frozen.Head``);
- ``prepared-cpu``: a frozen backbone not cached (other augmentations, memory, ``--no-cache-frozen``)
  on a CPU runs from a prepared copy (``frozen.CPUFrozenBackbone``);
- ``none``: the model runs as it is (under ``no_grad`` where frozen).
"""
from __future__ import annotations

import dataclasses
import os

import torch
from torch import nn

from petalnet import xla
from petalnet.cache import cache_dtype, estimate_bytes, free_memory, frozen_part, seconds_per_view
from petalnet.errors import OptionError
from petalnet.frozen import Bottom, CPUFrozenBackbone, Features, Head, Top, features_frozen

@dataclasses.dataclass(frozen=True)
class Plan:
    device: str                  # torch device type the model steps on
    precision: str               # Fabric's precision
    loader: str                  # "threads": decoding threads of this process; "workers": worker processes
    workers: int                 # worker processes (loader "workers"), else 0
    threads: int                 # decoding threads (loader "threads"), else 0
    background: bool             # loader threads run at idle priority (a CPU run, one process per machine)
    pin_memory: bool             # pinned pages, non-blocking copies, workers kept across epochs (GPUs)
    flips: str                   # who mirrors images: "loader" (while decoding), "step", "cache" or "off"
    frozen: str                  # "cached-bottom", "cached-features", "prepared-cpu" or "none" (above)
    unfreeze_from: int | None    # stages trained from this one up (--unfreeze-from)
    unfreeze_at: int | None      # the epoch from which every layer trains (--freeze-epochs), else None
    compile: str | None          # torch.compile's mode, or None: eager
    decode: str                  # "cpu" (the loader) or "gpu" (nvJPEG on the device)
    cache_views: int = 0         # augmented views of each training image in the cache (--cache-views)
    note: str | None = None      # said at the start: why a cache was not used

    @property
    def cached(self) -> bool:
        return self.frozen.startswith("cached")

    def resolved(self) -> dict:
        """The plan as config.json records it."""
        return {**dataclasses.asdict(self), "cached_frozen_bottom": self.cached,
                "prepared_frozen_backbone": self.frozen == "prepared-cpu"}


def default_workers(device: torch.device) -> int:
    """Worker processes per training process when --workers is not given. On a CPU (where the plan uses
    one loader thread unless --workers is given) the model's threads need the cores: 2 workers cost
    10-20 % here on 2 cores."""
    if device.type == "cpu":
        return 1
    return max(1, min(8, (os.cpu_count() or 2) // max(1, torch.cuda.device_count())))


def make_plan(cfg, device: torch.device, precision: str, shards: int, model: nn.Module, image_size: int,
              images: tuple[int, int]) -> Plan:
    """The path for ``model`` (frozen as the config says: ``frozen.freeze``) on ``device``; ``shards``:
    processes the records are split between; ``images``: this process's (train, val) shard sizes, which a
    cache would hold. On XLA (TPU cores, or PJRT_DEVICE=CPU) the same path with XLA's constraints
    (``xla_refusals``): one graph per training step, compiled once; batches of one shape
    (``batches.build_sources``) uploaded split over the mesh; flips, augmentation and normalisation on
    the devices inside the step's graph; bf16 autocast in the step; a frozen-part cache kept in host
    memory and uploaded a batch at a time."""
    on_xla, cpu = device.type == "xla", device.type == "cpu"
    if on_xla:
        xla_refusals(cfg, precision)
    elif cfg.decode == "gpu" and device.type != "cuda":
        raise OptionError(f"--decode gpu needs a CUDA device (this run is on {device.type})")
    # threads: no inter-process copy of each batch, JPEGs decoded straight into it (on a GPU into pinned,
    # reused buffers); on a CPU one thread by default, beside the model's threads. PJRT_DEVICE=CPU: the XLA
    # runtime's threads need the cores, one loader thread beside them; a TPU VM (96 vCPUs for 8 cores)
    # decodes in worker processes
    host_cores = cpu or (on_xla and xla.cpu_backend())
    threads = cfg.loader == "threads" or (cfg.loader == "auto" and host_cores and cfg.workers is None)
    count = cfg.workers if cfg.workers is not None else 1 if cpu or threads else \
        max(1, min(8, (os.cpu_count() or 2) // max(1, shards))) if on_xla else default_workers(device)
    stage = getattr(model, "petalnet_frozen_stage", None)
    backbone_frozen = stage is None and features_frozen(model, image_size)
    whole = backbone_frozen and cfg.freeze_epochs == 0   # frozen for the whole run
    frozen, note, aug, crops = "none", None, cfg.augment(), cfg.cache_views
    # augmentations drawn once into the cache's views (--cache-views); MixUp/CutMix mix images per step
    cacheable = not aug.any() or (cfg.cache_views > 0 and not (aug.mixup or aug.cutmix))
    if (stage is not None or whole) and cfg.cache_frozen and cacheable:
        part = Bottom(model, stage) if stage is not None else Features(model)
        maps = (2 + cfg.cache_views) * images[0] + 2 * images[1]   # image, mirror (and crops) of each
        need, free = estimate_bytes(part, image_size, maps, cache_dtype(precision), device), free_memory(device)
        if need <= free / 3:
            frozen = "cached-bottom" if stage is not None else "cached-features"
            if cfg.cache_views and cfg.budget is not None:
                crops, note = views_that_fit(cfg, model, stage, image_size, images, device, precision)
        else:
            note = (f"frozen-part cache would take {need / 2**30:.1f} GiB of {free / 2**30:.1f} GiB free: "
                    "running it every step instead")
    if frozen == "none" and cpu and not cfg.compile and backbone_frozen:
        frozen = "prepared-cpu"
    # a CPU loader thread mirrors images as it decodes them (one flip path less on the cores); on an
    # accelerator the step does it, where it is free
    flips = "off" if not cfg.flip else "cache" if frozen.startswith("cached") else "loader" if threads and cpu \
        else "step"
    return Plan(device=device.type, precision=precision, loader="threads" if threads else "workers",
                workers=0 if threads else count, threads=count if threads else 0,
                background=threads and cpu and shards == 1, pin_memory=device.type == "cuda", flips=flips,
                frozen=frozen, unfreeze_from=stage, unfreeze_at=cfg.freeze_epochs or None,
                compile=cfg.compile_mode if cfg.compile else None, decode=cfg.decode,
                cache_views=crops if frozen.startswith("cached") else 0, note=note)


def xla_refusals(cfg, precision: str) -> None:
    """What XLA cannot run, one line each: the CUDA-only features, and fp16 (TPUs compute in bf16)."""
    refused = {"--compile (XLA compiles the step's graph itself; torch.compile is for CPUs and GPUs)": cfg.compile,
               "--decode gpu (nvJPEG is CUDA's; the loader decodes on the host)": cfg.decode == "gpu",
               "--precision 16-mixed (TPUs run bf16: --precision bf16-mixed or 32)": "16" in precision
               and "bf16" not in precision}
    for what, given in refused.items():
        if given:
            raise OptionError(f"{what}: not available on XLA (--accelerator tpu)")


# With --budget, the cache pass (every view of every image) may take this share of the budget; the rest
# is for the epochs. A rule, not a measured optimum: on petals-mini a 5-minute budget then caches no
# crops (the image and mirror alone take ~90 s on 2 cores) and trains epochs instead; 20 minutes
# caches the default's 4.
CACHE_SHARE = 0.25


def views_that_fit(cfg, model: nn.Module, stage: int | None, image_size: int,
                   images: tuple[int, int], device, precision: str) -> tuple[int, str | None]:
    """(augmented views to cache, the line saying so when fewer than asked) under ``--budget``: from the
    time the bottom takes per image and view, timed here as the cache pass runs it."""
    from petalnet.durations import parse_duration, short
    bf16 = "bf16" in precision
    part = frozen_part(model, stage, device, image_size, bf16)[0]   # as the cache pass runs it
    per_view = seconds_per_view(part, image_size, device,
                                lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16))
    budget = parse_duration(cfg.budget)
    left = CACHE_SHARE * budget / per_view - 2 * (images[0] + images[1])   # image-views after image + mirror
    views = max(0, min(cfg.cache_views, int(left // max(images[0], 1))))
    if views == cfg.cache_views:
        return views, None
    return views, (f"--budget {short(budget)}: {views} of the {cfg.cache_views} augmented views cached (the cache "
                   f"pass may take a quarter of the budget: {per_view * 1000:.1f} ms per image and view here)")


def compiled(plan: Plan, module: nn.Module) -> nn.Module:
    """``module`` as the plan runs it: eager, or torch.compile'd in the plan's mode. With CUDA graphs
    (reduce-overhead) each call starts a new step, so the previous step's graph outputs may be reused.
    On XLA, under bf16 autocast when the plan's precision says so."""
    if plan.device == "xla":
        return xla.Autocast(module) if "bf16" in plan.precision else module
    if plan.compile is None:
        return module
    if "cudagraphs" not in plan.compile and plan.compile in ("reduce-overhead", "max-autotune"):
        return _NewStep(torch.compile(module, mode=plan.compile))
    return torch.compile(module, mode=plan.compile)


class _NewStep(nn.Module):
    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        torch.compiler.cudagraph_mark_step_begin()
        return self.module(x)


def step_module(plan: Plan, model: nn.Module, image_size: int) -> nn.Module:
    """What the loop steps: the trained part on cached maps, the model with a prepared frozen backbone,
    or the model itself. Checkpoints always hold ``model``."""
    float32 = plan.device == "cpu"   # on CPU the small trained part's bf16 backward is 1.9x slower than fp32
    if plan.frozen == "cached-bottom":
        return Top(model, plan.unfreeze_from, float32=float32)
    if plan.frozen == "cached-features":
        return Head(model, float32=float32)
    if plan.frozen == "prepared-cpu":
        return CPUFrozenBackbone(model, image_size, bf16="bf16" in plan.precision)
    return model
