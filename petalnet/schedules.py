"""Learning-rate schedules, evaluated per optimizer step at a fractional epoch.

``competition`` is the tutorial's ``lrfn(epoch)``: linear ramp from LR_START to LR_MAX over
ramp-up epochs, LR_MAX for the sustain epochs, then exponential decay towards LR_MIN.
``cosine`` is a linear warm-up to the peak, then half a cosine down to ``min_lr``.
"""
from __future__ import annotations

import dataclasses
import math

from petalnet.options import above, at_least, at_most, check_number
from petalnet.errors import PetalnetError

SCHEDULES = ("competition", "cosine", "constant")


@dataclasses.dataclass(frozen=True)
class Schedule:
    name: str
    peak: float                  # LR_MAX
    epochs: int
    start: float = 1e-5          # LR_START (competition) / warm-up start (cosine)
    min_lr: float = 1e-5         # LR_MIN
    rampup_epochs: float = 5     # competition ramp-up; cosine warm-up
    sustain_epochs: float = 0
    decay: float = 0.8           # LR_EXP_DECAY
    knots: tuple = ()            # (epoch, progress) where a budget re-plan compressed the cosine (``replanned``)
    end: float | None = None     # where the cosine reaches min_lr when the last epoch is partial (--budget), else epochs

    def __post_init__(self):
        if self.name not in SCHEDULES:
            raise PetalnetError(f"unknown LR schedule {self.name!r}: choose one of {', '.join(SCHEDULES)}")
        check_number("--lr", self.peak, above(0))
        check_number("--epochs", self.epochs, at_least(1), integer=True)
        for flag, value in (("--lr-start", self.start), ("--min-lr", self.min_lr),
                            ("--warmup-epochs", self.rampup_epochs), ("--sustain-epochs", self.sustain_epochs)):
            check_number(flag, value, at_least(0))
        check_number("--lr-decay", self.decay, above(0), at_most(1))

    def __call__(self, epoch: float) -> float:
        """LR at a (fractional) epoch: step / steps_per_epoch."""
        if self.name == "constant":
            return self.peak
        if epoch < self.rampup_epochs:
            return (self.peak - self.start) / self.rampup_epochs * epoch + self.start
        if self.name == "competition":
            if epoch < self.rampup_epochs + self.sustain_epochs:
                return self.peak
            return (self.peak - self.min_lr) * self.decay ** (epoch - self.rampup_epochs - self.sustain_epochs) \
                + self.min_lr
        return self.min_lr + (self.peak - self.min_lr) * 0.5 * (1 + math.cos(math.pi * self.progress(epoch)))

    def progress(self, epoch: float) -> float:
        """How far the cosine is at ``epoch`` (0 at the warm-up's end, 1 at the run's end: the last epoch's,
        or ``end`` within it): piecewise linear through the re-plans' knots, so each re-plan continues from
        where the run was."""
        points = [(self.rampup_epochs, 0.0), *self.knots, (self.epochs if self.end is None else self.end, 1.0)]
        for (e0, p0), (e1, p1) in zip(points, points[1:]):
            if epoch <= e1:
                return p0 + (p1 - p0) * (epoch - e0) / max(e1 - e0, 1e-9)
        return 1.0

    def replanned(self, at: float, epochs: int, end: float | None = None) -> "Schedule":
        """The same schedule up to epoch ``at``, then the rest of its decay compressed (or stretched) into
        a run of ``epochs`` (ending at epoch ``end`` inside the last one, where given): the LR goes on from
        its value at ``at`` and reaches ``min_lr`` at the new end (``--budget``'s plans). Only the cosine
        has an end to fit; the others keep their per-epoch shape."""
        if self.name != "cosine" or at <= self.rampup_epochs:
            return dataclasses.replace(self, epochs=epochs, end=end)
        return dataclasses.replace(self, epochs=epochs, end=end, knots=(*self.knots, (at, self.progress(at))))

    def curve(self, steps_per_epoch: int) -> tuple[list[float], list[float]]:
        """(fractional epochs, LR) at every step of the run, for plots."""
        xs = [s / steps_per_epoch for s in range(self.epochs * steps_per_epoch + 1)]
        return xs, [self(x) for x in xs]

