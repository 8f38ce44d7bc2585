"""``--ema D``: the moving average of the weights (timm's ``ModelEmaV3``) that validation scores, ``best.pt``
keeps and predict uses; its decay warms up as TensorFlow's ``ExponentialMovingAverage(num_updates=n)``,
so the first weights are forgotten fast."""
from __future__ import annotations

import functools

import torch
from timm.utils import ModelEmaV3
from torch import nn


def make_average(model: nn.Module, decay: float) -> ModelEmaV3 | None:
    """The average of ``model``'s weights (a copy of them now, on the model's device), or None when
    ``decay`` is 0 (no --ema). timm makes a ``torch.Generator`` on the copy's device (for stochastic
    rounding of bf16 averages; petalnet's are fp32), which XLA devices cannot have: there the copy is made
    on the CPU, with its generator, and then moved to the model's device, where it is updated."""
    if not decay:
        return None
    device = next(model.parameters()).device
    if device.type != "xla":
        return ModelEmaV3(model, decay=decay)
    average = ModelEmaV3(model, decay=decay, device=torch.device("cpu"))
    average.module.to(device)
    average.device, average.foreach = None, True   # updated where the model is, as elsewhere
    return average


def step_update(average: ModelEmaV3 | None, model: nn.Module, decay: float):
    """What runs after each optimizer step, given the global step: the average's update, or nothing."""
    return functools.partial(update_average, average, model, decay) if average is not None else _nothing


def update_average(average: ModelEmaV3, model: nn.Module, decay: float, n: int) -> None:
    """One step of the average at global step ``n``: decay min(D, (1 + n) / (10 + n))."""
    average.decay = min(decay, (1 + n) / (10 + n))
    average.update(model)


def _nothing(n: int) -> None:
    pass
