"""Epoch-end callbacks for ``petalnet.train`` (the notebook API): objects with ``on_epoch_end(row, history)``
(or plain callables of the same two arguments), called by the engine after each epoch's writes, outside
the training loop; one returning True stops training there (``EarlyStopping``)."""
from __future__ import annotations

import csv
import math

from petalnet.atomic import atomic_path
from petalnet.errors import OptionError, PetalnetError


class EarlyStopping:
    """Stop when ``monitor`` (a history key) has not improved by more than ``min_delta`` for ``patience``
    epochs (Keras' rule). The best checkpoint stays the best by val macro-F1 (checkpoints/best.pt)."""

    def __init__(self, monitor: str = "val_macro_f1", patience: int = 3, mode: str = "max", min_delta: float = 0.0):
        if mode not in ("max", "min"):
            raise OptionError(f"EarlyStopping mode {mode!r}: choose max or min")
        if not isinstance(patience, int) or patience < 1:
            raise OptionError(f"EarlyStopping patience {patience!r}: must be a whole number, at least 1")
        self.monitor, self.patience, self.mode, self.min_delta = monitor, patience, mode, min_delta
        self.stopped_epoch: int | None = None

    def on_epoch_end(self, row: dict, history: list[dict]) -> bool:
        values = [h.get(self.monitor) for h in history]
        if any(v is None for v in values):
            raise PetalnetError(f"EarlyStopping: no '{self.monitor}' in the epoch's row (has: {', '.join(row)}); "
                                "validation metrics need a val split")
        sign = 1 if self.mode == "max" else -1
        best_at, best = 0, values[0]
        for i, v in enumerate(values[1:], 1):
            if sign * (v - best) > self.min_delta:
                best_at, best = i, v
        if len(values) - 1 - best_at >= self.patience:
            self.stopped_epoch = row["epoch"]
            return True
        return False


class CSVLogger:
    """Each epoch's row appended to ``path`` as CSV (the file is rewritten whole, atomically; a column
    first seen later widens the header)."""

    def __init__(self, path: str):
        self.path, self.rows = str(path), []

    def on_epoch_end(self, row: dict, history: list[dict]) -> None:
        self.rows = [dict(h) for h in history]
        columns = list(dict.fromkeys(k for r in self.rows for k in r))
        with atomic_path(self.path, ".csv") as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, columns)
            writer.writeheader()
            writer.writerows(self.rows)


class TensorBoardLogger:
    """Each epoch's numbers as TensorBoard scalars in ``log_dir`` (needs the tensorboard package)."""

    def __init__(self, log_dir: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise PetalnetError("TensorBoardLogger needs tensorboard: pip install tensorboard "
                                "(CSVLogger needs nothing more)") from None
        self.writer = SummaryWriter(str(log_dir))

    def on_epoch_end(self, row: dict, history: list[dict]) -> None:
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key, value, row["epoch"])
        self.writer.flush()


def epoch_end(callbacks, row: dict, history: list[dict]) -> bool:
    """Call every callback (each sees copies); True when one asks to stop."""
    stop = False
    for cb in callbacks:
        answer = cb.on_epoch_end(dict(row), [dict(h) for h in history]) if hasattr(cb, "on_epoch_end") \
            else cb(dict(row), [dict(h) for h in history])
        stop = stop or answer is True
    return stop
