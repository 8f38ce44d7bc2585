"""Local copies of remote record files, for the commands that read a split whole in file order (``inspect
--verify``, ``predict``, ``evaluate``): each file is read once, front to back, in large range reads, into
petalnet's cache folder (``files.cache_dir("shards")``), and the random-access code then reads the copy
(its index scan, the labels, the images: three passes that over a network would each cost the split).

A copy is used again while the remote file's fingerprint (size and ETag/generation/mtime) is unchanged.
The folder is capped at ``$PETALNET_SHARD_CACHE_GB`` (default 20 GiB): the least recently used copies go
first, never one the current command needs. Errors name the URL, not the copy (``named``).
"""
from __future__ import annotations

import hashlib
import json
import os

from petalnet.data import files

CHUNK = 8 << 20   # bytes a range request
_COPIES: dict[str, str] = {}   # local copy -> URL, for messages


def cap_bytes() -> int:
    return int(float(os.environ.get("PETALNET_SHARD_CACHE_GB", "20")) * 2**30)


def _folder() -> str:
    return files.cache_dir("shards")


def local_copies(paths: list[str]) -> list[str]:
    """``paths`` with every URL replaced by an up-to-date local copy (local paths as they are)."""
    urls = [p for p in paths if files.is_url(p)]
    if not urls:
        return list(paths)
    folder, wanted = _folder(), {}
    for url in urls:
        size, version = files.fingerprint(url)
        key = hashlib.sha256(url.encode()).hexdigest()[:24]
        wanted[url] = (os.path.join(folder, key, files.basename(url)), size, version)
    _evict(folder, {os.path.dirname(d) for d, _, _ in wanted.values()}, sum(s for _, s, _ in wanted.values()))
    for url, (dest, size, version) in wanted.items():
        meta = dest + ".json"
        try:
            with open(meta) as fh:
                fresh = json.load(fh) == {"url": url, "size": size, "version": version}
        except (OSError, ValueError):
            fresh = False
        if not (fresh and os.path.getsize(dest) == size):
            _download(url, dest, size)
            with open(meta, "w") as fh:
                json.dump({"url": url, "size": size, "version": version}, fh)
        os.utime(meta)   # the copy's last use, for eviction
        _COPIES[dest] = url
    return [wanted[p][0] if p in wanted else p for p in paths]


def _download(url: str, dest: str, size: int) -> None:
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = f"{dest}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as fh:
            for start in range(0, size, CHUNK):
                fh.write(files.read_range(url, start, min(size, start + CHUNK)))
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _evict(folder: str, keep: set[str], incoming: int) -> None:
    """Remove the least recently used copies (not in ``keep``) until ``incoming`` more bytes fit the cap."""
    copies = []
    for key in os.listdir(folder):
        d = os.path.join(folder, key)
        for name in os.listdir(d) if os.path.isdir(d) else ():
            if name.endswith(".json"):
                path = os.path.join(d, name[:-5])
                size = os.path.getsize(path) if os.path.exists(path) else 0
                copies.append((os.path.getmtime(os.path.join(d, name)), d, path, size))
    total = sum(c[3] for c in copies)
    for _, d, path, size in sorted(copies):
        if total + incoming <= cap_bytes():
            break
        if d in keep:
            continue
        for f in (path, path + ".json"):
            if os.path.exists(f):
                os.unlink(f)
        total -= size


def named(text: str) -> str:
    """``text`` (an error message) naming the URLs instead of their local copies."""
    for copy, url in _COPIES.items():
        text = text.replace(copy, url)
    return text
