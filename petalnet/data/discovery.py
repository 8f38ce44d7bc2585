"""Find the splits and image size of a dataset given as any of the competition's layouts.

DATA may be the folder holding ``tfrecords-jpeg-SxS/`` folders, one ``tfrecords-jpeg-SxS``
folder with ``train/ val/ test/``, one split folder of ``*.tfrec``, a glob, a single file, or a
list of those (a list or glob may name the same files twice, to repeat them).

Image sizes, the same in every command: ``image_size`` S picks the stored ``tfrecords-jpeg-SxS``
folder; where S is not stored, the nearest stored size above S (else the largest) is read and resampled
to S by the caller (``resampled_from``), and ``DataSource.note`` says so in one line. Without S, one
stored size is simply read; several need ``default_size`` (train: the recipe's size, else
``DEFAULT_SIZE``; predict/evaluate: the model's), chosen the same way, and the note says which.
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
DEFAULT_SIZE = 224   # several stored sizes and none asked for: ImageNet weights' native size (or the next above)


@dataclasses.dataclass
class DataSource:
    root: str
    image_size: int | None          # from folder or file names; None: the first image decides
    size_from: str                  # where image_size came from, for error messages
    splits: dict[str, list[str]]    # split name -> record files
    stored_sizes: tuple = ()        # the tfrecords-jpeg-SxS sizes found side by side (when DATA held several)
    note: str = ""                  # one line to show: the stored size read instead of the one asked for

    def split(self, name: str) -> list[str]:
        if name not in self.splits:
            raise PetalnetError(f"{self.root}: no '{name}' split (found: {', '.join(self.splits) or 'none'})")
        return self.splits[name]


def _is_record(path: str) -> bool:
    return bool(re.search(r"\.tfrec(ord)?$", path))


def _records_in(folder: str) -> list[str]:
    return [p for p, folder in files.entries(folder) if _is_record(p) and not folder]


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


def choose_size(stored, wanted: int) -> int:
    """The stored size to read for ``wanted``: itself, else the nearest above it, else the largest."""
    above = [s for s in stored if s >= wanted]
    return min(above) if above else max(stored)


def discover(data: str | list[str], image_size: int | None = None, default_size: int | None = None) -> DataSource:
    """Resolve DATA into splits of record files. ``image_size`` picks among several size folders (or the
    nearest, with a note: module docstring); ``default_size`` stands in for it when DATA holds several."""
    src = _discover(data, image_size, default_size)
    if image_size and src.image_size and src.image_size != image_size and not src.note:
        src.note = resampled_from(src.root, src.image_size, image_size)
    return src


def resampled_from(root: str, stored: int, wanted: int, stored_sizes=(), to: int | None = None) -> str:
    """The one line saying that ``wanted`` px images come from resampling ``stored`` px ones (to ``to`` px,
    the model's size, where that is not ``wanted``)."""
    sizes = ", ".join(map(str, sorted(stored_sizes or (stored,))))
    return (f"{root}: no {wanted} px images (stored: {sizes} px): reading the {stored} px ones, resized to "
            + (f"{wanted} px" if to in (None, wanted) else f"{to} px (the model's size)"))


def _discover(data, image_size: int | None, default_size: int | None) -> DataSource:
    if isinstance(data, (list, tuple)):
        if len(data) == 1:
            return _discover(data[0], image_size, default_size)
        paths = [p for d in data for p in _expand_one(str(d))]
        return _single(", ".join(map(str, data)), {files.basename(_parent(paths[0])): paths})
    data = str(data)
    if (_glob.has_magic(data) and not files.exists(data)) or (files.exists(data) and not files.isdir(data)):
        # an existing path is itself, whatever characters it holds; a glob only otherwise
        paths = _expand_one(data)
        return _single(data, {files.basename(_parent(paths[0])): paths})
    if not files.exists(data):
        raise PetalnetError(f"{data}: no such file or folder")
    entries = files.entries(data)
    size_dirs = {int(m.group(1)): e for e, folder in entries if folder and (m := SIZE_DIR.match(files.basename(e)))}
    if size_dirs:
        return _pick_size_dir(data, size_dirs, image_size, default_size)
    m = SIZE_DIR.match(files.basename(data))
    splits = {files.basename(e): recs for e, folder in entries if folder and (recs := _records_in(e))}
    if splits:
        src = DataSource(data, None, "", _sorted_splits(splits))
    elif recs := [e for e, folder in entries if _is_record(e) and not folder]:
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


def _pick_size_dir(data: str, size_dirs: dict[int, str], image_size: int | None,
                   default_size: int | None) -> DataSource:
    sizes = ", ".join(map(str, sorted(size_dirs)))
    wanted = image_size or (default_size if len(size_dirs) > 1 else None)
    if wanted is None and len(size_dirs) > 1:
        raise PetalnetError(f"{data}: several image sizes ({sizes}): choose one with --image-size")
    size = choose_size(size_dirs, wanted) if wanted else next(iter(size_dirs))
    src = _discover(size_dirs[size], None, None)
    src.stored_sizes = tuple(sorted(size_dirs))
    if image_size and size != image_size:
        src.note = resampled_from(data, size, image_size, size_dirs)
    elif not image_size and len(size_dirs) > 1:
        src.note = (f"{data}: reading {files.basename(size_dirs[size])} (stored: {sizes} px; the nearest to "
                    f"{wanted} px at or above it, else the largest; --image-size picks another)")
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
