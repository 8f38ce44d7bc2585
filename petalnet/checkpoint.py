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

