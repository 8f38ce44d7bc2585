"""Write images into the competition layout: ``OUT/tfrecords-jpeg-SxS/SPLIT/NN-SxS-COUNT.tfrec``."""
from __future__ import annotations

import io
import os
import shutil

from PIL import Image

from petalnet.data import example
from petalnet.data.tfrecord import TFRecordWriter
from petalnet.errors import PetalnetError


def jpeg_bytes(img: Image.Image, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def square(img: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square and resize to ``size`` (the competition's images are square)."""
    w, h = img.size
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    return img.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)


def write_split(folder: str, size: int, records: list[dict], shard_size: int = 512) -> list[str]:
    """Write Example dicts (``image`` bytes, ``id``, optional ``class``) into shards of ``folder``."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for n, start in enumerate(range(0, len(records), shard_size)):
        chunk = records[start:start + shard_size]
        path = os.path.join(folder, f"{n:02d}-{size}x{size}-{len(chunk)}.tfrec")
        with TFRecordWriter(path) as w:
            for rec in chunk:
                w.write(example.encode(rec))
        paths.append(path)
    return paths


class LayoutWriter:
    """Builds ``OUT/tfrecords-jpeg-SxS`` in a temporary folder and moves it into place on success,
    so an interrupted or failed run leaves nothing half-written."""

    def __init__(self, out: str, size: int, force: bool = False):
        self.final = os.path.join(out, f"tfrecords-jpeg-{size}x{size}")
        if os.path.exists(self.final) and not force:
            raise PetalnetError(f"{self.final} already exists: pass --force to replace it")
        self.size = size
        os.makedirs(out, exist_ok=True)
        self.tmp = f"{self.final}.partial-{os.getpid()}"
        shutil.rmtree(self.tmp, ignore_errors=True)

    def write(self, split: str, records: list[dict], shard_size: int = 512) -> list[str]:
        """Write one split; returns the paths the files will have once the layout is in place."""
        written = write_split(os.path.join(self.tmp, split), self.size, records, shard_size)
        return [os.path.join(self.final, split, os.path.basename(p)) for p in written]

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        if os.path.exists(self.final):
            shutil.rmtree(self.final)
        os.replace(self.tmp, self.final)
