"""The instruments of the training loop: the epoch's totals kept on the device (``Meter``), steps and
their steady rate and when to stop (``Pace``: a signal or --max-steps), and progress: tqdm.auto's bar
(a terminal's, or a Jupyter widget where stderr is no terminal) for caching, each epoch and validation
on rank 0 of an interactive run; elsewhere the stages' own lines (train.py, batches.py) say it."""
from __future__ import annotations

import signal
import sys
import time

import torch

from petalnet.durations import duration


class Meter:
    """The epoch's loss sum and correct predictions, kept on the device (no host sync per step)."""

    def __init__(self, device):
        self.loss = zeros_on(device, loss_dtype(device))
        self.correct = zeros_on(device, torch.long)
        self.seen = 0

    def add(self, loss, logits, y) -> None:
        self.loss += loss.detach().to(self.loss.dtype) * len(y)
        self.correct += (logits.argmax(1) == y).sum()
        self.seen += len(y)

    def totals(self, fabric, before: dict | None, t0: float) -> dict:
        """The epoch's totals over all ranks, plus ``before`` (world totals saved before a resume)."""
        sums = torch.tensor([self.loss.cpu().item(), self.correct.cpu().item(), self.seen], dtype=torch.float64)
        if fabric.world_size > 1:
            sums = fabric.all_reduce(sums.to(fabric.device), reduce_op="sum").cpu()
        before = before or {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        return {"loss": before["loss"] + sums[0].item(), "correct": before["correct"] + int(sums[1].item()),
                "seen": before["seen"] + int(sums[2].item()),
                "seconds": before["seconds"] + time.perf_counter() - t0}


def loss_dtype(device) -> torch.dtype:
    """Loss sums in float64, in float32 on XLA: TPUs have no float64 arithmetic."""
    return torch.float32 if torch.device(device).type == "xla" else torch.float64


def zeros_on(device, dtype, shape=(1,)) -> torch.Tensor:
    """Zeros to sum into on ``device``, made on the host and copied, never 0-dim. On XLA a copied tensor
    is data the step's graph reads, whereas ``torch.zeros(device=...)`` is a graph of its own, and a 0-dim
    tensor holding 0 or 1, even copied, is a constant of every graph that reads it (torch_xla's
    "special scalars"): each epoch's new 0-dim zeros compiled one more graph at its start (measured).
    Under SPMD the copy is also marked replicated over the mesh, the sharding a sum carries from the step
    before: an unmarked copy made each epoch's first step a graph of its own (measured; ``xla.replicated``)."""
    zeros = torch.zeros(shape, dtype=dtype).to(device)
    if zeros.device.type == "xla":
        from petalnet.xla import replicated
        return replicated(zeros)
    return zeros


class Pace:
    """Steps taken by this process, their steady rate after the first 10, and when to stop: on a
    signal, when the budget's planner (``budget``) says the epoch must end to end on time (ranks agree
    every ``AGREE_EVERY`` steps, so they stop at the same one), or after --max-steps."""
    STEADY_AFTER = 10
    AGREE_EVERY = 10

    def __init__(self, fabric, signals: "Signals", max_steps: int | None, images_per_step: int, budget=None):
        self.fabric, self.signals, self.max_steps, self.images_per_step = fabric, signals, max_steps, images_per_step
        self.budget = budget
        self.total, self.t_steady, self.signalled, self.out_of_time = 0, None, False, False

    @property
    def max_steps_reached(self) -> bool:
        return bool(self.max_steps) and self.total >= self.max_steps

    def after_step(self, step: int) -> bool:
        self.total += 1
        if self.total == self.STEADY_AFTER:
            self.t_steady = time.perf_counter()
        over = self.budget is not None and self.budget.after_step(step)
        self.signalled, self.out_of_time = self._agree(self.signals.received is not None, over, step)
        return self.signalled or self.out_of_time or self.max_steps_reached

    def _agree(self, signalled: bool, over: bool, step: int) -> tuple[bool, bool]:
        if self.fabric.world_size == 1:
            return signalled, over
        if step % self.AGREE_EVERY:
            return False, False
        flags = self.fabric.all_reduce(torch.tensor([float(signalled), float(over)], device=self.fabric.device),
                                       reduce_op="sum")
        return bool(flags[0].item() > 0), bool(flags[1].item() > 0)

    def steady_rate(self) -> float | None:
        if self.t_steady is None or self.total <= self.STEADY_AFTER:
            return None
        return (self.total - self.STEADY_AFTER) * self.images_per_step / (time.perf_counter() - self.t_steady)


class Signals:
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


def interactive() -> bool:
    """Whether bars are wanted: stderr is a terminal, or this runs in a Jupyter kernel (whose stderr is
    no terminal; tqdm.auto draws a widget there)."""
    if sys.stderr.isatty():
        return True
    ipython = sys.modules.get("IPython")   # never imported here: only a kernel that runs us has it
    shell = ipython.get_ipython() if ipython and hasattr(ipython, "get_ipython") else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def stage_progress(quiet: bool, rank0: bool):
    """``progress(iterable, desc)``: the iterable under tqdm.auto's bar (steps counted by ``len``) on rank
    0 of an interactive run without --quiet; None elsewhere."""
    if quiet or not rank0 or not interactive():
        return None
    from tqdm.auto import tqdm
    return lambda it, desc: tqdm(it, desc=desc, total=len(it), leave=False, unit="batch", mininterval=0.5)


class Bar:
    """tqdm.auto's bar for an epoch (rank 0 of an interactive run; silent elsewhere): loss, LR, img/s,
    and an estimate of the whole run's time left (this epoch's steps, the epochs after it at this
    epoch's pace, and their validation at the last one's)."""

    def __init__(self, bar=None, epochs_after: int = 0, val_seconds: float = 0.0):
        self.bar, self.t0, self.start = bar, time.perf_counter(), bar.n if bar is not None else 0
        self.epochs_after, self.val_seconds = epochs_after, val_seconds

    def advance(self, step: int, loss, lr: float, images: int) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        if step % 10 == 0:   # loss.item() waits for the device: every 10 steps only
            elapsed = time.perf_counter() - self.t0
            per_step = elapsed / max(step - self.start, 1)
            left = (self.bar.total - step) * per_step + self.epochs_after * (
                self.bar.total * per_step + self.val_seconds) + self.val_seconds
            self.bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}", img_s=f"{images / elapsed:.0f}",
                                 run_left=duration(left))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def epoch_bar(cfg, fabric, total, initial, epoch, epochs: int, val_seconds: float = 0.0) -> Bar:
    """``epochs``: the run's (--epochs, or the budget's plan)."""
    if fabric.global_rank != 0 or cfg.quiet or not interactive():
        return Bar()
    from tqdm.auto import tqdm
    return Bar(tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{epochs}", leave=False, unit="step"),
               epochs - epoch - 1, val_seconds)


def say_over_bars(line: str) -> None:
    """A line printed while a bar may be drawn (tqdm clears and redraws it): the budget's plan."""
    from tqdm.auto import tqdm
    tqdm.write(line)
    sys.stdout.flush()


def epoch_line(row: dict, epochs: int, history: list[dict], left: float) -> str:
    """The epoch's metrics; images/s of the run so far, the cache pass included (a cached epoch alone
    runs on feature rows, thousands a second, which no image pipeline delivers); the time left."""
    line = f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.4f}"
    if "val_macro_f1" in row:
        line += (f" | val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.4f} "
                 f"macro-F1 {row['val_macro_f1']:.4f}")
    seconds = sum(h["seconds"] for h in history)
    rate = sum(h["train_images_per_second"] * h["seconds"] for h in history) / max(seconds, 1e-9)
    line += f" | lr {row['lr']:.2e} | {rate:.0f} img/s over the run so far | epoch {row['seconds']:.0f}s"
    if "val_seconds" in row:
        line += f" + val {row['val_seconds']:.0f}s"
    return line + (f" | about {duration(left)} left" if row["epoch"] < epochs else "")
