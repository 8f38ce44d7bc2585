"""Checkpoints written atomically (temp file + rename): a crash never leaves a half-written file."""
from __future__ import annotations

import json
import os

import torch

from petalnet.errors import PetalnetError


def save(state: dict, path: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load(path: str) -> dict:
    if not os.path.isfile(path):
        raise PetalnetError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:   # truncated or foreign files raise many kinds
        raise PetalnetError(f"{path}: not a readable checkpoint ({str(e).splitlines()[0][:200]})") from None


def write_json(obj, path: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1)
    os.replace(tmp, path)


def write_lines(rows: list[dict], path: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    os.replace(tmp, path)
