"""The Python API, for notebooks (Kaggle, Jupyter), as Keras and timm users expect:

    import petalnet
    run = petalnet.train("petals", "runs/lite0", recipe="default", epochs=3)   # -> Run
    run.history, run.summary                    # one dict per epoch; summary.json
    run.evaluate("petals", split="val")         # {"accuracy", "macro_f1", ...}
    run.predict("petals", split="test", output="submission.csv")
    run = petalnet.load("runs/lite0")           # a finished (or stopped) run folder

``petalnet.train`` takes the same options as ``petalnet train`` (TrainConfig's field names) with the
same defaults for the same recipe (``recipes.recipe_config``; ``recipe="auto"`` picks by hardware), and
``callbacks``: objects with ``on_epoch_end(row, history)`` (or plain callables of the same two
arguments) that the engine calls after each epoch's writes; one returning True stops training there
(``EarlyStopping``). ``CSVLogger`` and ``TensorBoardLogger`` (when tensorboard is installed) log each
epoch's row. This module loads no training engine: ``petalnet.train`` lives in ``petalnet.train``.
"""
from __future__ import annotations

import csv
import json
import math
import os

from petalnet.atomic import atomic_path
from petalnet.errors import OptionError, PetalnetError


class Run:
    """A run folder written by ``petalnet train`` (or ``petalnet.train``)."""

    def __init__(self, path: str):
        self.path = str(path)
        config = os.path.join(self.path, "config.json")
        if not os.path.isfile(config):
            raise PetalnetError(f"{self.path}: not a petalnet run folder (no config.json)")
        with open(config) as fh:
            self.config = json.load(fh)

    def __repr__(self) -> str:
        best = self.summary.get("best_val_macro_f1")
        return f"Run({self.path!r}, {len(self.history)} epoch(s)" + \
            (f", best val macro-F1 {best:.4f})" if best is not None else ")")

    @property
    def history(self) -> list[dict]:
        """One dict per finished epoch (history.jsonl), read afresh each time."""
        path = os.path.join(self.path, "history.jsonl")
        if not os.path.isfile(path):
            return []
        with open(path) as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def history_frame(self):
        """``history`` as a pandas DataFrame indexed by epoch (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            raise PetalnetError("Run.history_frame needs pandas: pip install pandas (Run.history is the same "
                                "as a list of dicts)") from None
        return pd.DataFrame(self.history).set_index("epoch")

    @property
    def summary(self) -> dict:
        """summary.json (written when training ends; empty before)."""
        path = os.path.join(self.path, "summary.json")
        if not os.path.isfile(path):
            return {}
        with open(path) as fh:
            return json.load(fh)

    def _data(self, data):
        data = data if data is not None else self.config.get("data")
        if not data:
            raise PetalnetError(f"{self.path}: no data recorded in config.json: pass data")
        return data

    def _predictor_and_split(self, data, split, default, labeled, device, image_size):
        from petalnet.predict import inference_split, load_predictor, resolve_device
        device = resolve_device(device)
        predictor = load_predictor(self.path, device)
        name, ds = inference_split(self._data(data), split, default, image_size=image_size, labeled=labeled,
                                   model_size=predictor.image_size)
        return predictor, name, ds, device

    def evaluate(self, data=None, split: str = "val", *, tta: str | None = None, precision: str = "auto",
                 out: str | None = None, batch_size: int = 64, device: str = "auto",
                 image_size: int | None = None) -> dict:
        """Metrics of the best checkpoint on a labelled split of ``data`` (default: the data it was trained
        on): ``accuracy``, ``macro_f1``, ``macro_precision``, ``macro_recall``, ``images``, ``per_class``
        and ``confusion_matrix``, as ``petalnet evaluate`` prints. ``out``: also write its folder
        (metrics.json, confusion.png, examples.png). ``tta`` None: the run's own views."""
        from petalnet.evaluate import evaluate_split
        from petalnet.predict import check_labels, evaluation, predict_dataset
        predictor, name, ds, device = self._predictor_and_split(data, split, "val", None, device, image_size)
        kw = dict(batch_size=batch_size, tta=tta, precision=precision, device=device)
        if out:
            return evaluate_split([predictor], ds, name, out, data=str(self._data(data)), **kw)
        if not ds.labeled:
            raise PetalnetError(f"{self._data(data)}: split '{name}' is unlabelled: evaluate needs labels")
        labels, _ = ds.metadata()
        check_labels(predictor.num_classes, labels, f"{self._data(data)} ({name})", ds)
        probs, targets = predict_dataset([predictor], ds, **kw)
        return evaluation(probs, targets)

    def predict(self, data=None, split: str = "test", output: str | None = "submission.csv", *,
                tta: str | None = None, precision: str = "auto", batch_size: int = 64, device: str = "auto",
                image_size: int | None = None) -> dict:
        """Predict a split of ``data`` (default: the data it was trained on) and write ``output`` (the
        competition's ``id,label`` submission, atomically; None: write nothing). Returns ``{"ids",
        "labels", "probs", "output"}`` (labels and probabilities as numpy arrays)."""
        from petalnet.predict import predict_dataset, write_submission
        predictor, _, ds, device = self._predictor_and_split(data, split, "test", False, device, image_size)
        if output and not os.path.isdir(os.path.dirname(os.path.abspath(output))):
            raise PetalnetError(f"{output}: folder {os.path.dirname(os.path.abspath(output))} does not exist")
        _, ids = ds.metadata()
        probs, _ = predict_dataset([predictor], ds, batch_size=batch_size, tta=tta, precision=precision,
                                   device=device)
        if output:
            write_submission(output, ids, probs.argmax(1))
        return {"ids": ids, "labels": probs.argmax(1), "probs": probs, "output": output}


def load(run_dir: str) -> Run:
    """A run folder as a ``Run``."""
    return Run(run_dir)


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
