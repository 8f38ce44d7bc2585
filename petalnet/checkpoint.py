"""Checkpoints: written atomically (temp file + rename: a crash never leaves a half-written file), read
without running code, and checked field by field, so a malformed file is one line naming it and the field.

Reading uses ``torch.load(weights_only=True)``: the unpickler builds only tensors, containers and plain
values, so a ``__reduce__`` payload (``os.system``...) is refused instead of run. Run folders written
before this module stored numpy's RNG state as a uint32 ndarray; ``LEGACY_GLOBALS`` lets exactly that
through: ``_reconstruct`` may only build the allowlisted ``ndarray`` class, ``dtype`` is made from a
string, and BUILD is allowed for the uint32 dtype alone (an object array, whose elements could be
arbitrary objects, needs ``ObjectDType`` and is refused). Checkpoints written now hold no numpy at all.
"""
from __future__ import annotations

import math
import os
import pickle
import random

import numpy as np
import torch

from petalnet.atomic import atomic_path
from petalnet.errors import PetalnetError
from petalnet.options import TTA_MODES


LEGACY_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType,
                  # numpy 1.x wrote the same function under its old module name
                  (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct")]


def save(state: dict, path: str) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load(path: str) -> dict:
    """The checkpoint's top-level dict, unpickled without running code."""
    if not os.path.isfile(path):
        raise PetalnetError(f"{path}: no such checkpoint")
    if os.path.getsize(path) == 0:
        raise PetalnetError(f"{path}: an empty file (0 bytes), not a checkpoint")
    try:
        with torch.serialization.safe_globals(LEGACY_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:   # weights_only refused a global (the file wants to run code), or junk
        lines = [s.strip() for s in str(e).splitlines() if s.strip()]
        detail = next((s for s in lines if s.startswith(("Unsupported global", "Can only", "Trying to"))), None)
        if detail is None:   # not a pickle petalnet or torch wrote ("Unsupported operand 110": random bytes)
            raise PetalnetError(f"{path}: not a readable checkpoint ({(lines or ['?'])[-1][:200]})") from None
        raise PetalnetError(f"{path}: refused: it holds Python objects, not just tensors and plain values "
                            f"({detail.split(' was not')[0][:160]}); petalnet never runs code from a "
                            "checkpoint") from None
    except Exception as e:   # truncated or foreign files raise many kinds
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PetalnetError(f"{path}: not a readable checkpoint ({first[:200]})") from None
    if not isinstance(state, dict):
        raise PetalnetError(f"{path}: not a petalnet checkpoint (holds a {type(state).__name__}, not a dict)")
    return state


def _field(state: dict, path: str, key: str, check, what: str):
    if key not in state:
        raise PetalnetError(f"{path}: not a petalnet checkpoint (no '{key}')")
    value = state[key]
    if not check(value):
        raise PetalnetError(f"{path}: '{key}' must be {what}, not {_show(value)}")
    return value


def _show(value) -> str:
    text = repr(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _int(minimum: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _triple(v) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 3 and all(_number(x) for x in v)


def _tensors(v) -> bool:
    return isinstance(v, dict) and bool(v) and all(isinstance(k, str) and isinstance(t, torch.Tensor)
                                                   for k, t in v.items())


def _budget_plan(v) -> bool:
    ok = isinstance(v, dict) and _int(1)(v.get("epochs")) and (v.get("planned_epochs") is None
                                                                 or _int(1)(v["planned_epochs"]))
    ok = ok and all(v.get(k) is None or _int(1)(v[k]) for k in ("last_steps", "planned_last_steps"))
    ok = ok and (v.get("lr_end") is None or _number(v["lr_end"])) and isinstance(v.get("lr_knots", []), list) and all(
        isinstance(k, (list, tuple)) and len(k) == 2 and all(_number(x) for x in k) for k in v.get("lr_knots", []))
    return ok and isinstance(v.get("replans", []), list) and all(
        isinstance(r, (list, tuple)) and len(r) == 2 and all(_int(1)(x) for x in r) for r in v.get("replans", []))


def load_model(path: str) -> dict:
    """What predict, evaluate, export, serve and report read, each field checked."""
    state = load(path)
    _field(state, path, "model", _tensors, "a dict of tensors (a state dict)")
    _field(state, path, "model_name", lambda v: isinstance(v, str) and bool(v), "a model name")
    _field(state, path, "num_classes", _int(1), "an integer >= 1")
    _field(state, path, "image_size", _int(1), "an integer >= 1")
    _field(state, path, "mean", _triple, "3 finite numbers")
    _field(state, path, "std", lambda v: _triple(v) and all(x > 0 for x in v), "3 finite numbers > 0")
    if state.get("tta", "none") not in TTA_MODES:
        raise PetalnetError(f"{path}: 'tta' must be one of {', '.join(TTA_MODES)}, not {_show(state['tta'])}")
    return state


def load_resume(path: str) -> dict:
    """What ``train --resume`` reads: the model's fields plus the training position, each checked."""
    state = load_model(path)
    _field(state, path, "optimizer", lambda v: isinstance(v, dict) and {"state", "param_groups"} <= set(v),
           "an optimizer state dict")
    _field(state, path, "epoch", _int(0), "an integer >= 0")
    _field(state, path, "step", _int(0), "an integer >= 0")
    _field(state, path, "history", lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v),
           "a list of dicts")
    _field(state, path, "config", lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v), "a dict")
    _field(state, path, "best", lambda v: v is None or isinstance(v, dict), "a dict or None")
    _field(state, path, "accumulators", lambda v: v is None or (
        isinstance(v, dict) and all(isinstance(v.get(k), (int, float)) for k in ("loss", "correct", "seen",
                                                                                   "seconds"))),
        "None or a dict of loss, correct, seen, seconds")
    if state.get("budget") is not None:   # --budget's plan (absent from runs without one, and older ones)
        _field(state, path, "budget", _budget_plan, "a dict of planned_epochs, epochs (integers >= 1), replans and the LR's end")
    _field(state, path, "rng", lambda v: isinstance(v, dict) and {"torch", "numpy", "python"} <= set(v)
           and isinstance(v["torch"], torch.Tensor), "a dict of torch, numpy and python RNG states")
    now = rng_state()
    try:   # set it once to see that each generator accepts it, then put back the current states
        set_rng_state(state["rng"])
    except (ValueError, TypeError, RuntimeError, OverflowError):
        raise PetalnetError(f"{path}: 'rng' holds a state the torch, numpy or python generator refuses") from None
    finally:
        set_rng_state(now)
    state["path"] = path   # named by restore()'s messages
    return state


def load_weights(model: torch.nn.Module, weights: dict, path: str, what: str = "") -> None:
    """``model.load_state_dict(weights)``; a key or shape mismatch is one line naming the file."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        lines = [s.strip() for s in str(e).splitlines() if s.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else "mismatch"
        raise PetalnetError(f"{path}: its weights do not fit {what or 'the model'} ({detail[:200]})") from None


def restore(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Model and optimizer from a ``load_resume`` state; a mismatch is one line naming the file."""
    path = state.get("path", "the checkpoint")
    load_weights(model, state["model"], path, f"{state['model_name']} with {state['num_classes']} classes")
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise PetalnetError(f"{path}: its optimizer state does not fit the model "
                            f"({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from None


def rng_state() -> dict:
    """torch, numpy and python RNG states as tensors, ints, floats, strings, lists and tuples only
    (what ``weights_only`` loading accepts)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": (str(kind), [int(k) for k in keys], int(pos), int(has_gauss), float(gauss)),
            "python": (version, tuple(internal), gauss_next)}


def set_rng_state(state: dict) -> None:
    """Restore ``rng_state()``'s states (or the ndarray form older checkpoints hold)."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
