"""``petalnet convert``: a class-per-folder image tree into competition TFRecords, or TFRecords to another size."""
from __future__ import annotations

import hashlib
import os
import random
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

from PIL import Image, ImageOps, UnidentifiedImageError

from petalnet.classes import CLASSES, class_index
from petalnet.data.images import check_pixels, to_rgb
from petalnet.data.writer import LayoutWriter, jpeg_bytes, square
from petalnet.commands import DEFAULT_VAL_FRACTION, ConvertOptions
from petalnet.errors import OptionError, PetalnetError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def folder_class(name: str) -> int:
    """Class index of a folder named by competition index ('48') or class name ('daisy', 'common_tulip')."""
    if name.isdigit():
        idx = int(name)
        if idx >= len(CLASSES):
            raise PetalnetError(f"folder {name!r}: class index outside 0..{len(CLASSES) - 1}")
        return idx
    try:
        return class_index(name)
    except PetalnetError:
        raise PetalnetError(f"folder {name!r} is neither a class index (0..103) nor one of the competition's "
                            "class names (see `petalnet classes`)") from None


def image_id(relpath: str, taken: set[str]) -> str:
    """A 9-hex-character id (as in the competition) derived from the file's path: stable across runs."""
    digest = hashlib.sha1(relpath.encode()).hexdigest()
    for start in range(0, len(digest) - 9):
        if (cand := digest[start:start + 9]) not in taken:
            taken.add(cand)
            return cand
    raise PetalnetError(f"cannot assign a unique id to {relpath}")


def scan_tree(image_dir: str) -> list[tuple[str, int]]:
    """(path relative to image_dir, class) for every image under the class folders, sorted."""
    if not os.path.isdir(image_dir):
        raise PetalnetError(f"{image_dir}: not a folder")
    items = []
    for entry in sorted(os.scandir(image_dir), key=lambda e: e.name):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        label = folder_class(entry.name)
        for root, dirs, names in os.walk(entry.path):
            dirs.sort()
            for name in sorted(names):
                if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                    items.append((os.path.relpath(os.path.join(root, name), image_dir), label))
    if not items:
        raise PetalnetError(f"{image_dir}: no images in class folders (expected IMAGE_DIR/<class>/*.jpg)")
    return items


def stratified_split(items: list[tuple[str, int]], val_fraction: float, seed: int):
    """Deterministic per-class split: each class gives round(n * val_fraction) images to val (a fraction
    in [0, 1): ``ConvertOptions``)."""
    by_class = defaultdict(list)
    for item in items:
        by_class[item[1]].append(item)
    train, val = [], []
    rng = random.Random(seed)
    for label in sorted(by_class):
        group = sorted(by_class[label])
        rng.shuffle(group)
        k = round(len(group) * val_fraction)
        if val_fraction > 0 and len(group) > 1:
            k = max(k, 1)
        val += group[:k]
        train += group[k:]
    rng.shuffle(train)
    rng.shuffle(val)
    return train, val


def _load(image_dir: str, relpath: str, size: int, quality: int) -> bytes:
    path = os.path.join(image_dir, relpath)
    try:
        with Image.open(path) as img:   # lazy: only the header is read until the size passes
            if (problem := check_pixels(*img.size)) is not None:
                raise PetalnetError(f"{path}: {problem}")
            img = to_rgb(ImageOps.exif_transpose(img))
            return jpeg_bytes(square(img, size), quality)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise PetalnetError(f"{path}: cannot read image ({e})") from None


def convert(image_dir: str, out: str, size: int, *, workers: int | None = None, progress=None,
            **options) -> dict[str, list[str]]:
    """Write ``out/tfrecords-jpeg-SxS/{train,val}`` from a class-per-folder image tree; returns the files
    written per split. ``options``: ``ConvertOptions``' val_fraction, seed, quality, shard_size, force."""
    return _from_images(ConvertOptions(image_dir, out, size, **options).check(), workers, progress)


def _from_images(o: ConvertOptions, workers: int | None, progress) -> dict[str, list[str]]:
    image_dir, size, quality = o.image_dir, o.size, o.quality
    items = scan_tree(image_dir)
    train, val = stratified_split(items, DEFAULT_VAL_FRACTION if o.val_fraction is None else o.val_fraction,
                                  o.seed)
    taken: set[str] = set()
    ids = {rel: image_id(rel, taken) for rel, _ in items}
    written = {}
    with LayoutWriter(o.out, size, o.force) as layout, ThreadPoolExecutor(workers or os.cpu_count()) as pool:
        for split, group in (("train", train), ("val", val)):
            if not group:
                continue
            jpegs = pool.map(lambda it: _load(image_dir, it[0], size, quality), group)
            if progress:
                jpegs = progress(jpegs, total=len(group), desc=split)
            records = [{"image": jpeg, "class": label, "id": ids[rel]} for (rel, label), jpeg in zip(group, jpegs)]
            written[split] = layout.write(split, records, o.shard_size)
    return written


def resize_records(data: str, out: str, size: int, *, workers: int | None = None, progress=None,
                   **options) -> dict[str, list[str]]:
    """Re-encode competition TFRecords (any layout ``discover`` takes) at another ``size``, every split
    with its ids and labels, into ``out/tfrecords-jpeg-SxS`` (e.g. 192 px data for a 331 px model).
    ``options``: ``ConvertOptions``' quality, shard_size, force."""
    from petalnet.data.discovery import discover
    o = ConvertOptions(data, out, size, **options).check()
    return _from_records(o, discover(data), workers, progress)


def _from_records(o: ConvertOptions, src, workers: int | None, progress) -> dict[str, list[str]]:
    from petalnet.data.dataset import TFRecordImages
    size, quality = o.size, o.quality

    def load(ds: TFRecordImages, i: int) -> dict:
        img, feats = ds.load(i)
        pil = Image.fromarray(img.permute(1, 2, 0).numpy())
        rec = {"image": jpeg_bytes(square(pil, size), quality), "id": feats[ds.id_key]}
        if ds.labeled:
            rec["class"] = int(feats[ds.label_key])
        return rec

    written = {}
    with LayoutWriter(o.out, size, o.force) as layout, ThreadPoolExecutor(workers or os.cpu_count()) as pool:
        for split, paths in src.splits.items():
            ds = TFRecordImages(paths, image_size=src.image_size)
            records = pool.map(lambda i: load(ds, i), range(len(ds)))
            if progress:
                records = progress(records, total=len(ds), desc=split)
            written[split] = layout.write(split, list(records), o.shard_size)
    return written


def convert_any(source: str, out: str, size: int, *, workers: int | None = None, progress=None,
                **options) -> dict[str, list[str]]:
    """``petalnet convert``: TFRecords in (any layout ``discover`` takes) are re-encoded at ``size``
    (``resize_records``); a class-per-folder image tree becomes TFRecords (``convert``). ``options``:
    ``ConvertOptions``', every one checked before anything is read; a --val-fraction for TFRecords (which
    keep their splits) is refused."""
    from petalnet.data.discovery import discover
    o = ConvertOptions(source, out, size, **options).check()
    try:
        src = discover(source)
    except PetalnetError:
        return _from_images(o, workers, progress)
    if o.val_fraction is not None:
        raise OptionError(f"--val-fraction {o.val_fraction}: {source} holds TFRecords, re-encoded split by split "
                          f"({', '.join(src.splits)}); the fraction splits an image folder")
    return _from_records(o, src, workers, progress)
