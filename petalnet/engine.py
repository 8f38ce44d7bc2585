"""``petalnet train``: transfer learning on competition TFRecords with Lightning Fabric.

setup -> fit -> (train_epoch, validate) around one ``state.RunState``, as litgpt's fine-tuning scripts:
- ``setup``: data, model (frozen as configured), the plan (``plan.make_plan``: every choice of path is
  made there, once), the batch sources and the module to step, optimizer, schedule, resumed state;
- ``fit``: the epochs; each ends with validation and the run folder's writes (``rundir.RunDir``);
- ``train_epoch``: the loop. It has no branch on the path: device-ready ``(x, y)`` in, steps out.
A SIGTERM/SIGINT stops at the next step boundary after saving ``last`` with the position inside the
epoch; ``--resume`` continues from there. ``--budget``: a planner (``budget.BudgetPlanner``) sets the
epochs and the LR schedule from the steps it times, called by ``fit`` before each epoch and after its
validation, and by ``Pace.after_step`` after each step (an epoch it ends early is a finished epoch).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

from petalnet import checkpoint, metrics
from petalnet.callbacks import epoch_end
from petalnet.accel import DevicePreprocess, batch_local_ops, keep_freed_memory, make_fabric, resolve_precision, topology
from petalnet.augment import TTA_VIEWS, loss_for, mixer, no_mixing
from petalnet.batches import build_sources
from petalnet.budget import NoBudget, make_planner
from petalnet.config import TrainConfig
from petalnet.data.splits import open_splits
from petalnet.ema import make_average, step_update
from petalnet.errors import PetalnetError
from petalnet.frozen import effective_freezing, freeze, set_backbone_frozen, train_mode
from petalnet.models import create_model, normalization
from petalnet.optim import build_optimizer, lr_schedule, set_lr
from petalnet.parallel import Topology
from petalnet.pace import (Meter, Pace, Signals, epoch_bar, epoch_line, loss_dtype, say_over_bars, stage_progress,
                           zeros_on)
from petalnet.plan import Plan, compiled, make_plan, step_module
from petalnet.rundir import RunDir, writing
from petalnet.state import RunState


class Stop(Exception):
    """Raised after a signal, once ``last`` holds the position."""


@dataclasses.dataclass
class Training:
    """Everything ``setup`` decided and built; ``fit`` and ``train_epoch`` only read it (and step)."""
    fabric: object
    top: Topology                 # replicas, this process's share of the records, who writes
    cfg: TrainConfig
    plan: Plan
    state: RunState
    run_dir: RunDir
    net: torch.nn.Module          # what is stepped, unwrapped
    module: torch.nn.Module       # ``net`` as Fabric (and torch.compile) wrapped it
    eval_net: torch.nn.Module     # what validation runs: ``net``, or the same over the --ema average
    batches: object               # batches.ImageBatches or CachedBatches
    val: object | None            # batches.ImageViews, cached views, or None
    budget: object                # budget.BudgetPlanner or NoBudget: the epochs and the LR schedule
    mix: object                   # (x, y) -> (x, targets)
    criterion: object             # (logits, targets) -> loss
    after_step: object            # (global step) -> None: the --ema average's update, or nothing
    image_size: int
    say: object
    progress: object              # pace.stage_progress: bars for validation (None: no bars)
    started: float                # perf_counter at the start, less the epochs' seconds before a resume
    sources_seconds: float        # building the batch sources (the cache pass): counted in the first epoch
    resolved: dict                # config.json's "resolved" section (rewritten when the budget plans)
    callbacks: tuple = ()         # epoch-end callbacks (petalnet.api): after each epoch's writes, outside the loop

    @property
    def schedule(self):
        """The LR schedule: --epochs long, or the budget's plan (stretched or compressed to it)."""
        return self.budget.schedule


def train(cfg: TrainConfig, resume: str | None = None, callbacks=(), started: float | None = None) -> dict:
    """Entry point for the CLI (and ``petalnet.api.train``): a fresh run, or continue the run folder ``resume``.
    Returns the summary (``summarize``: the same keys however the run ended). ``callbacks``: see
    ``petalnet.api``. ``started``: ``time.perf_counter()`` when the command started (the CLI's, before its
    imports), counted in ``--budget``; default now."""
    already = time.perf_counter() - started if started is not None else 0.0
    saved, started = None, started if started is not None else time.perf_counter()
    if resume:
        saved_cfg, saved = resume_state(resume)
        cfg = dataclasses.replace(saved_cfg, quiet=cfg.quiet, workers=cfg.workers)
    cfg.check()   # before anything is written: a bad option leaves no run folder
    if not cfg.data or not cfg.out:
        raise PetalnetError("train needs --data and --out (or --resume RUN_DIR)")
    budget = make_planner(cfg.budget, cfg.epochs, already)   # its clock starts now
    fabric = make_fabric(cfg.accelerator, cfg.devices, cfg.num_nodes, cfg.precision)
    cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision, cfg.accelerator))
    writer = topology(fabric).writer
    with writing(cfg.out) if writer else contextlib.nullcontext():   # one writer per run folder
        if writer and not resume:
            data = cfg.data if isinstance(cfg.data, (list, tuple)) else [cfg.data]
            RunDir(cfg.out).prepare(cfg.force, [*data, *filter(None, [cfg.weights])])
        fabric.launch()
        with batch_local_ops(fabric):   # the cache pass, the steps and validation
            return fit(dataclasses.replace(setup(fabric, cfg, saved, started, budget), callbacks=tuple(callbacks)))


def resume_state(run_dir: str) -> tuple[TrainConfig, dict | None]:
    """The config and ``last`` checkpoint of a run, to continue it; a run killed before its first
    checkpoint (config.json only) starts again from the beginning with its config."""
    run = RunDir(run_dir)
    if not os.path.isfile(run.last) and os.path.isfile(os.path.join(run_dir, "config.json")):
        with open(os.path.join(run_dir, "config.json")) as fh:
            config, state = json.load(fh), None
        _say(f"{run_dir}: no checkpoint yet: starting it again from the beginning")
    else:
        state = checkpoint.load_resume(run.last)
        config = state["config"]
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in config.items() if k in known})
    cfg.out = run_dir
    return cfg, state


def setup(fabric, cfg: TrainConfig, resume: dict | None, started: float | None = None, budget=None) -> Training:
    top = topology(fabric)
    say = _say if top.writer else (lambda line: None)
    _prepare_process(fabric, cfg)
    train_ds, val_ds, data_size = open_splits(cfg.data, cfg.image_size, train_split=cfg.train_split,
                                              val_split=cfg.val_split, train_on_val=cfg.train_on_val,
                                              num_classes=cfg.num_classes, decode=cfg.decode == "cpu", say=say)
    image_size, world, shards = cfg.image_size or data_size, top.replicas, top.shards
    for ds in filter(None, (train_ds, val_ds)):   # JPEGs at most half as large as needed: reduced-scale decode
        ds.decode_size = image_size
    if not resume:   # a line as each slow part is done (data, model): no long silence
        say(f"{len(train_ds)} train / {len(val_ds) if val_ds else 0} val images at {image_size}px; loading {cfg.model}")
    model, source = create_model(cfg.model, cfg.num_classes, pretrained=cfg.pretrained, weights=cfg.weights)
    mean, std = normalization(model)
    say(freeze(model, cfg) or "")
    cfg = dataclasses.replace(cfg, **effective_freezing(model, cfg))   # config.json: what is frozen, once
    model = model.to(fabric.device, memory_format=torch.channels_last)
    plan = make_plan(cfg, fabric.device, cfg.precision, shards, model, image_size,
                     (len(train_ds) // shards, len(val_ds) // shards if val_ds else 0))
    say(plan.note or "")
    meta = {"model_name": cfg.model, "num_classes": cfg.num_classes, "image_size": image_size, "mean": mean,
            "std": std, "weights_source": source, "tta": cfg.tta, "config": dataclasses.asdict(cfg)}
    average = make_average(model, cfg.ema)
    state = RunState(meta, model, build_optimizer(cfg, model), average=average)
    if resume:
        state.restore(resume)
    spent = sum(h["seconds"] for h in state.history) + (state.partial or {}).get("seconds", 0.0)
    started = (started or time.perf_counter()) - spent   # the epochs before a resume count
    budget = budget or NoBudget(cfg.epochs)
    budget.start_run(lambda epochs: lr_schedule(dataclasses.replace(cfg, epochs=epochs), world), state.budget, spent)
    schedule = budget.schedule
    run_dir = RunDir(cfg.out, writer=top.writer)
    run_dir.open(state.checkpoint_bytes())   # refused first when the disk cannot hold the checkpoints
    resolved = {"image_size": image_size, "data_image_size": data_size, "peak_lr": schedule.peak,
                "warmup_epochs": schedule.rampup_epochs, "world_size": world, "global_batch": cfg.batch_size * world,
                "weights": source, "mean": mean, "std": std, "train_images": len(train_ds),
                "val_images": len(val_ds) if val_ds else 0, **top.record(), **plan.resolved(),
                "budget": budget.record()}
    run_dir.write_config(cfg, resolved)
    if not resume:
        say(f"{cfg.model} ({source}), {world} x {fabric.device.type}{' (SPMD)' if top.mesh else ''}, global batch "
            f"{cfg.batch_size * world}, peak LR {schedule.peak:g} ({cfg.lr_schedule}), precision {cfg.precision}")
    prep = DevicePreprocess(fabric.device, mean, std, image_size)
    progress, t0 = stage_progress(cfg.quiet, top.writer), time.perf_counter()
    batches, val = build_sources(plan, cfg, fabric, top, model, train_ds, val_ds, image_size, prep, say, progress)
    sources_seconds = time.perf_counter() - t0
    _size_budget(budget, fabric, top, cfg, len(batches), resolved["val_images"] // shards, state, say)
    net = step_module(plan, model, image_size)
    module = fabric.setup_module(compiled(plan, net))
    eval_net = step_module(plan, average.module, image_size) if average else net
    after_step = step_update(average, model, cfg.ema)
    state.optimizer = fabric.setup_optimizers(state.optimizer)
    if resume:
        checkpoint.set_rng_state(resume["rng"])
    mix = mixer(cfg.augment(), cfg.num_classes, cfg.label_smoothing)
    criterion = loss_for(mix, cfg.label_smoothing)
    return Training(fabric, top, cfg, plan, state, run_dir, net, module, eval_net, batches, val, budget,
                    mix or no_mixing, criterion, after_step, image_size, say, progress, started, sources_seconds,
                    resolved)


def _prepare_process(fabric, cfg: TrainConfig) -> None:
    """This process before anything random is drawn: --deterministic, the allocator, the seeds."""
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    if fabric.device.type == "cpu":
        keep_freed_memory()   # else some runs page-fault every step's activations anew (a third of a step)
    fabric.seed_everything(cfg.seed, verbose=False)


def _size_budget(budget, fabric, top: Topology, cfg: TrainConfig, steps: int, val_images: int, state: RunState,
                 say) -> None:
    """The budget planner told the run's sizes: steps an epoch, this process's validation images, views, batch,
    checkpoint bytes; under DDP the ranks agree on its plan (rank 0's) every ``Pace.AGREE_EVERY`` steps."""
    ranks = fabric.world_size > 1
    budget.set_sizes(steps, val_images=val_images, views=len(TTA_VIEWS[cfg.tta]),
                     batch_images=cfg.batch_size * top.per_shard, write_bytes=state.checkpoint_bytes(),
                     say=say_over_bars if top.writer else say, margin=Pace.AGREE_EVERY if ranks else 1,
                     agree=(lambda n: fabric.broadcast(n, 0)) if ranks else (lambda n: n))


def fit(t: Training) -> dict:
    """The epochs from where the state is; returns the summary (also when stopped inside an epoch)."""
    fabric, cfg, state = t.fabric, t.cfg, t.state
    with Signals() as signals:
        pace = Pace(fabric, signals, cfg.max_steps, cfg.batch_size * t.top.replicas, t.budget)
        walls = []   # this process's epochs, training and validation: the estimate of the time left
        while state.epoch < t.budget.epochs:   # --epochs, or the budget's plan (which may shorten)
            epoch = state.epoch
            if t.plan.unfreeze_at is not None and epoch >= t.plan.unfreeze_at and state.model.petalnet_frozen:
                _unfreeze(t)
            train_mode(state.model)   # frozen layers stay in eval mode (validation set them all to eval)
            t0 = time.perf_counter()
            t.budget.begin_epoch(epoch, state.step)
            meter, step = train_epoch(t, epoch, state.step, pace)
            if not walls:   # the images/s of the real pipeline: the cache pass is part of the first epoch
                t0 -= t.sources_seconds
            totals = meter.totals(fabric, state.partial, t0)
            if not math.isfinite(totals["loss"]):
                raise PetalnetError(t.run_dir.nan_message(epoch, step))
            if step < len(t.batches) and not pace.out_of_time:   # stopped inside the epoch: save the position
                state.step, state.partial, state.budget = step, totals, t.budget.saved()
                t.run_dir.save_last(state)
                fabric.barrier()
                if pace.signalled:
                    raise Stop(f"stopped by signal at epoch {epoch + 1}, step {step}/{len(t.batches)}")
                return summarize(t, pace, stopped_at={"epoch": epoch + 1, "step": step})
            row = {"epoch": epoch + 1, "lr": t.schedule(epoch + 1), "train_loss": totals["loss"] / totals["seen"],
                   "train_accuracy": totals["correct"] / totals["seen"], "seconds": totals["seconds"],
                   "train_images_per_second": totals["seen"] / max(totals["seconds"], 1e-9)}
            if t.val is not None:
                tv = time.perf_counter()
                row.update(validate(fabric, t.eval_net, t.val, cfg.num_classes, t.progress))
                row["val_seconds"] = time.perf_counter() - tv
            if t.budget.end_epoch(epoch + 1, ended_early=step < len(t.batches)):   # the budget's (re-)plan
                _record_plan(t)
            state.budget = t.budget.saved()
            t.run_dir.end_epoch(state, state.end_epoch(row))
            fabric.barrier()
            walls.append(time.perf_counter() - t0 - (t.sources_seconds if not walls else 0.0))
            left = (t.budget.epochs - epoch - 1) * sum(walls) / len(walls)
            t.say(epoch_line(row, t.budget.epochs, state.history, left))
            if epoch_end(t.callbacks, row, state.history) or pace.max_steps_reached:
                break
    summary = summarize(t, pace)
    t.run_dir.finish({k: v for k, v in summary.items() if k != "global_rank"}, state.history, t.schedule,
                     len(t.batches), title=f"{cfg.model} at {t.image_size}px", label_smoothing=cfg.label_smoothing,
                     head_lr_scale=cfg.head_lr_scale)
    if fabric.world_size > 1:
        last = state.history[-1]
        print(f"[rank {fabric.global_rank}] final val_macro_f1={last.get('val_macro_f1')} "
              f"val_accuracy={last.get('val_accuracy')} train_loss={last['train_loss']:.6f}",
              file=sys.stderr, flush=True)
    return summary


def train_epoch(t: Training, epoch: int, start: int, pace: Pace):
    """Steps of ``epoch`` from step ``start`` until its end or a stop: (the epoch's Meter, step reached)."""
    meter, steps, optimizer = Meter(t.fabric.device), len(t.batches), t.state.optimizer
    bar = epoch_bar(t.cfg, t.fabric, steps, start, epoch, t.budget.epochs,
                    t.state.history[-1].get("val_seconds", 0.0) if t.state.history else 0.0)
    step = start
    for x, y in t.batches.epoch(epoch, start):
        lr = t.schedule(epoch + step / steps)
        set_lr(optimizer, lr)
        x, target = t.mix(x, y)
        logits = t.module(x)
        loss = t.criterion(logits, target)
        # before the optimizer step, whose sync ends an XLA step: added after it, the sums were a second
        # graph run every step (measured)
        meter.add(loss, logits, y)
        t.fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t.after_step(epoch * steps + step)
        step += 1
        bar.advance(step, loss, lr, meter.seen * t.fabric.world_size)
        if pace.after_step(step):
            break
    bar.close()
    return meter, step


@torch.no_grad()
def validate(fabric, module, batches, num_classes: int, progress=None) -> dict:
    """Validation loss, accuracy, macro-F1 over every record exactly once, summed across ranks.
    ``batches`` yields (list of views of a batch, labels); the views' probabilities are averaged.
    ``progress``: a bar over the batches (``pace.stage_progress``)."""
    was_training = module.training
    module.eval()
    # summed into inside the evaluation step's graph (``pace.zeros_on``: no graph of their own on XLA)
    cm = zeros_on(fabric.device, torch.long, (num_classes, num_classes))
    loss = zeros_on(fabric.device, loss_dtype(fabric.device))
    for views, labels in progress(batches, "validate") if progress else batches:
        y = labels.to(fabric.device)
        with fabric.autocast():
            probs = sum(F.softmax(module(v).float(), dim=1) for v in views) / len(views)
        loss += F.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="sum").to(loss.dtype)
        cm += metrics.confusion_matrix(y, probs.argmax(1), num_classes)
    if fabric.world_size > 1:
        cm = fabric.all_reduce(cm, reduce_op="sum")
        loss = fabric.all_reduce(loss, reduce_op="sum")
    module.train(was_training)
    cm = cm.cpu()   # the summary's masks and reads on the host: on XLA, a dozen small graphs otherwise
    s = metrics.summary(cm)
    n = cm.sum().item()
    return {"val_loss": loss.cpu().item() / max(n, 1), "val_accuracy": s["accuracy"], "val_macro_f1": s["macro_f1"],
            "val_images": n}


def summarize(t: Training, pace: Pace, stopped_at: dict | None = None) -> dict:
    """The run's summary, the same keys however it ended (``stopped_at``: the position when it stopped
    inside an epoch, else None)."""
    history, best = t.state.history, t.state.best or {}
    seconds = sum(h["seconds"] for h in history)
    return {"model": t.cfg.model, "image_size": t.image_size, "epochs": len(history),
            "best_epoch": best.get("epoch"), "best_val_macro_f1": best.get("val_macro_f1"),
            "best_val_accuracy": best.get("val_accuracy"), "final": history[-1] if history else None,
            "train_seconds": seconds, "wall_seconds": time.perf_counter() - t.started,
            "train_images_per_second": sum(h["train_images_per_second"] * h["seconds"] for h in history)
            / max(seconds, 1e-9), "steady_images_per_second": pace.steady_rate(), "stopped_at": stopped_at,
            "world_size": t.top.replicas, "weights": t.state.meta["weights_source"],
            "parameters": sum(p.numel() for p in t.state.model.parameters()), "plan": t.plan.resolved(),
            **t.budget.summary(), "global_rank": t.fabric.global_rank if t.fabric.world_size > 1 else t.top.shard}


def _record_plan(t: Training) -> None:
    """config.json again, with the budget's plan and the seconds it came from."""
    t.resolved.update(warmup_epochs=t.schedule.rampup_epochs, budget=t.budget.record())
    t.run_dir.write_config(t.cfg, t.resolved)


def _unfreeze(t: Training) -> None:
    """--freeze-epochs K: from epoch K every layer trains, on the model itself (not a prepared copy)."""
    set_backbone_frozen(t.state.model, False)
    t.net, t.eval_net = t.state.model, t.state.validated()
    t.module = t.fabric.setup_module(compiled(t.plan, t.net))   # DDP registers the newly trainable parameters


def _say(line: str) -> None:
    if line:
        print(line, flush=True)
