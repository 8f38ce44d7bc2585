"""Writing files so that a reader never sees half of one: write beside it, then rename over it."""
from __future__ import annotations

import contextlib
import json
import os
import shutil

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
    except (OSError, RuntimeError) as e:
        if isinstance(e, OSError) or _write_failure(e):
            raise PetalnetError(f"{path}: could not be written ({_reason(e)}; {_free(folder)}); the file it "
                                "replaces, if any, is unchanged") from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_failure(e: RuntimeError) -> bool:
    """torch.save's C++ writer reports a full disk or a file-size limit as a RuntimeError."""
    return any(s in str(e) for s in ("inline_container", "file write failed", "PytorchStreamWriter"))


def _reason(e: Exception) -> str:
    if isinstance(e, OSError):
        return e.strerror or type(e).__name__
    return "the disk is full or the file is over a size limit: " + (str(e).strip().splitlines() or ["?"])[-1][:120]


def _free(folder: str) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free there"
    except OSError:
        return "free space unknown"


def write_text(text: str, path: str) -> str:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


def write_json(obj, path: str) -> str:
    return write_text(json.dumps(obj, indent=1), path)


def write_lines(rows: list[dict], path: str) -> str:
    return write_text("".join(json.dumps(r) + "\n" for r in rows), path)
