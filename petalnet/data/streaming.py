"""Streaming TFRecord images: the dataset and sampler training uses for data behind a URL (gs://, s3://,
http(s)://).

``StreamedImages`` is a ``TFRecordImages`` whose records arrive by streaming their shards
(``stream.read_into``) in the order ``order.epoch_order`` gives, instead of by random access through an
index: record counts come from the file names (no scan before the first step), every shard is read
front to back in large reads, once an epoch. ``StreamSampler`` is that order for one rank, with
``set_epoch(epoch, start)`` for resuming inside an epoch (the order is computed, not read: the stream
starts at the right record of each shard). The decoding threads (``loader.ThreadedLoader``) take the
records from the stream's store; their number does not change the order, so it may change between a run
and its resume; the number of ranks may not (it shapes the order, as for ``loader.ShardSampler``).
"""
from __future__ import annotations

import atexit
import bisect
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from petalnet.classes import CLASSES
from petalnet.data import example, files, order as orders
from petalnet.data.dataset import TFRecordImages
from petalnet.data.discovery import count_from_name
from petalnet.data.images import header_size
from petalnet.data.stream import OffsetCache, RecordStore, read_into
from petalnet.data.tfrecord import iter_records, load_index
from petalnet.errors import DataError, ExampleError

IO_THREADS = 8   # range requests in flight: open streams (orders.WINDOW) plus the ones opening next
_LIVE: "weakref.WeakSet[StreamedImages]" = weakref.WeakSet()


class StreamedImages(TFRecordImages):
    """The records of ``paths`` as ``TFRecordImages`` hands them out, read by streaming (module doc).
    Labels are checked against ``num_classes`` as each record arrives (no pass over the data first)."""

    streamed = True

    def __init__(self, paths: list[str], *, image_size: int | None = None, labeled: bool | None = None,
                 image_key: str = "image", label_key: str = "class", id_key: str = "id", decode: bool = True,
                 num_classes: int = len(CLASSES), decode_size: int | None = None, offsets: OffsetCache | None = None):
        if not paths:
            raise DataError("<dataset>", "no record files given")
        self.paths = [str(p) for p in paths]
        # a name without a count: that file is scanned once (its index cached), as the map-style path does
        self.counts = [c if (c := count_from_name(p)) is not None else len(load_index(p)) for p in self.paths]
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64).tolist()
        self.ends = np.cumsum(self.counts).tolist()
        self.readers, self.problems, self.keep, self.transform = [], [], None, None
        self.image_size, self.decode, self.decode_size = image_size, decode, decode_size
        self.image_key, self.label_key, self.id_key = image_key, label_key, id_key
        self.num_classes, self.offsets = num_classes, offsets or OffsetCache()
        self.store: RecordStore | None = None
        self._pool: ThreadPoolExecutor | None = None
        if labeled is None or image_size is None:
            first = next(iter_records(self.paths[0]))   # one read of the first file's start
            labeled = label_key in example.keys(first) if labeled is None else labeled
            self.image_size = image_size or header_size(example.parse(first, {image_key: "bytes"})[image_key])[0]
        self.labeled = labeled
        self.spec = {image_key: "bytes", id_key: "bytes"}
        self.meta_spec = {id_key: "bytes"}
        if labeled:
            self.spec[label_key] = self.meta_spec[label_key] = "int64"
        _LIVE.add(self)

    def __getstate__(self):   # not sent to worker processes: the loader decodes in threads
        raise TypeError("a StreamedImages dataset is read by threads of its process")

    def locate(self, i: int) -> tuple[int, int]:
        if not 0 <= i < len(self):
            raise IndexError(f"record {i} out of range 0..{len(self) - 1}")
        f = bisect.bisect_right(self.ends, i)
        return f, i - self.starts[f]

    def begin(self, read: np.ndarray, rest: np.ndarray, cap: int) -> None:
        """Start streaming the records ``rest`` (emitted order) that ``read`` (read order) orders."""
        self.end()
        wanted = np.unique(rest)
        order = read[np.isin(read, wanted)]
        spans = {}
        for i in order.tolist():
            s, r = self.locate(i)
            a, _ = spans.get(s, (r, r))
            spans[s] = (min(a, r), r)
        self.store = RecordStore(rest.tolist(), cap)
        self._pool = self._pool or ThreadPoolExecutor(IO_THREADS, thread_name_prefix="petalnet-stream-io")
        self._reader = threading.Thread(target=read_into, name="petalnet-stream", daemon=True,
                                        args=(self.store, order, list(zip(self.paths, self.counts)), self.locate,
                                              spans, self._pool, self.offsets, orders.BLOCK))
        self._reader.start()

    def end(self) -> None:
        """Stop the epoch's stream; returns once its reader has written the offsets it found."""
        if self.store is not None:
            self.store.stop()
            self._reader.join()
            self.store = None

    def read(self, i: int, spec: dict[str, str] | None = None) -> dict:
        if self.store is None:
            raise RuntimeError("StreamedImages.read outside an epoch (StreamSampler starts the stream)")
        payload = self.store.take(i)
        try:
            feats = example.parse(payload, spec or self.spec)
        except ExampleError as e:
            raise self.error(i, str(e)) from None
        if self.labeled and not 0 <= feats[self.label_key] < self.num_classes:
            raise self.error(i, f"class {feats[self.label_key]} outside 0..{self.num_classes - 1}",
                             feats.get(self.id_key))
        return feats

    def error(self, i: int, what: str, image_id: bytes | None = None) -> DataError:
        f, r = self.locate(i)
        where = self.store.where.get(i) if self.store is not None else None
        ident = f", id {image_id.decode(errors='replace')}" if image_id is not None else ""
        return DataError(self.paths[f], f"record {r}{ident}: {what}", where[1] if where else None)

    def output_size(self, i: int = 0) -> tuple[int, int]:
        from petalnet.data.dataset import scaled_size
        s = self.image_size
        return scaled_size(s, s, self.decode_size) or (s, s)

    def load_batch(self, indices, flips=None, out=None):
        if self.decode:
            return super().load_batch(indices, flips, out)
        items = [self[i] for i in indices]   # encoded bytes for a GPU decode: a list, as loader.fast_collate
        targets = [t for _, t in items]
        return [img for img, _ in items], (torch.tensor(targets, dtype=torch.int64) if self.labeled else targets)

    def metadata(self):
        """(labels, ids) of every record: one sequential pass over the files."""
        labels, ids = [], []
        for path in self.paths:
            for payload in iter_records(path):
                feats = example.parse(payload, self.meta_spec)
                ids.append(feats[self.id_key].decode(errors="replace"))
                if self.labeled:
                    labels.append(feats[self.label_key])
        return (np.asarray(labels, np.int64) if self.labeled else None), ids

    def check_labels(self, labels=None, num_classes: int | None = None) -> None:
        """Labels are checked as the records arrive; this sets the range they must fall in."""
        self.num_classes = num_classes or self.num_classes


class StreamSampler:
    """One rank's records of each epoch, in ``orders.epoch_order``'s order; iterating starts the stream."""

    def __init__(self, dataset: StreamedImages, *, rank: int = 0, world_size: int = 1, shuffle: bool = False,
                 seed: int = 0, pad: bool = False, drop_last: bool = False, ahead: int = 0):
        self.dataset, self.rank, self.world = dataset, rank, world_size
        self.shuffle, self.seed, self.pad, self.drop_last = shuffle, seed, pad, drop_last
        self.epoch, self.start = 0, 0
        self.ahead = ahead   # records the loader takes ahead of the lowest untaken one (its batches in flight)
        self._cached = None

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def order(self) -> orders.EpochOrder:
        if self._cached is None or self._cached[0] != self.epoch:
            self._cached = (self.epoch, orders.epoch_order(
                self.dataset.counts, self.seed, self.epoch, self.world, self.rank, shuffle=self.shuffle,
                pad=self.pad, drop_last=self.drop_last))
        return self._cached[1]

    def __len__(self) -> int:
        n = orders.per_rank(sum(self.dataset.counts), self.world, self.rank, pad=self.pad, drop_last=self.drop_last)
        return max(n - self.start, 0)

    def __iter__(self):
        eo = self.order()
        rest = eo.emitted[self.start:]
        # the reader runs at most a shuffle block plus the loader's batches in flight ahead (no deadlock:
        # the record a taker waits for is always within that many of the read position)
        self.dataset.begin(eo.read, rest, cap=orders.BLOCK + self.ahead + self.world + 1)
        return iter(rest.tolist())


def open_records(paths: list[str], *, stream: bool | None = None, **kwargs) -> TFRecordImages:
    """The dataset training reads: streamed where the files are behind a URL (``stream`` None), else
    ``TFRecordImages``'s random access (a local disk has no per-request cost; its exact index also gives
    ``skip_bad``). Either way, the labels are checked against ``num_classes`` (kwargs)."""
    stream = any(files.is_url(p) for p in paths) if stream is None else stream
    if stream:
        return StreamedImages(paths, **kwargs)
    ds = TFRecordImages(paths, **kwargs)
    ds.check_labels(ds.metadata()[0])
    return ds


@atexit.register
def _stop_streams() -> None:   # reader threads waiting on a full store: let them write their offsets and end
    for ds in list(_LIVE):
        ds.end()
