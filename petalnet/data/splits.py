"""The datasets a training run reads: DATA discovered (``discovery.discover``), its training and
validation splits opened (streamed when behind a URL: ``streaming.open_records``) with their labels
checked against the head's classes."""
from __future__ import annotations

from petalnet.data.dataset import TFRecordImages
from petalnet.data.discovery import DEFAULT_SIZE, discover, resampled_from
from petalnet.data.streaming import open_records
from petalnet.errors import PetalnetError


def open_splits(data, image_size: int | None, *, train_split: str, val_split: str | None, train_on_val: bool,
                num_classes: int, decode: bool, say=lambda line: None):
    """(train dataset, val dataset or None, the stored image size read). ``image_size`` (--image-size or
    the recipe's) picks the stored size; another is read and resampled, and ``say`` is told so.
    ``train_on_val``: the val split is trained on too, and nothing is validated. ``decode``: JPEGs are
    decoded on the host (else handed over encoded, for the GPU)."""
    src = discover(data, image_size, DEFAULT_SIZE)
    has_val = bool(val_split) and val_split in src.splits
    if train_on_val and not has_val:
        raise PetalnetError(f"--train-on-val: {data} has no '{val_split}' split")
    train_files = src.split(train_split) + (src.split(val_split) if train_on_val else [])
    # labels checked against the head's classes (--num-classes), naming the first bad record
    opts = dict(image_size=src.image_size, labeled=True, decode=decode, num_classes=num_classes)
    train_ds = open_records(train_files, **opts)
    val_ds = open_records(src.split(val_split), **opts) if has_val and not train_on_val else None
    stored = src.image_size or TFRecordImages(train_ds.paths[:1]).load(0)[0].shape[-1]
    say(src.note or (resampled_from(src.root, stored, image_size) if image_size not in (None, stored) else ""))
    return train_ds, val_ds, stored
