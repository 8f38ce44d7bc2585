"""Where a training run is, and what its checkpoints hold: one object, one layout.

``last.pt`` (``RunState.last``): the model's and optimizer's state, the epoch and the step inside it
(the position a resumed run continues from), the history, the best row so far, the epoch's partial
totals when stopped inside it, and the random generators. ``best.pt`` (``RunState.best_checkpoint``):
the model at its best epoch and that epoch's metrics. With ``--ema`` the moving average of the weights
(``average``) is what was validated: ``best.pt`` holds it, ``last.pt`` holds both. With ``--budget``,
``last.pt`` also holds the plan. Tensors are saved on the CPU, whatever device trained. Both carry what
inference needs (``meta``:
model name, classes, image size, normalisation, weights' source, TTA, the config).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from petalnet import checkpoint


@dataclasses.dataclass
class RunState:
    meta: dict
    model: nn.Module                   # the model itself (what checkpoints hold), not the stepped wrapper
    optimizer: torch.optim.Optimizer
    epoch: int = 0                     # epochs finished
    step: int = 0                      # steps of epoch ``epoch`` done (non-zero only when stopped inside it)
    history: list = dataclasses.field(default_factory=list)
    best: dict | None = None           # the best epoch's history row
    partial: dict | None = None        # world totals of the epoch so far, when stopped inside it
    average: nn.Module | None = None   # --ema: the weights' moving average (timm's ModelEmaV3), else None
    budget: dict | None = None         # --budget's plan and measurements (``budget.BudgetPlanner.saved``)

    def last(self) -> dict:
        average = {"ema": _cpu(self.average.state_dict())} if self.average is not None else {}
        return {**self.meta, "model": _cpu(self.model.state_dict()), "optimizer": _cpu(self.optimizer.state_dict()),
                "epoch": self.epoch, "step": self.step, "history": self.history, "best": self.best,
                "accumulators": self.partial, "budget": self.budget, "rng": checkpoint.rng_state(), **average}

    def validated(self) -> nn.Module:
        """The weights validation scores and ``best.pt`` keeps: the moving average, else the model."""
        return self.average.module if self.average is not None else self.model

    def best_checkpoint(self) -> dict:
        return {**self.meta, "model": _cpu(self.validated().state_dict()), "epoch": self.best["epoch"],
                "metrics": self.best}

    def restore(self, saved: dict) -> None:
        """Continue from a ``last`` checkpoint (``checkpoint.load_resume``; the random generators:
        ``checkpoint.set_rng_state``, once the set-up that draws from them is done)."""
        checkpoint.restore(self.model, self.optimizer, saved)   # a mismatch is one line naming the file
        if self.average is not None:   # a run saved without one starts its average from the model
            checkpoint.load_weights(self.average, saved.get("ema") or {"module." + k: v for k, v in saved["model"].items()},
                                    saved.get("path", "the checkpoint"), "the --ema average")
        self.epoch, self.step, self.history = saved["epoch"], saved["step"], saved["history"]
        self.best, self.partial, self.budget = saved["best"], saved["accumulators"], saved.get("budget")

    def checkpoint_bytes(self) -> int:
        """About what an epoch's end writes (``best.pt`` and ``last.pt``): the model twice, and the
        optimizer's state (Adam's two moments) of each trained parameter."""
        model = sum(t.numel() * t.element_size() for t in self.model.state_dict().values())
        trained = sum(p.numel() * p.element_size() for p in self.model.parameters() if p.requires_grad)
        return 2 * model + 2 * trained

    def end_epoch(self, row: dict) -> bool:
        """Record a finished epoch; whether it is the new best (by val macro-F1; without validation,
        every epoch is: the last is kept)."""
        self.history.append(row)
        self.epoch, self.step, self.partial = row["epoch"], 0, None
        improved = "val_macro_f1" not in row or self.best is None or row["val_macro_f1"] > self.best["val_macro_f1"]
        if improved:
            self.best = dict(row)
        return improved


def _cpu(tree):
    """``tree`` (nested dicts, lists, tuples) with its tensors on the CPU: checkpoints from an XLA or CUDA
    run load anywhere (an XLA tensor saved as such needs torch_xla to be read back)."""
    if isinstance(tree, torch.Tensor):
        return tree.cpu()
    if isinstance(tree, dict):
        return type(tree)((k, _cpu(v)) for k, v in tree.items())
    if isinstance(tree, (list, tuple)):
        return type(tree)(_cpu(v) for v in tree)
    return tree
