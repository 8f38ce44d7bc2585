"""Accuracy and macro-F1 from a confusion matrix, which sums exactly across DDP ranks."""
from __future__ import annotations

import torch


def confusion_matrix(targets: torch.Tensor, preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``cm[t, p]`` counts of true class t predicted as p (int64, on the inputs' device). Negative targets
    (padding rows of a fixed-size batch) are not counted. Shapes do not depend on the values (no
    ``bincount``, whose length does), so XLA compiles it once."""
    valid = targets >= 0
    idx = targets.long().clamp(min=0) * num_classes + preds.long()
    cm = torch.zeros(num_classes * num_classes, dtype=torch.long, device=targets.device)
    return cm.index_add_(0, idx, valid.long()).reshape(num_classes, num_classes)


def per_class(cm: torch.Tensor) -> dict[str, torch.Tensor]:
    """Precision, recall, F1 and support per class (0 where undefined, as sklearn with zero_division=0)."""
    cm = cm.double()
    tp = cm.diag()
    support, predicted = cm.sum(1), cm.sum(0)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(tp))
    return {"precision": precision, "recall": recall, "f1": f1, "support": support, "predicted": predicted}


def summary(cm: torch.Tensor) -> dict[str, float]:
    """accuracy and macro precision/recall/F1 over the classes that occur in the labels or the
    predictions: the set sklearn's ``f1_score(average="macro")`` averages over."""
    pc = per_class(cm)
    present = (pc["support"] > 0) | (pc["predicted"] > 0)
    total = cm.sum().item()
    out = {"accuracy": (cm.diag().sum().item() / total) if total else 0.0}
    for key in ("precision", "recall", "f1"):
        out[f"macro_{key}"] = pc[key][present].mean().item() if present.any() else 0.0
    return out
