"""The optimizer and the learning-rate schedule a training config asks for."""
from __future__ import annotations

import torch

from petalnet.config import TrainConfig
from petalnet.errors import PetalnetError
from petalnet.models import head_parameters
from petalnet.schedules import Schedule

# Peak LR per replica when --lr is not given; the peak is this times the number of replicas
# (devices x nodes), the tutorial's rule (LR_MAX = 5e-5 * replicas, batch 16 * replicas).
BASE_LR = {"competition": 5e-5, "cosine": 1e-3, "constant": 1e-3}


def lr_schedule(cfg: TrainConfig, replicas: int) -> Schedule:
    peak = cfg.lr if cfg.lr is not None else BASE_LR.get(cfg.lr_schedule, 1e-3) * replicas
    warm = cfg.warmup_epochs if cfg.warmup_epochs is not None else (
        5 if cfg.lr_schedule == "competition" else min(1.0, cfg.epochs / 3))   # short runs still decay
    return Schedule(cfg.lr_schedule, peak, cfg.epochs, start=cfg.lr_start, min_lr=min(cfg.min_lr, peak),
                    rampup_epochs=warm, sustain_epochs=cfg.sustain_epochs, decay=cfg.lr_decay)


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
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


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
