"""The Python API, for notebooks (Kaggle, Jupyter), as Keras and timm users expect:

    import petalnet
    run = petalnet.train("petals", "runs/lite0", epochs=3)   # -> Run; the recipe for the hardware found
    run.history, run.summary                    # one dict per epoch; summary.json
    run.evaluate("petals", split="val")         # {"accuracy", "macro_f1", ...}
    run.predict("petals", split="test", output="submission.csv")
    run = petalnet.load("runs/lite0")           # a finished (or stopped) run folder
    run = run.resume()                          # a stopped or killed one continued (or train(..., resume=True))

``petalnet.train`` is ``petalnet train`` (both are ``run_training``): the same options (TrainConfig's field
names), the same default recipe (``auto``: by the hardware found) and defaults, the same resume. A stop
(Ctrl-C or a kernel interrupt: the engine saves the position) returns the ``Run`` of what was finished,
says so, and sets ``Run.stopped``. ``callbacks``: objects with ``on_epoch_end(row, history)`` (or plain callables of the same two
arguments) that the engine calls after each epoch's writes; one returning True stops training there
(``EarlyStopping``). ``CSVLogger`` and ``TensorBoardLogger`` (when tensorboard is installed) log each
epoch's row. The training engine (``petalnet.engine``) is imported when ``train`` is called.
"""
from __future__ import annotations

import functools
import json
import os
import sys

from petalnet.callbacks import CSVLogger, EarlyStopping, TensorBoardLogger
from petalnet.commands import EvaluateOptions, PredictOptions, TrainCommand
from petalnet.errors import OptionError, PetalnetError
from petalnet.options import AUTO, PRECISIONS, TTA_MARGIN, flag_of

__all__ = ["train", "load", "Run", "EarlyStopping", "CSVLogger", "TensorBoardLogger"]


def _read_json(path: str) -> dict:
    """A JSON file petalnet wrote; empty, cut or foreign is one PetalnetError naming it."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (ValueError, UnicodeDecodeError) as e:
        raise PetalnetError(f"{path}: not readable JSON ({str(e)[:120] or 'empty'})") from None


def _read_history(path: str) -> list[dict]:
    """history.jsonl's rows; a cut last line (a writer killed mid-line, before atomic writes) is left out,
    a bad line before it is one PetalnetError naming the file and line."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = [line for line in fh if line.strip()]
    rows = []
    for n, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except ValueError:
            if n == len(lines):
                break
            raise PetalnetError(f"{path}: line {n} is not a JSON record") from None
    return rows


class Run:
    """A run folder written by ``petalnet train`` (or ``petalnet.train``)."""

    def __init__(self, path: str):
        self.path = str(path)
        config = os.path.join(self.path, "config.json")
        if not os.path.isfile(config):
            raise PetalnetError(f"{self.path}: not a petalnet run folder (no config.json)")
        self.config = _read_json(config)
        self.stopped: str | None = None   # why the training that returned this Run stopped early

    def __repr__(self) -> str:
        best = self.summary.get("best_val_macro_f1")
        return f"Run({self.path!r}, {len(self.history)} epoch(s)" + \
            (f", best val macro-F1 {best:.4f}" if best is not None else "") + \
            (f", stopped: {self.stopped})" if self.stopped else ")")

    def resume(self, *, callbacks=(), quiet: bool | None = None, workers: int | None = None) -> "Run":
        """Continue this run from its last checkpoint with the options it was started with, as ``petalnet
        train --resume RUN_DIR`` (``quiet``, ``workers``: as there, the only ones it takes anew)."""
        given = {k: v for k, v in (("quiet", quiet), ("workers", workers)) if v is not None}
        return _finished(*run_training(None, given, resume=self.path, callbacks=callbacks)[1:])

    @property
    def history(self) -> list[dict]:
        """One dict per finished epoch (history.jsonl), read afresh each time."""
        path = os.path.join(self.path, "history.jsonl")
        if not os.path.isfile(path):
            return []
        return _read_history(path)

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
        return _read_json(path)

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
                 image_size: int | None = None, tta_margin: float = TTA_MARGIN) -> dict:
        """Metrics of the best checkpoint on a labelled split of ``data`` (default: the data it was trained
        on): ``accuracy``, ``macro_f1``, ``macro_precision``, ``macro_recall``, ``images``, ``per_class``
        and ``confusion_matrix``, as ``petalnet evaluate`` prints. ``out``: also write its folder
        (metrics.json, confusion.png, examples.png). ``tta`` None: the run's own views; ``tta_margin``:
        as ``--tta-margin``."""
        from petalnet.evaluate import evaluate_labelled, evaluate_split
        EvaluateOptions(model=self.path, data=data, split=split, tta=tta, precision=precision, out=out,
                        batch_size=batch_size, device=device, image_size=image_size, tta_margin=tta_margin).check()
        predictor, name, ds, device = self._predictor_and_split(data, split, "val", None, device, image_size)
        kw = dict(data=str(self._data(data)), batch_size=batch_size, tta=tta, precision=precision, device=device,
                  tta_margin=tta_margin)
        if out:
            return evaluate_split([predictor], ds, name, out, **kw)
        return evaluate_labelled([predictor], ds, name, **kw)[0]

    def predict(self, data=None, split: str = "test", output: str | None = "submission.csv", *,
                tta: str | None = None, precision: str = "auto", batch_size: int = 64, device: str = "auto",
                image_size: int | None = None, tta_margin: float = TTA_MARGIN) -> dict:
        """Predict a split of ``data`` (default: the data it was trained on) and write ``output`` (the
        competition's ``id,label`` submission, atomically; None: write nothing); ``tta``, ``tta_margin``: as
        ``evaluate``. Returns ``{"ids", "labels", "probs", "output"}`` (labels and probabilities as numpy
        arrays)."""
        from petalnet.predict import predict_dataset, write_submission
        PredictOptions(model=self.path, data=data, split=split, output=output, tta=tta, precision=precision,
                       batch_size=batch_size, device=device, image_size=image_size, tta_margin=tta_margin).check()
        predictor, _, ds, device = self._predictor_and_split(data, split, "test", False, device, image_size)
        if output and not os.path.isdir(os.path.dirname(os.path.abspath(output))):
            raise PetalnetError(f"{output}: folder {os.path.dirname(os.path.abspath(output))} does not exist")
        _, ids = ds.metadata()
        probs, _ = predict_dataset([predictor], ds, batch_size=batch_size, tta=tta, precision=precision,
                                   device=device, tta_margin=tta_margin)
        if output:
            write_submission(output, ids, probs.argmax(1))
        return {"ids": ids, "labels": probs.argmax(1), "probs": probs, "output": output}


def load(run_dir: str) -> Run:
    """A run folder as a ``Run``."""
    return Run(run_dir)


def train(data, out, recipe: str = AUTO, *, resume: bool = False, callbacks=(), **overrides) -> Run:
    """``petalnet.train(data, out, **overrides)`` -> ``api.Run``: ``petalnet train --data DATA --out OUT``'s
    options as keywords (TrainConfig's names: ``epochs=3, force=True``), the same recipe (``auto``: the one
    for the hardware found) and defaults. ``resume=True``: continue the run folder ``out`` as ``--resume``
    (the same call again, or any subset of its options; a different value is refused). A stop returns the
    Run of what was finished (``Run.stopped`` says why). ``callbacks``: ``petalnet.api``."""
    given = {"data": data if isinstance(data, (list, tuple)) or data is None else str(data), "out": str(out),
             **overrides}
    return _finished(*run_training(recipe, given, resume=str(out) if resume else None, callbacks=callbacks,
                                   say=functools.partial(print, flush=True))[1:])


# a resumed run takes these anew (engine.train); the rest it keeps from its start
RESUME_TAKES = ("quiet", "workers", "out", "force")


def run_training(recipe: str | None, options: dict, *, resume: str | None = None, callbacks=(), say=None,
                 started: float | None = None) -> tuple[dict | None, str, str | None]:
    """What ``petalnet train`` and ``petalnet.train`` both do: the recipe's TrainConfig (``auto`` or None:
    by the hardware, ``say``ing which) with ``options`` on top, trained into its ``out``, or the run
    folder ``resume`` continued (``options`` there must agree with the run's own). Returns (the summary,
    the run folder, None), or (None, the run folder, why) when a signal or an interrupt stopped it."""
    from petalnet.engine import Stop, train as engine_train
    from petalnet.recipes import config_for
    TrainCommand(recipe=recipe or AUTO, resume=resume).check()
    if resume:
        _check_resume(resume, recipe, options)
    cfg = config_for(recipe, say=None if resume else say, **options)
    folder = resume or cfg.out
    try:
        return engine_train(cfg, resume=resume, callbacks=callbacks, started=started), folder, None
    except Stop as e:
        return None, folder, str(e)
    except KeyboardInterrupt:
        if not folder or not os.path.isfile(os.path.join(folder, "config.json")):
            raise
        return None, folder, "interrupted"


def _check_resume(run_dir: str, recipe: str | None, options: dict) -> None:
    """OptionError for an option given to a resumed run that differs from the one it was started with."""
    import dataclasses

    from petalnet.config import TrainConfig
    saved = Run(run_dir).config
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    given = {**options, **({"recipe": recipe} if recipe not in (None, AUTO) else {})}
    for name, value in given.items():
        if name in RESUME_TAKES or value in (None, AUTO) or name not in fields:
            continue
        was = saved.get(name)
        if value != was and not (name == "precision" and PRECISIONS.get(value) == was):
            raise OptionError(f"{flag_of(fields[name])} {value}: {run_dir} continues with the options it was "
                              f"started with ({was})")


def _finished(path: str, stopped: str | None) -> Run:
    """The Run of ``path``; a stopped training says so (and what was finished) and sets ``Run.stopped``."""
    run = Run(path)
    run.stopped = stopped
    if stopped:
        print(f"petalnet: {stopped}; {len(run.history)} epoch(s) finished in {path}; continue with "
              f"petalnet.load({path!r}).resume()", file=sys.stderr, flush=True)
    return run
