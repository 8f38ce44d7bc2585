"""Each epoch's record order for streaming, as a pure function of (seed, epoch, world, rank) and the
shards' record counts: no I/O, so a resumed run computes where it was without reading a byte.

An epoch permutes the shards, cuts the concatenated (shard, record) sequence into ``world`` contiguous
ranges (sizes differ by at most one) and gives range ``rank`` to that rank as ``Piece``s: whole shards,
and at most one partial shard at each end. Within a rank, the pieces are read through a sliding window
of ``window`` open pieces, the next record drawn from an open piece with probability proportional to
what it has left (``read_order``: every piece is read front to back, once); the emitted order then
permutes each block of ``block`` consecutive records of that (``emitted``). Records are named by their
global index: shard ``s``'s records are ``starts[s] .. starts[s] + counts[s] - 1``.
"""
from __future__ import annotations

import dataclasses

import numpy as np

WINDOW = 4     # pieces read at once: tf.data's interleave cycle length, a few open streams
BLOCK = 256    # records permuted together: the bounded shuffle buffer (x the image's ~30-150 KB)


@dataclasses.dataclass(frozen=True)
class Piece:
    shard: int
    start: int   # first record (in the shard)
    stop: int    # one past the last

    def __len__(self) -> int:
        return self.stop - self.start


def _rng(seed: int, epoch: int, what: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, what])


def rank_range(total: int, world: int, rank: int, drop_last: bool = False) -> tuple[int, int]:
    """[lo, hi) of the epoch's concatenated sequence that ``rank`` reads; ``drop_last``: every rank
    ``total // world`` records (the rest of the sequence is left out this epoch)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside world of {world}")
    if drop_last:
        q = total // world
        return rank * q, (rank + 1) * q
    return rank * total // world, (rank + 1) * total // world


def rank_pieces(counts, seed: int, epoch: int, world: int, rank: int, *, shuffle: bool = True,
                drop_last: bool = False) -> list[Piece]:
    """The pieces of the shards that ``rank`` reads in ``epoch``, in the order its range crosses them."""
    shards = _rng(seed, epoch, 0).permutation(len(counts)) if shuffle else np.arange(len(counts))
    lo, hi = rank_range(int(sum(counts)), world, rank, drop_last)
    pieces, at = [], 0
    for s in shards.tolist():
        n = int(counts[s])
        a, b = max(lo, at), min(hi, at + n)
        if a < b:
            pieces.append(Piece(s, a - at, b - at))
        at += n
    return pieces


def read_order(pieces: list[Piece], starts, rng: np.random.Generator | None, window: int = WINDOW) -> np.ndarray:
    """Global indices in the order a rank reads them: the pieces interleaved through ``window`` open ones
    (``rng`` None: one after the other, in file order)."""
    ids = [np.arange(p.start, p.stop, dtype=np.int64) + int(starts[p.shard]) for p in pieces]
    if rng is None or not ids:
        return np.concatenate(ids) if ids else np.zeros(0, np.int64)
    out = np.empty(sum(len(a) for a in ids), np.int64)
    open_, left, pos, nxt = [], [], [], 0
    draws = rng.random(len(out))
    for k in range(len(out)):
        while len(open_) < window and nxt < len(ids):
            open_.append(nxt), left.append(len(ids[nxt])), pos.append(0)
            nxt += 1
        j = int(np.searchsorted(np.cumsum(left), draws[k] * sum(left), side="right"))
        j = min(j, len(open_) - 1)
        out[k] = ids[open_[j]][pos[j]]
        pos[j] += 1
        left[j] -= 1
        if not left[j]:
            del open_[j], left[j], pos[j]
    return out


def emitted(read: np.ndarray, rng: np.random.Generator | None, block: int = BLOCK) -> np.ndarray:
    """``read`` with each block of ``block`` records permuted (``rng`` None: unchanged)."""
    if rng is None:
        return read
    out = read.copy()
    for a in range(0, len(out), block):
        out[a:a + block] = out[a:a + block][rng.permutation(len(out[a:a + block]))]
    return out


@dataclasses.dataclass
class EpochOrder:
    """One rank's epoch: the pieces, the read order, the emitted order (padded to ``length``)."""
    pieces: list[Piece]
    read: np.ndarray
    emitted: np.ndarray


def epoch_order(counts, seed: int, epoch: int, world: int, rank: int, *, shuffle: bool = True,
                pad: bool = False, drop_last: bool = False, window: int = WINDOW, block: int = BLOCK) -> EpochOrder:
    """Rank ``rank``'s order in ``epoch``. ``pad``: every rank ``ceil(total / world)`` records, the short
    ones repeating their first (as ``loader.ShardSampler``: DDP steps in lockstep)."""
    counts = [int(c) for c in counts]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if counts else np.zeros(0, np.int64)
    pieces = rank_pieces(counts, seed, epoch, world, rank, shuffle=shuffle, drop_last=drop_last)
    read = read_order(pieces, starts, _rng(seed, epoch, 1 + rank) if shuffle else None, window)
    out = emitted(read, _rng(seed, epoch, 1_000_003 + rank) if shuffle else None, block)
    total = sum(counts)
    if pad and not drop_last and len(out):
        extra = -(-total // world) - len(out)
        out = np.concatenate([out, np.resize(out, extra)]) if extra > 0 else out
    return EpochOrder(pieces, read, out)


def per_rank(total: int, world: int, rank: int, *, pad: bool = False, drop_last: bool = False) -> int:
    """How many records ``epoch_order`` gives ``rank`` (the same every epoch)."""
    if drop_last:
        return total // world
    if pad:
        return -(-total // world)
    lo, hi = rank_range(total, world, rank)
    return hi - lo
