"""Checkpoints written atomically (temp file + rename): a crash never leaves a half-written file."""
from __future__ import annotations

import os

import torch

from petalnet.atomic import atomic_path
from petalnet.errors import PetalnetError


def save(state: dict, path: str) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load(path: str) -> dict:
    if not os.path.isfile(path):
        raise PetalnetError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:   # truncated or foreign files raise many kinds
        raise PetalnetError(f"{path}: not a readable checkpoint ({str(e).splitlines()[0][:200]})") from None



def rng_state() -> dict:
    """This process's random generators (torch, numpy, python), to continue a run exactly."""
    import random

    import numpy as np
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    import random

    import numpy as np
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
