"""Writing files so that a reader never sees half of one: write beside it, then rename over it."""
from __future__ import annotations

import contextlib
import json
import os

from petalnet.errors import PetalnetError


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ""):
    """A temporary path beside ``path`` that replaces ``path`` when the block succeeds and is removed when
    it fails. ``suffix`` keeps an extension for writers that choose the format by it (.png, .npz)."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise PetalnetError(f"{path}: folder {folder} does not exist")
    tmp = f"{path}.{os.getpid()}.tmp{suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(text: str, path: str) -> str:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


def write_json(obj, path: str) -> str:
    return write_text(json.dumps(obj, indent=1), path)


def write_lines(rows: list[dict], path: str) -> str:
    return write_text("".join(json.dumps(r) + "\n" for r in rows), path)
