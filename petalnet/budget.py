"""``--budget``: how many epochs fit in a wall-clock budget, planned from the steps measured, and
shortened when epochs prove slower (never by more epochs: a plan cannot oscillate between epoch counts).
The time left after the whole epochs becomes a shorter last epoch (``last_steps``) where a quarter of an
epoch fits; a re-plan may lengthen that one, up to whole, when epochs prove faster.

The engine calls a planner at fixed points: ``begin_epoch`` before an epoch's steps, ``after_step``
after each step (from ``pace.Pace.after_step``; True asks to end this epoch now: the safety net),
``end_epoch`` after the epoch's validation, before its writes. The planner owns the LR schedule
(``schedule``): the first plan sets its length, a re-plan compresses its decay to the new length from
where the run is (``schedules.Schedule.replanned``). ``NoBudget`` is the planner of a run without a
budget: ``--epochs`` epochs, nothing measured. Times come from ``clock`` (a class attribute; tests put
a fake one), counted from the command's start. Plain Python, no torch.
"""
from __future__ import annotations

import dataclasses
import math
import time

from petalnet.durations import duration, parse_duration, short

# The most epochs a budget plans. A bound, not a measured optimum: 10x the default recipe's 10 epochs.
# Epochs on cached features take seconds here (a GPU: less), so a generous budget would otherwise plan
# hundreds of epochs of a recipe whose accuracy stops rising after a few tens.
MAX_EPOCHS = 100
# Kept for after the last epoch's writes: summary.json, curves.png and lr.png (run_dir.finish: matplotlib's
# import first) took 0.4-2.5 s here, then the interpreter's exit after torch, timm and Fabric 3-4 s (after
# a bare `import torch`, 1.9 s) on this busy 2-core machine.
RESERVE_SECONDS = 8.0
# An epoch end's writes (best.pt, history, last.pt) until one is measured, from their size: Lite0's 51 MB
# took 0.05-0.13 s here. A central guess, not a cautious one: a plan too long is shortened at the first
# epoch's end, a plan too short is never lengthened.
WRITE_BYTES_PER_SECOND = 500e6
# A validation image costs about a third of a training image: a forward pass without the backward
# (backward ~ 2 forwards), per TTA view. Used until the first validation is measured; where a frozen
# part is run every step it underestimates, and the re-plan at the first epoch's end corrects it.
VAL_COST = 1 / 3
# The least of an epoch a plan ends with: time left after the whole epochs that holds fewer steps (beside
# the epoch's validation and writes) is kept unused; more, and the last epoch ends at a planned step, with
# the LR schedule ending there. Without it a run ended up to an epoch before its budget (--budget 5m: 4.5
# minutes, the lower edge).
MIN_PART = 0.25
# The least a re-plan lengthens a partial last epoch by (a share of an epoch's steps): smaller changes are
# measurement noise, not worth a re-plan and its line.
GROW = 0.05


def steps_to_measure(steps: int) -> int:
    """Steps timed before the plan, the first (warm-up) not counted: 5 % of an epoch, at least 3."""
    return max(3, math.ceil(0.05 * steps))


def make_planner(budget, epochs: int, already: float = 0.0):
    """``--budget``'s planner (``BudgetPlanner``), or ``NoBudget(epochs)`` without one; ``already``:
    seconds the command ran before (its imports)."""
    if budget is None:
        return NoBudget(epochs)
    return BudgetPlanner(parse_duration(budget), budget.strip() if isinstance(budget, str) else None, already)


class NoBudget:
    """No budget: ``epochs`` epochs on the schedule the config asks for; every call is a no-op."""

    def __init__(self, epochs: int):
        self.epochs, self.schedule = epochs, None

    def start_run(self, make_schedule, saved=None, spent: float = 0.0) -> None:
        self.schedule = make_schedule(self.epochs)

    def set_sizes(self, steps: int, **kw) -> None:
        pass

    def begin_epoch(self, epoch: int, step: int) -> None:
        pass

    def after_step(self, step: int) -> bool:
        return False

    def end_epoch(self, done: int, ended_early: bool) -> bool:
        return False

    def saved(self):
        return None

    def record(self):
        return None

    def summary(self) -> dict:
        return dict.fromkeys(("budget_seconds", "planned_seconds", "used_seconds", "planned_epochs", "replans",
                              "budget_cut"))


class BudgetPlanner:
    """Plans the epochs of a run that must end ``seconds`` after its start (``already``: seconds spent
    before this object was made, e.g. imports). Made when the command starts; ``start_run`` (schedule,
    resumed plan) and ``set_sizes`` (steps, validation) before the first epoch."""
    clock = staticmethod(time.perf_counter)

    def __init__(self, seconds: float, label: str | None = None, already: float = 0.0, *, clock=None,
                 cap: int = MAX_EPOCHS, reserve: float = RESERVE_SECONDS):
        if clock is not None:
            self.clock = clock
        self.seconds, self.label, self.cap, self.reserve = seconds, label or duration(seconds), cap, reserve
        self.t_start = self.clock() - already
        self.epochs, self.first, self.replans, self.cut, self.schedule = cap, None, [], None, None
        self.last_steps = self.first_last = None   # steps of a partial last epoch (now / in the first plan)
        self.step_s = self.val_s = self.epoch_s = self.planned_s = self.spent = None
        self.val_measured, self.write_s, self.excess = False, 0.0, 0.0
        self.steps, self.val_images, self.views, self.batch_images = 1, 0, 1, 1
        self.say, self.agree, self.margin = print, (lambda n: n), 1
        self.epochs_run, self._changed, self._t_val_end = 0, False, None

    @property
    def deadline(self) -> float:
        return self.t_start + self.seconds - self.reserve

    def start_run(self, make_schedule, saved: dict | None = None, spent: float = 0.0) -> None:
        """The schedule (``make_schedule(epochs)``), the plan of a resumed run (``saved``: ``saved()``
        from its last checkpoint) and the seconds its earlier epochs took (``spent``)."""
        self.make_schedule, self.t_start = make_schedule, self.t_start - spent
        if saved and saved.get("planned_epochs"):
            for key, attr in _ATTR.items():
                setattr(self, attr, saved.get(key, getattr(self, attr)))
            self.first, self.epochs = saved["planned_epochs"], saved["epochs"]
            self.replans = [list(r) for r in saved.get("replans", [])]
        self.schedule = make_schedule(self.first or self.cap)
        if saved and "lr_knots" in saved:   # the schedule as it was: its length, end and compressions
            self.schedule = dataclasses.replace(self.schedule, epochs=self.epochs, end=saved.get("lr_end"),
                                                knots=tuple(tuple(k) for k in saved["lr_knots"]))
        else:   # a plan saved before partial epochs: the same compressions again
            for done, total in self.replans:
                self.schedule = self.schedule.replanned(done, total)

    def set_sizes(self, steps: int, *, val_images: int, views: int, batch_images: int, write_bytes: int = 0,
                  say=print, agree=lambda n: n, margin: int = 1) -> None:
        """Steps per epoch, validation images and TTA views, training images per step (this process's),
        the bytes an epoch end writes; ``say``: a line; ``agree``: the plan all processes follow (rank
        0's); ``margin``: steps between the moments processes can agree to stop (``Pace``)."""
        self.steps, self.val_images, self.views, self.batch_images = steps, val_images, views, batch_images
        self.say, self.agree, self.margin = say, agree, margin
        if self.first is None:   # else measured (a resumed plan)
            self.write_s = write_bytes / WRITE_BYTES_PER_SECOND

    # --- the engine's fixed points ---

    def begin_epoch(self, epoch: int, step: int) -> None:
        now = self.clock()
        if self._t_val_end is not None:   # the previous epoch's writes, measured
            self.write_s = now - self._t_val_end
        if self.spent is None:
            self.spent = now - self.t_start
        self.epoch, self.pos, self.n, self.t_begin = epoch, step, 0, now
        self.t_first = self.t_last = None

    def after_step(self, step: int) -> bool:
        """Time the step; plan after the first ones; True when the epoch must end now to end on time."""
        now = self.clock()
        self.n, self.pos, self.t_last = self.n + 1, step, now
        if self.n == 1:
            self.t_first = now
        if self.first is None:
            if self.n - 1 >= steps_to_measure(self.steps) and step < self.steps:
                self._plan(now, self._rate())
            return False
        return step < self.steps and (self._planned_end(step) or self._over(now))

    def _planned_end(self, step: int) -> bool:
        return self.last_steps is not None and self.epoch + 1 == self.epochs and step >= self.last_steps

    def _over(self, now: float) -> bool:
        """Whether one more step (``margin``: until processes can next agree), the validation, the writes
        and the end would pass the budget. Steps slower than the last epoch's (another process took the
        cores?) make those slower too. Measured here with a busy loop started on the run's one core mid-run:
        steps 8x slower, validation 12x, the final plots and the exit (single-threaded) 2.7x (20 s for 7.3 s):
        validation and writes are scaled as the steps, the reserve at most 3x."""
        rate = self._current_rate()
        slower = max(1.0, rate / self.step_s)
        return now + self.margin * rate + slower * (self.val_s + self.write_s) + min(slower, 3.0) * self.reserve \
            > self.t_start + self.seconds

    def end_epoch(self, done: int, ended_early: bool) -> bool:
        """After validation of epoch ``done`` (1-based): measure it and re-plan. Whether the plan
        changed since the last call (config.json records it)."""
        now = self.clock()
        self.val_s, self.val_measured, self._t_val_end = now - (self.t_last or now), True, now
        if self.n > 1 or (self.n and self.step_s is None):   # a lone step (start-up included): if nothing better
            self.step_s = self._rate()
        if self.epochs_run and self.t_first is not None:   # a later epoch's first step: loader start-up
            self.excess = max(0.0, self.t_first - self.t_begin - self.step_s)
        self.epochs_run += 1
        if ended_early:   # at the plan's partial end (nothing to do), or the safety net: this epoch is the last
            if not self._planned_end(self.pos):
                self.cut = {"epoch": done, "step": self.pos, "steps": self.steps}
                self.say(f"budget {self.label}: epoch {done} ended at step {self.pos}/{self.steps} to finish in time")
                self._replan(now, done, fits=0)
        elif self.first is None:
            self._plan(now, self.step_s or 0.0, done=done)
        else:
            self._replan(now, done)
        changed, self._changed = self._changed, False
        return changed

    # --- the plan ---

    def _rate(self) -> float:
        return (self.t_last - self.t_first) / (self.n - 1) if self.n > 1 else self.t_last - self.t_begin

    def _current_rate(self) -> float:
        return self._rate() if self.n - 1 >= steps_to_measure(self.steps) else self.step_s

    def _epoch_seconds(self) -> float:
        return max(self.steps * self.step_s + self.val_s + self.write_s + self.excess, 1e-6)

    def _fit(self, left: float, done: int) -> tuple[int, int | None]:
        """(epochs, steps of a partial last one or None) that end ``left`` seconds after epoch ``done``:
        whole epochs, then part of one where at least ``MIN_PART`` of its steps fit beside its validation
        and writes (a multiple of ``margin``: processes agree to stop every ``margin`` steps)."""
        full = max(0, math.floor(left / self.epoch_s))
        if done + full >= self.cap:
            return self.cap, None
        spare = left - full * self.epoch_s - self.val_s - self.write_s - self.excess
        part = int(spare / self.step_s) // self.margin * self.margin if spare > 0 and self.step_s > 0 else 0
        if part < max(1, MIN_PART * self.steps):
            return done + full, None
        return done + full + 1, min(part, self.steps - 1)

    def _end(self, total: int, part: int | None) -> float | None:
        """Where the LR schedule ends: inside the last epoch when it is partial."""
        return None if part is None else total - 1 + part / self.steps

    def _seconds(self, epochs: int, part: int | None) -> float:
        """What ``epochs`` more epochs take, the last ``part`` steps long (None: whole)."""
        if part is None:
            return epochs * self.epoch_s
        return (epochs - 1) * self.epoch_s + part * self.step_s + self.val_s + self.write_s + self.excess

    def _plan(self, now: float, rate: float, done: int | None = None) -> None:
        """The first plan: this epoch (from its step ``pos``, or ``done`` and written) and as many more as fit."""
        self.step_s = rate
        if not self.val_measured:
            self.val_s = self.val_images * self.views * rate / self.batch_images * VAL_COST
        self.epoch_s = self._epoch_seconds()
        current = self.epoch + 1 if done is None else done
        rest = self.write_s + (0.0 if done is not None else (self.steps - self.pos) * rate + self.val_s)
        total, part = self.agree(self._fit(self.deadline - now - rest, current))
        self.first = self.epochs = total
        self.first_last = self.last_steps = part
        ends = now - self.t_start + rest + self._seconds(total - current, part) + self.reserve
        self.planned_s = min(ends, self.seconds)   # not even one epoch: the safety net ends it in time
        self.schedule = dataclasses.replace(self.make_schedule(total), end=self._end(total, part))
        self._changed = True
        self.say(self._plan_line(ends > self.seconds, done))

    def _replan(self, now: float, done: int, fits: int | None = None) -> None:
        """Shorten the plan when the epochs left do not fit the time left at the measured pace; lengthen a
        partial last epoch (never add one) when more of it fits."""
        self.epoch_s = self._epoch_seconds()
        fit = self._fit(self.deadline - now - self.write_s, done) if fits is None else (done + fits, None)
        total, part = self.agree(fit)
        longer = self._steps_of(total, part) > self._steps_of(self.epochs, self.last_steps)
        if longer:   # never more epochs; a partial last epoch may grow, up to whole (estimates were cautious)
            total, part = self.epochs, (None if total > self.epochs else part)
            grows = self._steps_of(total, part) - self._steps_of(self.epochs, self.last_steps)
            if grows < max(self.margin, GROW * self.steps):   # not worth a re-plan and a line
                return
        if (total, part) == (self.epochs, self.last_steps):
            return
        self.replans.append([done, total])
        self.epochs, self.last_steps, self._changed = total, part, True
        # ending now too: lr.png shows the LR followed
        self.schedule = self.schedule.replanned(done, total, self._end(total, part))
        left = duration(self.deadline + self.reserve - now)
        if longer:
            self.say(f"budget {self.label}: epochs take {short(self.epoch_s)} now: the last epoch lengthened to "
                     + (f"{part} of its {self.steps} steps" if part else "a whole one") + f" ({left} left)")
        elif total > done:
            self.say(f"budget {self.label}: epochs take {short(self.epoch_s)} now: plan shortened to {total} epochs"
                     f"{self._part_words(part)} ({left} left)")
        elif self.cut is None:
            self.say(f"budget {self.label}: no time for another epoch ({short(self.epoch_s)} each): ending after "
                     f"epoch {done}")

    def _steps_of(self, epochs: int, part: int | None) -> int:
        return (epochs - 1) * self.steps + (self.steps if part is None else part)

    def _part_words(self, part: int | None) -> str:
        return "" if part is None else f", the last {part} of its {self.steps} steps"

    def _plan_line(self, too_long: bool, done: int | None) -> str:
        val = f" + {short(self.val_s)} validation {'measured' if self.val_measured else 'estimated'}" \
            if self.val_images else ""
        how = f"{short(self.steps * self.step_s)}/epoch{val}, measured over {self.n - 1} steps after the first; " \
              f"{duration(self.spent)} spent before training"
        if done is not None and self.first == done:
            return f"budget {self.label}: no time for another epoch ({how}): ending after epoch {done}"
        if too_long:
            return f"budget {self.label}: not even one epoch fits ({how}): training what fits of epoch " \
                   f"{self.epoch + 1}, then validating and finishing"
        return f"budget {self.label}: {self.first} epochs planned{self._part_words(self.first_last)} ({how})"

    # --- what is recorded ---

    def saved(self) -> dict:
        """The plan and its measurements, for last.pt (``start_run`` continues from it)."""
        return {"planned_epochs": self.first, "epochs": self.epochs, "replans": [list(r) for r in self.replans],
                **{key: getattr(self, attr) for key, attr in _ATTR.items()},
                "lr_end": self.schedule.end, "lr_knots": [list(k) for k in self.schedule.knots]}

    def record(self) -> dict:
        """config.json's ``resolved.budget``: the budget, the plan, and the seconds it came from."""
        return {"seconds": self.seconds, "duration": self.label, **self.saved(), "cap": self.cap,
                "reserve_seconds": self.reserve, "steps_measured": steps_to_measure(self.steps)}

    def summary(self) -> dict:
        return {"budget_seconds": self.seconds, "planned_seconds": self.planned_s,
                "used_seconds": self.clock() - self.t_start, "planned_epochs": self.first,
                "replans": [list(r) for r in self.replans], "budget_cut": self.cut}


# saved() keys -> attributes: what a resumed run needs to continue the plan (and record it)
_ATTR = {"step_seconds": "step_s", "val_seconds": "val_s", "val_measured": "val_measured", "write_seconds": "write_s",
         "epoch_seconds": "epoch_s", "planned_seconds": "planned_s", "spent_before_training": "spent",
         "last_steps": "last_steps", "planned_last_steps": "first_last"}
