"""TFRecord framing without TensorFlow: checked reads, a cached offset index, atomic writes.

A record is ``uint64 length | uint32 masked_crc32c(length) | payload | uint32 masked_crc32c(payload)``,
all little-endian. Every read checks both checksums; the index (record offsets of one file)
is built by walking the headers once and cached on disk, keyed by the file's size and
modification stamp, so reopening a dataset costs one stat per file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import warnings
from collections.abc import Iterator

import crc32c
import numpy as np

from petalnet.data import files
from petalnet.atomic import write_json
from petalnet.errors import PetalnetError, RecordError

HEADER, FOOTER = 12, 4
_MASK_DELTA = 0xA282EAD8
_INDEX_VERSION = 1


def masked_crc(data: bytes) -> int:
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(payload: bytes) -> bytes:
    """One record as TensorFlow's TFRecordWriter writes it."""
    length = struct.pack("<Q", len(payload))
    return b"".join((length, struct.pack("<I", masked_crc(length)), payload, struct.pack("<I", masked_crc(payload))))


def _check_header(header: bytes, path: str, offset: int, size: int) -> int:
    """Payload length of the record starting at ``offset``; raises RecordError when the header is bad."""
    if len(header) < HEADER:
        raise RecordError(path, f"truncated record header ({len(header)} of {HEADER} bytes)", offset)
    length_bytes, (crc,) = header[:8], struct.unpack("<I", header[8:12])
    if masked_crc(length_bytes) != crc:
        what = ("not a TFRecord file (the first record header's length checksum does not match)"
                if offset == 0 else "corrupt record header (length checksum mismatch)")
        raise RecordError(path, what, offset)
    (length,) = struct.unpack("<Q", length_bytes)
    if offset + HEADER + length + FOOTER > size:
        raise RecordError(path, f"truncated record: needs {HEADER + length + FOOTER} bytes, "
                                f"file has {size - offset} left", offset)
    return length


def check_record(raw: bytes, path: str, offset: int) -> bytes:
    """Payload of a whole framed record ``raw`` after checking both checksums."""
    length = _check_header(raw[:HEADER], path, offset, offset + len(raw))
    payload = raw[HEADER:HEADER + length]
    (crc,) = struct.unpack("<I", raw[HEADER + length:HEADER + length + FOOTER])
    if masked_crc(payload) != crc:
        raise RecordError(path, "corrupt record: payload checksum mismatch", offset)
    return payload


@dataclasses.dataclass
class RecordIndex:
    """Where each record of one file starts, and how long its payload is."""
    path: str
    size: int
    version: str
    offsets: np.ndarray          # int64, start of each record's header
    lengths: np.ndarray          # int64, payload length
    problems: list[str]          # bad spans skipped (only with skip_bad)
    verified: bool               # payload checksums were checked while indexing

    def __len__(self) -> int:
        return len(self.offsets)


def _resync(f: files.RandomAccessFile, path: str, start: int, size: int) -> int | None:
    """Offset of the next plausible record header after a corrupt one, or None."""
    data = f.read(start, size - start)
    for p in range(1, len(data) - HEADER):
        if struct.unpack_from("<I", data, p + 8)[0] == masked_crc(data[p:p + 8]):
            (length,) = struct.unpack_from("<Q", data, p)
            if start + p + HEADER + length + FOOTER <= size:
                return start + p
    return None


def scan(path: str, *, skip_bad: bool = False, verify: bool = False) -> RecordIndex:
    """Walk a file's record headers (and payload checksums when ``verify`` or ``skip_bad``).

    Raises RecordError on the first problem unless ``skip_bad``, which records it and moves on
    (skipping needs the payload checks, so that bad records never enter the index).
    """
    path = str(path)
    size, version = files.fingerprint(path)
    verify = verify or skip_bad
    offsets, lengths, problems = [], [], []
    if size == 0:
        err = RecordError(path, "empty file (0 bytes): not a TFRecord file")
        if not skip_bad:
            raise err
        problems.append(str(err))
    with files.RandomAccessFile(path) as f:
        pos = 0
        while pos < size:
            try:
                length = _check_header(f.read(pos, HEADER), path, pos, size)
            except RecordError as err:
                if not skip_bad:
                    raise
                # the length is unknown, so the next record is found by searching for a valid header
                nxt = _resync(f, path, pos, size)
                problems.append(str(err) + (f" (resumed at byte offset {nxt})" if nxt is not None else ""))
                if nxt is None:
                    break
                pos = nxt
                continue
            end = pos + HEADER + length + FOOTER
            try:
                if verify:
                    check_record(f.read(pos, end - pos), path, pos)
                offsets.append(pos)
                lengths.append(length)
            except RecordError as err:
                if not skip_bad:
                    raise
                problems.append(str(err))   # the header was good: the next record starts at `end`
            pos = end
    return RecordIndex(path, size, version, np.asarray(offsets, np.int64), np.asarray(lengths, np.int64),
                       problems, verify)


def _cache_file(path: str, skip_bad: bool) -> str:
    where = path if files.is_url(path) else os.path.abspath(path)
    key = hashlib.sha256(f"{where}\0{int(skip_bad)}".encode()).hexdigest()[:32]
    return os.path.join(files.cache_dir("index"), key + ".json")


def load_index(path: str, *, skip_bad: bool = False, use_cache: bool = True) -> RecordIndex:
    """The record index of ``path``, from the on-disk cache when the file has not changed since."""
    path = str(path)
    size, version = files.fingerprint(path)
    try:
        cache = _cache_file(path, skip_bad)
    except OSError:
        use_cache = False
    if use_cache:
        try:
            with open(cache) as fh:
                c = json.load(fh)
            if (c["format"], c["path"], c["size"], c["version"]) == (_INDEX_VERSION, path, size, version):
                index = RecordIndex(path, size, version, np.asarray(c["offsets"], np.int64),
                                    np.asarray(c["lengths"], np.int64), c["problems"], c["verified"])
                _warn_skipped(index)
                return index
        except (OSError, ValueError, KeyError, TypeError):
            pass  # missing or stale cache: rebuild
    index = scan(path, skip_bad=skip_bad)
    _warn_skipped(index)
    if use_cache:
        try:   # the cache is an optimisation: a read-only cache folder must not stop reading
            write_json({"format": _INDEX_VERSION, "path": path, "size": index.size, "version": index.version,
                        "offsets": index.offsets.tolist(), "lengths": index.lengths.tolist(),
                        "problems": index.problems, "verified": index.verified}, cache)
        except (OSError, PetalnetError):
            pass
    return index


def _warn_skipped(index: RecordIndex) -> None:
    if index.problems:
        shown = [p.replace(index.path, "", 1).lstrip(" :") for p in index.problems[:3]]
        warnings.warn(f"{index.path}: skipped {len(index.problems)} bad span(s), kept {len(index)} records: "
                      + "; ".join(shown) + (" ..." if len(index.problems) > 3 else ""),
                      stacklevel=3)


class RecordReader:
    """Checked random access to the records of one file through its index."""

    def __init__(self, index: RecordIndex):
        self.index = index
        self._file: files.RandomAccessFile | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.index)

    def _handle(self) -> files.RandomAccessFile:
        if self._pid != os.getpid():  # a forked DataLoader worker needs its own descriptor
            self._file, self._pid = files.RandomAccessFile(self.index.path), os.getpid()
        return self._file

    def read(self, i: int) -> bytes:
        offset, length = int(self.index.offsets[i]), int(self.index.lengths[i])
        raw = self._handle().read(offset, HEADER + length + FOOTER)
        if len(raw) != HEADER + length + FOOTER:
            raise RecordError(self.index.path, "truncated record (file shrank since it was indexed)", offset)
        return check_record(raw, self.index.path, offset)

    def __getstate__(self):
        return {"index": self.index, "_file": None, "_pid": -1}

    def __iter__(self):
        for i in range(len(self)):
            yield self.read(i)


def iter_records(path: str) -> Iterator[bytes]:
    """Every payload of a file in order, each checked, without an index (one sequential pass)."""
    size, _ = files.fingerprint(path)
    if size == 0:
        raise RecordError(path, "empty file (0 bytes): not a TFRecord file")
    with files.RandomAccessFile(path) as f:
        pos = 0
        while pos < size:
            length = _check_header(f.read(pos, HEADER), path, pos, size)
            yield check_record(f.read(pos, HEADER + length + FOOTER), path, pos)
            pos += HEADER + length + FOOTER


class TFRecordWriter:
    """Writes framed records; a local file appears under its name only once closed without error."""

    def __init__(self, path: str):
        self.path = str(path)
        self.count = 0
        self._tmp = self.path if files.is_url(self.path) else f"{self.path}.{os.getpid()}.tmp"
        self._fh = files.open_write(self._tmp)

    def write(self, payload: bytes) -> None:
        self._fh.write(frame(payload))
        self.count += 1

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self._fh.close()
        if self._tmp != self.path:
            if exc_type is None:
                os.replace(self._tmp, self.path)
            else:
                os.unlink(self._tmp)
