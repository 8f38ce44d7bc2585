"""``--ema D``: the moving average of the weights (timm's ``ModelEmaV3``) that validation scores, ``best.pt``
keeps and predict uses; its decay warms up as TensorFlow's ``ExponentialMovingAverage(num_updates=n)``,
so the first weights are forgotten fast."""
from __future__ import annotations

import functools

from timm.utils import ModelEmaV3
from torch import nn


def make_average(model: nn.Module, decay: float) -> ModelEmaV3 | None:
    """The average of ``model``'s weights (a copy of them now), or None when ``decay`` is 0 (no --ema)."""
    return ModelEmaV3(model, decay=decay) if decay else None


def step_update(average: ModelEmaV3 | None, model: nn.Module, decay: float):
    """What runs after each optimizer step, given the global step: the average's update, or nothing."""
    return functools.partial(update_average, average, model, decay) if average is not None else _nothing


def update_average(average: ModelEmaV3, model: nn.Module, decay: float, n: int) -> None:
    """One step of the average at global step ``n``: decay min(D, (1 + n) / (10 + n))."""
    average.decay = min(decay, (1 + n) / (10 + n))
    average.update(model)


def _nothing(n: int) -> None:
    pass
