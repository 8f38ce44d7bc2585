"""Sampling, collating and loading batches: rank/worker sharding, uint8 batches, resumable epochs."""
from __future__ import annotations

import math
import os

import torch
from torch.utils.data import DataLoader, Sampler

from petalnet.errors import PetalnetError


class ShardSampler(Sampler[int]):
    """This rank's share of an epoch's (shuffled) order; every rank draws the same permutation.

    pad=True repeats the first indices so every rank gets the same count (training under DDP must
    step in lockstep); pad=False gives disjoint shards that exactly cover the data (evaluation).
    ``set_epoch`` reshuffles; ``start`` skips the first samples of this rank's share (resume).
    """

    def __init__(self, num_samples: int, *, rank: int = 0, world_size: int = 1, shuffle: bool = False,
                 seed: int = 0, pad: bool = False, drop_last: bool = False):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        self.n, self.rank, self.world = num_samples, rank, world_size
        self.shuffle, self.seed, self.pad, self.drop_last = shuffle, seed, pad, drop_last
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.drop_last:
            order = order[: self.n - self.n % self.world]
        elif self.pad and self.n % self.world:
            extra = self.world - self.n % self.world
            order += (order * math.ceil(extra / max(self.n, 1)))[:extra]
        return order[self.rank::self.world]

    def __iter__(self):
        return iter(self._order()[self.start:])

    def __len__(self) -> int:
        if self.drop_last:
            full = self.n // self.world
        elif self.pad:
            full = math.ceil(self.n / self.world)
        else:
            full = len(range(self.rank, self.n, self.world))
        return max(full - self.start, 0)


def fast_collate(batch):
    """uint8 image batch (B, C, H, W) plus int64 labels (or a list of ids for unlabelled data),
    plus int64 sample indices when the items carry them (``WithIndex``). Encoded images (1-D byte
    tensors, for decoding on the GPU) stay a list."""
    images = [b[0] for b in batch]
    if images[0].dim() == 3:
        images = torch.stack(images)
    targets = [b[1] for b in batch]
    if isinstance(targets[0], int):
        targets = torch.tensor(targets, dtype=torch.int64)
    if len(batch[0]) == 3:
        return images, targets, torch.tensor([b[2] for b in batch], dtype=torch.int64)
    return images, targets


def create_loader(dataset, batch_size: int, *, shuffle: bool = False, rank: int = 0, world_size: int = 1,
                  num_workers: int = 2, seed: int = 0, pad: bool = False, drop_last: bool = False,
                  pin_memory: bool = False, prefetch_factor: int = 4, persistent_workers: bool = False,
                  threads: int = 0, batch_transform=None, flip: bool = False, background: bool = False):
    """DataLoader with a ShardSampler; ``loader.sampler.set_epoch(e)`` before each epoch. ``threads`` > 0
    (with ``num_workers`` 0): a ``ThreadedLoader`` instead, batches built by threads of this process,
    which can also mirror images while decoding them (``flip``) and run at idle priority
    (``background``); with ``pin_memory`` its threads decode straight into reused pinned batch
    buffers (the GPU fast path: no worker-to-main copy, no pin-memory copy). A streamed dataset
    (``streaming.StreamedImages``) always gets decoding threads: ``max(threads, num_workers, 1)``."""
    inner = dataset.dataset if isinstance(dataset, WithIndex) else dataset
    if getattr(inner, "streamed", False):
        threads = max(threads, num_workers, 1)
        return stream_loader(dataset, inner, batch_size, shuffle=shuffle, rank=rank, world_size=world_size, seed=seed,
                             pad=pad, drop_last=drop_last, threads=threads, prefetch=threads * prefetch_factor // 2,
                             flip=flip, background=background, pin_memory=pin_memory, batch_transform=batch_transform)
    sampler = ShardSampler(len(dataset), rank=rank, world_size=world_size, shuffle=shuffle, seed=seed,
                           pad=pad, drop_last=drop_last)
    if threads and not num_workers:
        return ThreadedLoader(dataset, batch_size, sampler, threads, prefetch=threads * prefetch_factor // 2,
                              drop_last=drop_last, batch_transform=batch_transform, flip=flip, seed=seed,
                              background=background, pin_memory=pin_memory)
    if not num_workers:
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=fast_collate,
                          pin_memory=pin_memory, drop_last=drop_last, generator=torch.Generator().manual_seed(seed))
    return WorkerLoader(_Guarded(dataset), batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                        collate_fn=_guarded_collate, pin_memory=pin_memory, drop_last=drop_last,
                        generator=torch.Generator().manual_seed(seed), prefetch_factor=prefetch_factor,
                        persistent_workers=persistent_workers)


class _Raised:
    """A PetalnetError raised in a worker process, carried to the main process in place of its batch."""

    def __init__(self, error: PetalnetError):
        self.error = error


class _Guarded(torch.utils.data.Dataset):
    """``dataset`` whose bad-input errors come back as ``_Raised`` items instead of being raised in the
    worker, where torch would wrap them as ``RuntimeError: Caught DataError in DataLoader worker process 0``
    with the worker's traceback in the message."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        try:
            return self.dataset[i]
        except PetalnetError as e:
            return _Raised(e)


def _guarded_collate(batch):
    return next((b for b in batch if isinstance(b, _Raised)), None) or fast_collate(batch)


class WorkerLoader(DataLoader):
    """DataLoader over worker processes that raises a worker's PetalnetError in the main process as the
    same one-line error."""

    def __iter__(self):
        for batch in super().__iter__():
            if isinstance(batch, _Raised):
                raise batch.error
            yield batch


class WithIndex(torch.utils.data.Dataset):
    """Adds each sample's dataset index, so augmentation can be a function of the sample, not of the worker."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return (*self.dataset[i], i)


class ThreadedLoader:
    """Batches built by threads of this process, each thread a whole batch (read, check, decode, collate).

    simplejpeg (``TFRecordImages.load_batch``, decoding straight into the batch) and torch's copies
    release the GIL, so threads decode in parallel without worker processes' pickling and
    shared-memory copies of every batch. Same interface as
    the DataLoader of ``create_loader``: iterate, ``len()``, ``loader.sampler.set_epoch(e)``.
    ``batch_transform`` runs on each collated batch in the thread (e.g. random flips).

    ``background``: the threads run only when a core would otherwise idle (Linux ``SCHED_IDLE``). Beside
    a model whose threads fill every core, a decoding thread at normal priority preempts them in the
    middle of operations (which then wait for it at their barriers); at idle priority it decodes in
    the gaps and only when the next batch is late does the step wait for it. Lite0 head-only training
    on 2 cores: 0.93 of the bare loop against 0.88 at normal priority (benchmarks/RESULTS.md).
    Meant for one training process per machine: under several, another's model would starve it.

    ``pin_memory`` (the GPU path): batches are decoded straight into ``prefetch + 1`` preallocated
    buffers (images, labels, indices), page-locked where CUDA is available, and reused in turn: no
    worker-process transfer of each 28-38 MB batch and no pin-memory thread copying it again. A
    yielded batch is valid until the next one is asked for: the consumer enqueues its (non-blocking)
    copies to the device before that. When it asks, an event is recorded on the current CUDA stream;
    the thread that next fills that buffer waits for the event first, so a buffer is never overwritten
    while a copy out of it may still be queued. Needs ``load_batch`` (no ``transform``,
    ``batch_transform``) and a dataset whose images have one size.
    """

    def __init__(self, dataset, batch_size: int, sampler: Sampler, threads: int = 2, prefetch: int | None = None,
                 drop_last: bool = False, batch_transform=None, flip: bool = False, seed: int = 0,
                 background: bool = False, pin_memory: bool = False):
        self.dataset, self.batch_size, self.sampler = dataset, batch_size, sampler
        self.threads, self.prefetch = threads, prefetch or 2 * threads
        self.drop_last, self.batch_transform = drop_last, batch_transform
        self.flip, self.seed = flip, seed   # flip: mirror per (sample, epoch, seed) coin while decoding
        self.background = background
        self.reuse = pin_memory   # decode into reused (pinned, where CUDA is) buffers
        self.pin = pin_memory and torch.cuda.is_available()
        self._slots: list[dict] | None = None

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _inner(self):
        return self.dataset.dataset if isinstance(self.dataset, WithIndex) else self.dataset

    def _new_slot(self, shape: tuple[int, int]) -> dict:
        def alloc(*size, dtype):
            t = torch.empty(size, dtype=dtype)
            return t.pin_memory() if self.pin else t
        return {"images": alloc(self.batch_size, *shape, 3, dtype=torch.uint8),
                "labels": alloc(self.batch_size, dtype=torch.int64),
                "indices": alloc(self.batch_size, dtype=torch.int64), "event": None}

    def _event(self):
        """An event recorded on the current CUDA stream (None without CUDA: nothing can be in flight)."""
        if not self.pin:
            return None
        ev = torch.cuda.Event()
        ev.record(torch.cuda.current_stream())
        return ev

    def _fill(self, indices: list[int], flips, slot: dict):
        """``load_batch`` into ``slot``'s buffers, once the copies queued out of them have finished."""
        if slot["event"] is not None:
            slot["event"].synchronize()   # releases the GIL; returns at once when the copy is long done
            slot["event"] = None
        n = len(indices)
        images, targets = self._inner().load_batch(indices, flips, out=slot["images"].numpy())
        if isinstance(targets, torch.Tensor):
            targets = slot["labels"][:n].copy_(targets)
        if self._inner() is not self.dataset:
            idx = slot["indices"][:n]
            idx.copy_(torch.tensor(indices, dtype=torch.int64))
            return images, targets, idx
        return images, targets

    def _batch(self, indices: list[int], slot: dict | None = None):
        flips = None
        if self.flip:
            from petalnet.augment import flip_mask
            flips = flip_mask(torch.tensor(indices), getattr(self.sampler, "epoch", 0), self.seed).tolist()
        inner = self._inner()
        if slot is not None:
            batch = self._fill(indices, flips, slot)
        elif getattr(inner, "transform", 0) is None and hasattr(inner, "load_batch"):   # decoded into the batch
            batch = inner.load_batch(indices, flips)
            if inner is not self.dataset:
                batch = (*batch, torch.tensor(indices, dtype=torch.int64))
        else:
            batch = fast_collate([self.dataset[i] for i in indices])
            if flips is not None:
                mask = torch.tensor(flips)
                batch[0][mask] = batch[0][mask].flip(-1)
        return self.batch_transform(batch) if self.batch_transform else batch

    def __iter__(self):
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor
        order = list(self.sampler)
        chunks = iter([order[i:i + self.batch_size] for i in range(0, len(self) * self.batch_size, self.batch_size)])
        free = deque()   # reusable buffers (pin_memory); one is taken, on this thread, per submitted batch
        if self.reuse and order:
            inner = self._inner()
            if getattr(inner, "transform", 0) is not None or not hasattr(inner, "load_batch") \
                    or self.batch_transform is not None:
                raise ValueError("pinned batch buffers need a dataset with load_batch, no transform, "
                                 "no batch_transform")
            if self._slots is None:   # kept across epochs (page-locking is a slow system call)
                self._slots = [self._new_slot(inner.output_size(order[0])) for _ in range(self.prefetch + 1)]
            start = self._event()   # covers copies still queued from a batch of an abandoned iteration
            for slot in self._slots:
                slot["event"] = start
            free.extend(self._slots)

        def submit(chunk):
            if not self.reuse:
                return pool.submit(self._batch, chunk), None
            slot = free.popleft()
            return pool.submit(self._batch, chunk, slot), slot

        with ThreadPoolExecutor(self.threads, thread_name_prefix="petalnet-loader",
                                initializer=_idle_priority if self.background else None) as pool:
            pending = deque(submit(c) for _, c in zip(range(self.prefetch), chunks))
            try:
                while pending:
                    future, slot = pending.popleft()
                    batch = future.result()
                    nxt = next(chunks, None)
                    if nxt is not None:   # prefetch + 1 buffers: one is always free here
                        pending.append(submit(nxt))
                    yield batch
                    if slot is not None:   # the consumer has queued its copies out of this buffer
                        slot["event"] = self._event()
                        free.append(slot)
            finally:   # an abandoned iteration must not leave threads decoding
                for f, _ in pending:
                    f.cancel()


def _idle_priority() -> None:
    """This thread runs only when a core would otherwise idle (Linux; elsewhere it stays as it is)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))   # pid 0: the calling thread
    except (AttributeError, OSError):
        pass


def stream_loader(dataset, inner, batch_size: int, *, shuffle: bool, rank: int, world_size: int, seed: int,
                  pad: bool, drop_last: bool, threads: int, prefetch: int, flip: bool, background: bool,
                  pin_memory: bool, batch_transform=None):
    """A ``ThreadedLoader`` over a ``streaming.StreamSampler``: ``create_loader`` for a streamed dataset
    (``inner``: ``dataset`` without its ``WithIndex`` wrapper)."""
    from petalnet.data.streaming import StreamSampler
    sampler = StreamSampler(inner, rank=rank, world_size=world_size, shuffle=shuffle, seed=seed, pad=pad,
                            drop_last=drop_last, ahead=(prefetch + threads + 1) * batch_size)
    return ThreadedLoader(dataset, batch_size, sampler, threads, prefetch=prefetch, drop_last=drop_last,
                          batch_transform=batch_transform, flip=flip, seed=seed, background=background,
                          pin_memory=pin_memory)
