"""``petalnet train``: transfer learning on competition TFRecords with Lightning Fabric.

The loop, top to bottom: build data and model, then per epoch set the sampler, step through the
batches (LR per step, uint8 batch -> device -> preprocess -> forward -> backward -> step), evaluate,
write history, plots and checkpoints. A SIGTERM/SIGINT stops at the next step boundary after saving
``last`` with the position inside the epoch; ``--resume`` continues from there.
"""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
import signal
import sys
import time

import torch
import torch.nn.functional as F

from petalnet import checkpoint, metrics
from petalnet.atomic import write_json, write_lines
from petalnet.accel import DevicePreprocess, flip_mask, keep_freed_memory, make_fabric, resolve_precision
from petalnet.data.dataset import TFRecordImages
from petalnet.data.discovery import discover
from petalnet.data.loader import WithIndex, create_loader
from petalnet.errors import PetalnetError
from petalnet.augment import mixer, step_generator
from petalnet.config import TrainConfig
from petalnet.frozen import (Bottom, CPUFrozenBackbone, FeatureCache, Features, Head, Top, check_splittable,
                             estimate_bytes, features_frozen, set_trainable_from, splittable)
from petalnet.inference import CHUNK, prepare_for_cpu
from petalnet.models import create_model, head_parameters, normalization, set_backbone_frozen, train_mode
from petalnet.predict import TTA_VIEWS, tta_views
from petalnet.schedules import Schedule

# Peak LR per replica when --lr is not given; the peak is this times the number of replicas
# (devices x nodes), the tutorial's rule (LR_MAX = 5e-5 * replicas, batch 16 * replicas).
BASE_LR = {"competition": 5e-5, "cosine": 1e-3, "constant": 1e-3}


class Stop(Exception):
    """Raised inside the loop after a signal, once ``last`` holds the position."""


def _lr_schedule(cfg: TrainConfig, replicas: int) -> Schedule:
    peak = cfg.lr if cfg.lr is not None else BASE_LR.get(cfg.lr_schedule, 1e-3) * replicas
    warm = cfg.warmup_epochs if cfg.warmup_epochs is not None else (
        5 if cfg.lr_schedule == "competition" else min(1.0, cfg.epochs / 3))   # short runs still decay
    return Schedule(cfg.lr_schedule, peak, cfg.epochs, start=cfg.lr_start, min_lr=min(cfg.min_lr, peak),
                    rampup_epochs=warm, sustain_epochs=cfg.sustain_epochs, decay=cfg.lr_decay)


def _optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Two groups, body and head, whose LR is the schedule's times ``lr_scale`` (head_lr_scale for the head)."""
    head = {id(p) for p in head_parameters(model)}
    params = [{"params": [p for p in model.parameters() if id(p) not in head], "lr_scale": 1.0},
              {"params": [p for p in model.parameters() if id(p) in head], "lr_scale": cfg.head_lr_scale}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=0.0, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=0.0)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=0.0, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    raise PetalnetError(f"--optimizer {cfg.optimizer}: choose adamw, adam or sgd")


def prepare_run_dir(cfg: TrainConfig) -> None:
    """Refuse to overwrite a run unless --force (then the old one is removed first). Rank 0 only."""
    if os.path.exists(cfg.out) and (not os.path.isdir(cfg.out) or os.listdir(cfg.out)):
        if not cfg.force:
            raise PetalnetError(f"{cfg.out} already exists: pass --resume {cfg.out} to continue it, "
                                "--force to replace it, or another --out")
        shutil.rmtree(cfg.out) if os.path.isdir(cfg.out) else os.unlink(cfg.out)


class _Signals:
    """Turns SIGTERM/SIGINT into a flag the loop checks at step boundaries."""

    def __init__(self):
        self.received: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:   # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def fit(cfg: TrainConfig, resume_state: dict | None = None) -> dict:
    """Train in this process (under Fabric's launcher, torchrun or SLURM). Returns the summary."""
    fabric = make_fabric(cfg.accelerator, cfg.devices, cfg.num_nodes, cfg.precision)
    cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision, cfg.accelerator))
    if fabric.global_rank == 0 and resume_state is None:
        prepare_run_dir(cfg)
    fabric.launch()
    return _fit(fabric, cfg, resume_state)


def _fit(fabric, cfg: TrainConfig, resume: dict | None) -> dict:
    rank0 = fabric.global_rank == 0
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    if fabric.device.type == "cpu":
        keep_freed_memory()   # else some runs page-fault every step's activations anew (a third of a step)
    fabric.seed_everything(cfg.seed, verbose=False)

    # data
    src = discover(cfg.data)
    if cfg.decode not in ("cpu", "gpu"):
        raise PetalnetError(f"--decode {cfg.decode}: choose cpu or gpu")
    if cfg.decode == "gpu" and fabric.device.type != "cuda":
        raise PetalnetError(f"--decode gpu needs a CUDA device (this run is on {fabric.device.type})")
    if cfg.tta not in TTA_VIEWS:
        raise PetalnetError(f"--tta {cfg.tta}: choose {', '.join(TTA_VIEWS)}")
    cpu_decode = cfg.decode == "cpu"
    has_val = bool(cfg.val_split) and cfg.val_split in src.splits
    if cfg.train_on_val and not has_val:
        raise PetalnetError(f"--train-on-val: {cfg.data} has no '{cfg.val_split}' split")
    train_files = src.split(cfg.train_split) + (src.split(cfg.val_split) if cfg.train_on_val else [])
    train_ds = TFRecordImages(train_files, image_size=src.image_size, labeled=True, decode=cpu_decode)
    val_ds = (TFRecordImages(src.split(cfg.val_split), image_size=src.image_size, labeled=True, decode=cpu_decode)
              if has_val and not cfg.train_on_val else None)
    for ds in filter(None, (train_ds, val_ds)):
        labels, _ = ds.metadata()
        if len(labels) and (labels.min() < 0 or labels.max() >= cfg.num_classes):
            raise PetalnetError(f"{cfg.data}: labels range {labels.min()}..{labels.max()}, outside the model's "
                                f"{cfg.num_classes} classes (--num-classes)")
    data_size = src.image_size or TFRecordImages(train_ds.paths[:1]).load(0)[0].shape[-1]
    image_size = cfg.image_size or data_size
    world = fabric.world_size
    workers = cfg.workers if cfg.workers is not None else default_workers(fabric)
    # CPU default: one decoding thread in this process instead of a worker process (no inter-process
    # copy of each batch; JPEGs decoded straight into a channels-last batch, the model's layout)
    threads = 1 if cfg.workers is None and fabric.device.type == "cpu" else 0
    loader_flips = bool(threads) and cfg.flip   # the thread mirrors each image as it decodes it
    background = world == 1   # decode when a core idles; beside other ranks' models the thread would starve
    on_gpu = fabric.device.type == "cuda"   # pinned pages for non-blocking copies; workers kept across epochs
    train_loader = create_loader(WithIndex(train_ds), cfg.batch_size, shuffle=True, rank=fabric.global_rank,
                                 world_size=world, num_workers=0 if threads else workers, seed=cfg.seed, pad=True,
                                 pin_memory=on_gpu, persistent_workers=on_gpu, threads=threads, flip=loader_flips,
                                 background=background)
    val_loader = val_ds and create_loader(val_ds, cfg.batch_size * 2, rank=fabric.global_rank, world_size=world,
                                          num_workers=0 if threads else workers, pin_memory=on_gpu,
                                          persistent_workers=on_gpu, threads=threads, background=background)

    # model
    model, source = create_model(cfg.model, cfg.num_classes, pretrained=cfg.pretrained, weights=cfg.weights)
    mean, std = normalization(model)
    stage = cfg.unfreeze_from
    if stage is not None and cfg.recipe and not splittable(model):
        # a recipe's partial fine-tune asked of another family (resnet, convnext...): its head instead
        if rank0:
            _say(f"{cfg.model} has no EfficientNet-style stages to unfreeze from: training its head on the "
                 "frozen backbone instead (--fine-tune to train every layer)")
        stage = None
    if stage is not None:
        check_splittable(model, cfg.model, stage)
        set_trainable_from(model, stage)
        frozen = False
    else:
        frozen = cfg.freeze_backbone or cfg.freeze_epochs > 0
        set_backbone_frozen(model, frozen)
    model = model.to(fabric.device, memory_format=torch.channels_last)
    optimizer = _optimizer(cfg, model)
    aug = cfg.augment()
    start_epoch, start_step, history, best, acc = 0, 0, [], None, None
    if resume:
        checkpoint.restore(model, optimizer, resume)
        start_epoch, start_step, history = resume["epoch"], resume["step"], resume["history"]
        best, acc = resume["best"], resume["accumulators"]
    module = model
    prep = DevicePreprocess(fabric.device, mean, std, image_size)
    # a frozen bottom (--unfreeze-from) or a whole frozen backbone (head only, never unfrozen) computed
    # once per image and mirror: only flips may augment what it sees
    backbone_frozen = stage is None and features_frozen(module, image_size)
    whole = backbone_frozen and cfg.freeze_epochs == 0   # frozen for the whole run
    cache = None
    if (stage is not None or whole) and cfg.cache_frozen and not aug.any():
        cache = _build_caches(fabric, cfg, module, stage, train_ds, val_ds, image_size, world, workers, threads,
                              prep, rank0)
    cpu = fabric.device.type == "cpu"
    if cache:
        net = Top(module, stage, float32=cpu) if stage is not None else Head(module, float32=cpu)
    elif cpu and not cfg.compile and backbone_frozen:
        net = CPUFrozenBackbone(module, image_size, bf16="bf16" in cfg.precision)
    else:
        net = module
    model = fabric.setup_module(torch.compile(net) if cfg.compile else net)
    optimizer = fabric.setup_optimizers(optimizer)
    if resume:
        checkpoint.set_rng_state(resume["rng"])
    steps_per_epoch = len(train_loader)
    mix = mixer(aug, cfg.num_classes, cfg.label_smoothing)
    schedule = _lr_schedule(cfg, world)
    meta = {"model_name": cfg.model, "num_classes": cfg.num_classes, "image_size": image_size, "mean": mean,
            "std": std, "weights_source": source, "tta": cfg.tta, "config": dataclasses.asdict(cfg)}

    if rank0:
        os.makedirs(os.path.join(cfg.out, "checkpoints"), exist_ok=True)
        write_json({**dataclasses.asdict(cfg), "resolved": {
            "image_size": image_size, "data_image_size": data_size, "peak_lr": schedule.peak,
            "warmup_epochs": schedule.rampup_epochs, "precision": cfg.precision,
            "world_size": world, "global_batch": cfg.batch_size * world, "weights": source,
            "mean": mean, "std": std, "train_images": len(train_ds), "cached_frozen_bottom": cache is not None,
            "prepared_frozen_backbone": isinstance(net, CPUFrozenBackbone),
            "unfreeze_from": stage,
            "val_images": len(val_ds) if val_ds else 0}}, os.path.join(cfg.out, "config.json"))
        if not resume:
            _say(f"{cfg.model} ({source}), {len(train_ds)} train / {len(val_ds) if val_ds else 0} val images "
                      f"at {image_size}px, {world} x {fabric.device.type}, global batch {cfg.batch_size * world}, "
                      f"peak LR {schedule.peak:g} ({cfg.lr_schedule}), precision {cfg.precision}")

    def save_last(epoch, step, accumulators):
        if rank0:
            checkpoint.save({**meta, "model": module.state_dict(), "optimizer": optimizer.state_dict(),
                             "epoch": epoch, "step": step, "history": history, "best": best,
                             "accumulators": accumulators, "rng": checkpoint.rng_state()},
                            os.path.join(cfg.out, "checkpoints", "last.pt"))
        fabric.barrier()

    total_steps, t_steady, STEADY_AFTER = 0, None, 10   # steady-state rate: steps after the first 10
    train_seconds = sum(h["seconds"] for h in history)
    with _Signals() as signals:
        for epoch in range(start_epoch, cfg.epochs):
            if frozen and cfg.freeze_epochs > 0 and epoch >= cfg.freeze_epochs:
                frozen = False
                set_backbone_frozen(module, False)
                net = module   # not the frozen backbone's prepared copy any more
                # DDP must register the newly trainable parameters
                model = fabric.setup_module(torch.compile(net) if cfg.compile else net)
            train_mode(module)
            step0 = start_step if epoch == start_epoch else 0
            if cache:
                batches = cache[0].batches(cfg.batch_size, epoch, cfg.seed, step0)
            else:
                train_loader.sampler.set_epoch(epoch, start=step0 * cfg.batch_size)
                batches = train_loader
            loss_sum = torch.zeros((), dtype=torch.float64, device=fabric.device)
            correct = torch.zeros((), dtype=torch.long, device=fabric.device)
            seen, t0 = 0, time.perf_counter()
            bar = _bar(cfg, rank0, steps_per_epoch, step0, epoch)
            step = step0
            for images, labels, indices in batches:   # images: rows of the cache when there is one
                lr = schedule(epoch + step / steps_per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group["lr_scale"]
                # the coin is computed where the batch goes: a pageable host->device copy would block
                flips = flip_mask(indices.to(fabric.device, non_blocking=True), epoch, cfg.seed) \
                    if cfg.flip and (cache or not loader_flips) else None
                if cache:
                    x = cache[0].gather(images, flips)
                else:
                    g = step_generator(fabric.device, cfg.seed, epoch, step, fabric.global_rank) if aug.any() else None
                    x = prep(images, flips, aug, g)
                y = labels.to(fabric.device, non_blocking=True)
                target = y
                if mix:
                    x, target = mix(x, y)
                logits = model(x)
                if mix:   # soft targets (label smoothing is inside them)
                    loss = torch.sum(-target * F.log_softmax(logits.float(), dim=1), dim=1).mean()
                else:
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                fabric.backward(loss)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                loss_sum += loss.detach().double() * len(y)
                correct += (logits.argmax(1) == y).sum()
                seen += len(y)
                step += 1
                total_steps += 1
                if total_steps == STEADY_AFTER:
                    t_steady = time.perf_counter()
                if bar is not None:
                    bar.update(1)
                    if step % 10 == 0:
                        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}",
                                        img_s=f"{seen * world / (time.perf_counter() - t0):.0f}")
                stop = _agree(fabric, signals.received is not None, step, world)
                if stop or (cfg.max_steps and total_steps >= cfg.max_steps and step < steps_per_epoch):
                    if not torch.isfinite(loss_sum):
                        raise PetalnetError(_nan_message(cfg, epoch, step))
                    save_last(epoch, step, _accumulate(fabric, acc, loss_sum, correct, seen, t0))
                    if bar is not None:
                        bar.close()
                    if stop:
                        raise Stop(f"stopped by signal at epoch {epoch + 1}, step {step}/{steps_per_epoch}")
                    steady = (total_steps - STEADY_AFTER) * cfg.batch_size * world / (time.perf_counter() - t_steady) \
                        if t_steady and total_steps > STEADY_AFTER else None
                    return {"stopped_at_step": step, "epoch": epoch, "steady_images_per_second": steady}
            if bar is not None:
                bar.close()
            part = _accumulate(fabric, acc if epoch == start_epoch else None, loss_sum, correct, seen, t0)
            if not math.isfinite(part["loss"]):
                raise PetalnetError(_nan_message(cfg, epoch, step))
            row = {"epoch": epoch + 1, "lr": schedule(epoch + 1), "train_loss": part["loss"] / part["seen"],
                   "train_accuracy": part["correct"] / part["seen"], "seconds": part["seconds"],
                   "train_images_per_second": part["seen"] / max(part["seconds"], 1e-9)}
            if val_loader:
                if cache:
                    row.update(evaluate(fabric, net, cache[1].view_batches(cfg.batch_size * 2, cfg.tta),
                                        cfg.num_classes))
                else:
                    row.update(evaluate(fabric, net, _view_batches(val_loader, prep, cfg.tta), cfg.num_classes))
            history.append(row)
            train_seconds += part["seconds"]
            improved = val_loader and (best is None or row["val_macro_f1"] > best["val_macro_f1"])
            if improved or (not val_loader):
                best = dict(row)
            save_last(epoch + 1, 0, None)
            if rank0:
                if improved or not val_loader:
                    checkpoint.save({**meta, "model": module.state_dict(), "epoch": epoch + 1, "metrics": row},
                                    os.path.join(cfg.out, "checkpoints", "best.pt"))
                write_lines(history, os.path.join(cfg.out, "history.jsonl"))
                _say(_epoch_line(row, cfg.epochs))
            if cfg.max_steps and total_steps >= cfg.max_steps:
                break
    summary = {"model": cfg.model, "image_size": image_size, "epochs": len(history), "best_epoch": best["epoch"],
               "best_val_macro_f1": best.get("val_macro_f1"), "best_val_accuracy": best.get("val_accuracy"),
               "final": history[-1], "train_seconds": train_seconds,
               "train_images_per_second": sum(h["train_images_per_second"] * h["seconds"] for h in history)
               / max(train_seconds, 1e-9), "world_size": world, "weights": source,
               "parameters": sum(p.numel() for p in module.parameters())}
    if rank0:
        write_json(summary, os.path.join(cfg.out, "summary.json"))
        from petalnet.plots import plot_history, plot_schedule
        plot_history(history, os.path.join(cfg.out, "curves.png"), title=f"{cfg.model} at {image_size}px")
        plot_schedule(schedule, steps_per_epoch, os.path.join(cfg.out, "lr.png"))
    if world > 1:
        print(f"[rank {fabric.global_rank}] final val_macro_f1={history[-1].get('val_macro_f1')} "
              f"val_accuracy={history[-1].get('val_accuracy')} train_loss={history[-1]['train_loss']:.6f}",
              file=sys.stderr, flush=True)
    return {**summary, "global_rank": fabric.global_rank}


def default_workers(fabric) -> int:
    """DataLoader workers per process when --workers is not given. On CPU (where ``_fit`` uses one
    loader thread instead unless --workers is given) the model's threads need the cores: 2 workers
    cost 10-20 % here on 2 cores."""
    if fabric.device.type == "cpu":
        return 1
    return max(1, min(8, (os.cpu_count() or 2) // max(1, torch.cuda.device_count())))


def _agree(fabric, local_stop: bool, step: int, world: int) -> bool:
    """Whether any rank got a stop signal; ranks compare every 10 steps so they stop at the same step."""
    if world == 1:
        return local_stop
    if step % 10:
        return False
    flag = fabric.all_reduce(torch.tensor(float(local_stop), device=fabric.device), reduce_op="sum")
    return bool(flag.item() > 0)


def _accumulate(fabric, prev: dict | None, loss_sum, correct, seen: int, t0: float) -> dict:
    """The epoch's totals so far, over all ranks, plus what was done before a resume (``prev`` holds
    world totals already, so it is added once, after the reduction)."""
    totals = torch.tensor([loss_sum.item(), correct.item(), seen], dtype=torch.float64, device=fabric.device)
    if fabric.world_size > 1:
        totals = fabric.all_reduce(totals, reduce_op="sum")
    prev = prev or {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
    return {"loss": prev["loss"] + totals[0].item(), "correct": prev["correct"] + int(totals[1].item()),
            "seen": prev["seen"] + int(totals[2].item()), "seconds": prev["seconds"] + time.perf_counter() - t0}


def _build_caches(fabric, cfg, module, stage, train_ds, val_ds, image_size, world, workers, threads, prep, rank0):
    """(train cache, val cache or None), or None when they would not fit in a third of the free memory."""
    dtype = torch.bfloat16 if "bf16" in cfg.precision else torch.float16 if "16" in cfg.precision else torch.float32
    split = (lambda m: Bottom(m, stage)) if stage is not None else Features
    bottom = split(module)
    need = estimate_bytes(bottom, image_size, len(train_ds) // world + (len(val_ds) // world if val_ds else 0),
                          dtype, fabric.device)
    free = torch.cuda.mem_get_info(fabric.device)[0] if fabric.device.type == "cuda" else _free_ram()
    if need > free / 3:
        if rank0:
            _say(f"frozen-bottom cache would take {need / 2**30:.1f} GiB of {free / 2**30:.1f} GiB free: "
                 "running the bottom every step instead")
        return None
    t0 = time.perf_counter()
    # this rank's fixed shard of the training set, in dataset order (epochs reshuffle it locally)
    loaders = [create_loader(WithIndex(train_ds), cfg.batch_size * 2, rank=fabric.global_rank, world_size=world,
                             num_workers=0 if threads else workers, pad=True, threads=threads, background=world == 1)]
    if val_ds:
        loaders.append(create_loader(val_ds, cfg.batch_size * 2, rank=fabric.global_rank, world_size=world,
                                     num_workers=0 if threads else workers, threads=threads, background=world == 1))
    chunk = None
    if fabric.device.type == "cpu":   # the bottom from a prepared copy: batch norm folded, weights cast once
        bottom = split(prepare_for_cpu(module, image_size, bf16=dtype == torch.bfloat16)[0])
        chunk = CHUNK
    caches = [FeatureCache.build(bottom, loader, prep, fabric.autocast, dtype, chunk=chunk) for loader in loaders]
    if rank0:
        part = f"frozen bottom (stem + blocks[:{stage}])" if stage is not None else "frozen backbone"
        _say(f"{part} cached for {sum(len(c) for c in caches)} images and "
             f"their mirrors in {time.perf_counter() - t0:.0f}s ({sum(c.nbytes() for c in caches) / 2**20:.0f} MiB)")
    return caches + [None] * (2 - len(caches))


def _free_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 4 * 2**30


def _view_batches(loader, prep, tta: str):
    """(TTA views of the batch, labels), the views predict averages."""
    for images, labels in loader:
        yield tta_views(prep(images), tta), labels


@torch.no_grad()
def evaluate(fabric, module, batches, num_classes: int) -> dict:
    """Validation loss, accuracy, macro-F1 over every record exactly once, summed across ranks.
    ``batches`` yields (list of views of a batch, labels); the views' probabilities are averaged."""
    was_training = module.training
    module.eval()
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long, device=fabric.device)
    loss = torch.zeros((), dtype=torch.float64, device=fabric.device)
    for views, labels in batches:
        y = labels.to(fabric.device)
        with fabric.autocast():
            probs = sum(F.softmax(module(v).float(), dim=1) for v in views) / len(views)
        loss += F.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="sum").double()
        cm += metrics.confusion_matrix(y, probs.argmax(1), num_classes)
    if fabric.world_size > 1:
        cm = fabric.all_reduce(cm, reduce_op="sum")
        loss = fabric.all_reduce(loss, reduce_op="sum")
    module.train(was_training)
    s = metrics.summary(cm)
    n = cm.sum().item()
    return {"val_loss": loss.item() / max(n, 1), "val_accuracy": s["accuracy"], "val_macro_f1": s["macro_f1"],
            "val_images": n}


def _nan_message(cfg, epoch, step) -> str:
    last = os.path.join(cfg.out, "checkpoints", "last.pt")
    kept = f"the last good checkpoint is {last}" if os.path.exists(last) else "no checkpoint was written"
    return f"training loss became NaN/inf at epoch {epoch + 1}, step {step}: stopped; {kept} (try a lower --lr)"


def _epoch_line(row: dict, epochs: int) -> str:
    line = (f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.4f}")
    if "val_macro_f1" in row:
        line += (f" | val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.4f} "
                 f"macro-F1 {row['val_macro_f1']:.4f}")
    return line + f" | lr {row['lr']:.2e} | {row['train_images_per_second']:.0f} img/s, {row['seconds']:.0f}s"


def _say(line: str) -> None:
    print(line, flush=True)


def _bar(cfg, rank0, total, initial, epoch):
    if not rank0 or cfg.quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, unit="step")


def resume_state(run_dir: str) -> tuple[TrainConfig, dict]:
    """The config and ``last`` checkpoint of a run, to continue it."""
    path = os.path.join(run_dir, "checkpoints", "last.pt")
    state = checkpoint.load_resume(path)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in state["config"].items() if k in known})
    cfg.out = run_dir
    return cfg, state


def train(cfg: TrainConfig, resume: str | None = None) -> dict:
    """Entry point for the CLI and for Python: fresh run, or continue ``resume``."""
    state = None
    if resume:
        cfg_saved, state = resume_state(resume)
        cfg = dataclasses.replace(cfg_saved, quiet=cfg.quiet, workers=cfg.workers)
    cfg.check()   # before anything is written: a bad option leaves no run folder
    if not cfg.data or not cfg.out:
        raise PetalnetError("train needs --data and --out (or --resume RUN_DIR)")
    return fit(cfg, state)

