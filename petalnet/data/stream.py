"""Reading records in a given order by streaming their shards: each shard front to back in large range
reads (one request per ``CHUNK`` for a URL, the next chunk fetched while this one is parsed), both
checksums of every record checked (``RecordError`` naming the file or URL and the byte offset), the
payloads handed over through a bounded ``RecordStore``. No byte is read twice.

Where a shard's stream starts past its first record (the tail of a shard cut between two ranks, or a
resumed epoch), the record's byte offset comes from ``OffsetCache`` (the offsets every stream writes as it
parses, keyed by the file's size and version); where it has none, the stream walks from the shard's start
(reading those bytes once, checking the headers).
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from petalnet.atomic import write_json
from petalnet.data import files
from petalnet.data.tfrecord import FOOTER, HEADER, _check_header, check_record
from petalnet.errors import DataError, PetalnetError, RecordError

CHUNK = 4 << 20   # bytes a request (one request per petals-mini shard); the next is fetched while one is parsed
FIRST = 1 << 20   # a stream's first request: the first shuffle block needs ~0.5 MB of each open shard
TAIL_STEP = 256 << 10   # past a partial piece's estimated end: reads this much more at a time
_FORMAT = 1


class OffsetCache:
    """Record number -> byte offset of the records streams have parsed, one JSON file per shard."""

    def __init__(self, folder: str | None = None):
        try:
            self.folder = folder or files.cache_dir("offsets")
        except OSError:   # a read-only cache folder: streams then walk from the shard's start
            self.folder = None

    def _file(self, path: str) -> str:
        where = path if files.is_url(path) else os.path.abspath(path)
        return os.path.join(self.folder, hashlib.sha256(where.encode()).hexdigest()[:32] + ".json")

    def load(self, path: str, size: int, version: str) -> dict[int, int]:
        if self.folder is None:
            return {}
        try:
            with open(self._file(path)) as fh:
                c = json.load(fh)
            if (c["format"], c["path"], c["size"], c["version"]) == (_FORMAT, path, size, version):
                return dict(zip(c["numbers"], c["offsets"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return {}

    def add(self, path: str, size: int, version: str, found: dict[int, int]) -> None:
        if self.folder is None or not found:
            return
        known = {**self.load(path, size, version), **found}
        numbers = sorted(known)
        try:   # an optimisation: a full disk must not stop training
            write_json({"format": _FORMAT, "path": path, "size": size, "version": version, "numbers": numbers,
                        "offsets": [known[n] for n in numbers]}, self._file(path))
        except (OSError, PetalnetError):
            pass


class ShardStream:
    """One shard read front to back from record ``first`` (records before it skipped, unread where the
    cache knows its offset) up to record ``last``; ``count``: the records its name says it holds."""

    def __init__(self, path: str, count: int, first: int, last: int, pool: ThreadPoolExecutor,
                 offsets: OffsetCache, chunk: int = CHUNK):
        self.path, self.count, self.first, self.last, self.chunk = path, count, first, last, chunk
        self.pool, self.offsets, self.found = pool, offsets, {}
        self.opening = pool.submit(self._open)
        self.buf, self.base, self.fetched = b"", 0, 0   # buf holds bytes base .. fetched of the file
        self.number = self.offset = None   # the next record to parse, and where it starts
        self.pending = None

    def _open(self):
        # from the first record: its read need not wait for the fingerprint (a request of its own)
        early = self.pool.submit(files.read_range, self.path, 0, FIRST) if self.first == 0 else None
        size, version = files.fingerprint(self.path)
        if early is not None:
            return size, version, 0, 0, early.result()[:size]
        known = self.offsets.load(self.path, size, version)
        n0 = max((n for n in known if n <= self.first), default=0)
        o0 = known.get(n0, 0)
        end = min(size, o0 + FIRST, max(o0 + TAIL_STEP, self._estimate(size, o0, n0)))
        return size, version, n0, o0, files.read_range(self.path, o0, end)

    def _estimate(self, size: int, o0: int, n0: int) -> int:
        """Where record ``last`` probably ends: the average record size past ``o0``, plus 2% and a record."""
        if self.last + 1 >= self.count:
            return size
        per = (size - o0) / max(self.count - n0, 1)
        return int(o0 + per * (self.last + 2 - n0) * 1.02)

    def _start(self) -> None:
        self.size, self.version, self.number, self.offset, self.buf = self.opening.result()
        self.base, self.fetched = self.offset, self.offset + len(self.buf)
        self.goal = self._estimate(self.size, self.offset, self.number)
        self._prefetch()

    def _prefetch(self) -> None:
        if self.pending is None and self.fetched < self.size:
            end = min(self.goal, self.fetched + self.chunk) if self.fetched < self.goal else 0
            end = min(self.size, max(end, self.fetched + TAIL_STEP))
            self.pending = (self.fetched, end, self.pool.submit(files.read_range, self.path, self.fetched, end))

    def _need(self, end: int) -> None:
        """Bytes up to ``end`` in the buffer (or all there are)."""
        while self.fetched < end and self.fetched < self.size:
            start, stop, future = self.pending
            data = future.result()
            self.pending = None
            # buf holds bytes base .. fetched; those before the next record (``offset``) are done with
            buf = self.buf + data
            cut = min(self.offset - self.base, len(buf))
            self.buf, self.base, self.fetched = buf[cut:], self.base + cut, start + len(data)
            if len(data) < stop - start:
                raise RecordError(self.path, f"read {len(data)} of {stop - start} bytes: the file shrank", start)
            self.offsets.add(self.path, self.size, self.version, self.found)
            self.found = {}
            self._prefetch()

    def record(self, number: int) -> tuple[bytes, int]:
        """(payload, byte offset) of record ``number`` (>= every number asked for before)."""
        if self.number is None:
            self._start()
        while True:
            if self.offset >= self.size:
                raise DataError(self.path, f"file name says {self.count} records, the file holds {self.number}")
            self._need(self.offset + HEADER)
            at = self.offset - self.base
            length = _check_header(self.buf[at:at + HEADER], self.path, self.offset, self.size)
            end = self.offset + HEADER + length + FOOTER
            self.found[self.number] = self.offset
            here, n = self.offset, self.number
            if n == number:
                self._need(end)
                at = self.offset - self.base
                payload = check_record(self.buf[at:at + HEADER + length + FOOTER], self.path, here)
            self.number, self.offset = n + 1, end
            self.found[n + 1] = end   # where the next one starts, also when it is never parsed here
            if n == number:
                if n + 1 == self.count and end != self.size:
                    raise DataError(self.path, f"file name says {self.count} records, the file holds more "
                                               f"(record {self.count} at byte offset {end})")
                return payload, here

    def close(self) -> None:
        if self.pending is not None:
            self.pending[2].cancel()
            self.pending = None
        if self.number is not None:
            self.offsets.add(self.path, self.size, self.version, self.found)
        self.found, self.buf = {}, b""


class Stopped(Exception):
    """The store was stopped (an epoch abandoned): the reader ends."""


class RecordStore:
    """Payloads read ahead, by global index, until taken as often as the order names them; the reader waits
    while ``cap`` are waiting to be taken."""

    def __init__(self, wanted, cap: int):
        self.left = collections.Counter(int(i) for i in wanted)
        self.cap, self.data, self.where = cap, {}, {}
        self.cond = threading.Condition()
        self.error, self.stopped, self.done = None, False, False

    def put(self, i: int, payload: bytes, where: tuple[str, int]) -> None:
        with self.cond:
            while len(self.data) >= self.cap and not self.stopped:
                self.cond.wait()
            if self.stopped:
                raise Stopped
            self.data[i], self.where[i] = payload, where
            self.cond.notify_all()

    def take(self, i: int) -> bytes:
        with self.cond:
            while i not in self.data:
                if self.error is not None:
                    raise self.error
                if self.stopped or self.done:
                    raise PetalnetError(f"record {i} is not in this epoch's stream (stopped: {self.stopped})")
                self.cond.wait()
            self.left[i] -= 1
            payload = self.data[i] if self.left[i] > 0 else self.data.pop(i)
            self.cond.notify_all()
            return payload

    def finish(self, error: Exception | None = None) -> None:
        with self.cond:
            self.error, self.done = error, True
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()


def read_into(store: RecordStore, order, shards, locate, spans: dict[int, tuple[int, int]],
              pool: ThreadPoolExecutor, offsets: OffsetCache, lookahead: int) -> None:
    """Read the global indices ``order`` (each shard's in increasing record order) into ``store``.
    ``shards``: (path, count) per shard; ``locate``: global index -> (shard, record); ``spans``: shard ->
    (first, last) record wanted. A stream opens ``lookahead`` records before its first is due."""
    streams: dict[int, ShardStream] = {}
    due = sorted(((k, s) for s, k in _first_positions(order, locate).items()))
    nxt = 0
    try:
        for k, i in enumerate(order):
            while nxt < len(due) and due[nxt][0] <= k + lookahead:
                s = due[nxt][1]
                streams[s] = ShardStream(*shards[s], *spans[s], pool, offsets)
                nxt += 1
            s, r = locate(int(i))
            payload, at = streams[s].record(r)
            store.put(int(i), payload, (shards[s][0], at))
            if r == spans[s][1]:
                streams.pop(s).close()
        store.finish()
    except Stopped:
        pass
    except Exception as e:   # the takers raise it (a DataError is one line naming the file and offset)
        store.finish(e)
    finally:
        for st in streams.values():
            st.close()


def _first_positions(order, locate) -> dict[int, int]:
    first = {}
    for k, i in enumerate(order):
        first.setdefault(locate(int(i))[0], k)
    return first
