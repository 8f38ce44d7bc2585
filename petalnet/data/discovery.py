"""Find the splits and image size of a dataset given as any of the competition's layouts.

DATA may be the folder holding ``tfrecords-jpeg-SxS/`` folders, one ``tfrecords-jpeg-SxS``
folder with ``train/ val/ test/``, one split folder of ``*.tfrec``, a glob, a single file, or a
list of those (a list or glob may name the same files twice, to repeat them).
"""
from __future__ import annotations

import dataclasses
import glob as _glob
import os
import re

from petalnet.data import files
from petalnet.errors import PetalnetError

SIZE_DIR = re.compile(r"^tfrecords-jpeg-(\d+)x(\d+)$")
SHARD_NAME = re.compile(r"^(\d+)-(\d+)x(\d+)-(\d+)\.tfrec(?:ord)?$")
SPLIT_ORDER = ("train", "val", "test")


@dataclasses.dataclass
class DataSource:
    root: str
    image_size: int | None          # from folder or file names; None: the first image decides
    size_from: str                  # where image_size came from, for error messages
    splits: dict[str, list[str]]    # split name -> record files

    def split(self, name: str) -> list[str]:
        if name not in self.splits:
            raise PetalnetError(f"{self.root}: no '{name}' split (found: {', '.join(self.splits) or 'none'})")
        return self.splits[name]


def _is_record(path: str) -> bool:
    return bool(re.search(r"\.tfrec(ord)?$", path))


def _records_in(folder: str) -> list[str]:
    return [p for p in files.listdir(folder) if _is_record(p) and not files.isdir(p)]


def count_from_name(path: str) -> int | None:
    """Record count written into a competition file name (``NN-SxS-COUNT.tfrec``), if any."""
    m = SHARD_NAME.match(files.basename(path))
    return int(m.group(4)) if m else None


def _size_from_names(paths: list[str]) -> int | None:
    sizes = {(int(m.group(2)), int(m.group(3))) for m in map(SHARD_NAME.match, map(files.basename, paths)) if m}
    if len(sizes) > 1:
        raise PetalnetError(f"record files name several image sizes: {sorted(sizes)}")
    if sizes:
        w, h = sizes.pop()
        if w != h:
            raise PetalnetError(f"record files name non-square images {w}x{h}")
        return w
    return None


def _sorted_splits(found: dict[str, list[str]]) -> dict[str, list[str]]:
    order = {n: i for i, n in enumerate(SPLIT_ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def discover(data: str | list[str], image_size: int | None = None) -> DataSource:
    """Resolve DATA into splits of record files. ``image_size`` picks among several size folders."""
    if isinstance(data, (list, tuple)):
        if len(data) == 1:
            return discover(data[0], image_size)
        paths = [p for d in data for p in _expand_one(str(d))]
        return _single(", ".join(map(str, data)), {files.basename(_parent(paths[0])): paths})
    data = str(data)
    if _glob.has_magic(data) or (files.exists(data) and not files.isdir(data)):
        paths = _expand_one(data)
        return _single(data, {files.basename(_parent(paths[0])): paths})
    if not files.exists(data):
        raise PetalnetError(f"{data}: no such file or folder")
    entries = files.listdir(data)
    size_dirs = {int(m.group(1)): e for e in entries if (m := SIZE_DIR.match(files.basename(e))) and files.isdir(e)}
    if size_dirs:
        if image_size is None and len(size_dirs) > 1:
            raise PetalnetError(f"{data}: several image sizes ({', '.join(map(str, sorted(size_dirs)))}): "
                                "choose one with --image-size")
        size = image_size if image_size in size_dirs else (None if image_size else next(iter(size_dirs)))
        if size is None:
            raise PetalnetError(f"{data}: no tfrecords-jpeg-{image_size}x{image_size} folder "
                                f"(found sizes {', '.join(map(str, sorted(size_dirs)))})")
        return discover(size_dirs[size])
    m = SIZE_DIR.match(files.basename(data))
    splits = {files.basename(e): recs for e in entries if files.isdir(e) and (recs := _records_in(e))}
    if splits:
        src = DataSource(data, None, "", _sorted_splits(splits))
    elif recs := _records_in(data):
        src = DataSource(data, None, "", {files.basename(data): recs})
    else:
        raise PetalnetError(f"{data}: no .tfrec files here, in its split folders or in tfrecords-jpeg-SxS folders")
    if m:
        if m.group(1) != m.group(2):
            raise PetalnetError(f"{data}: non-square image size in folder name")
        src.image_size, src.size_from = int(m.group(1)), f"folder name {files.basename(data)}"
    else:
        _fill_size_from_names(src)
    return src


def _parent(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[0] if files.is_url(path) else os.path.dirname(path)


def _expand_one(pattern: str) -> list[str]:
    paths = files.expand(pattern)
    if not paths:
        raise PetalnetError(f"{pattern}: matches no record file")
    return paths


def _single(root: str, splits: dict[str, list[str]]) -> DataSource:
    src = DataSource(root, None, "", splits)
    parents = {files.basename(_parent(p)) for ps in splits.values() for p in ps}
    grand = {files.basename(_parent(_parent(p))) for ps in splits.values() for p in ps}
    sizes = {int(m.group(1)) for g in grand if (m := SIZE_DIR.match(g))} | \
            {int(m.group(1)) for g in parents if (m := SIZE_DIR.match(g))}
    if len(sizes) == 1:
        src.image_size, src.size_from = sizes.pop(), "folder name"
    else:
        _fill_size_from_names(src)
    return src


def _fill_size_from_names(src: DataSource) -> None:
    size = _size_from_names([p for ps in src.splits.values() for p in ps])
    if size:
        src.image_size, src.size_from = size, "file names"
