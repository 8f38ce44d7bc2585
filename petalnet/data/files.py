"""Local paths and fsspec URLs behind one small interface.

Local files take the fast path (os.pread, glob); anything with a ``scheme://`` goes through
fsspec, so ``gs://``, ``s3://``, ``https://`` work once the backend (gcsfs, s3fs, aiohttp)
is installed: ``pip install 'petalnet[cloud]'``.
"""
from __future__ import annotations

import glob as _glob
import os
import re

from petalnet.errors import DataError, PetalnetError

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")
_RECORD = re.compile(r"\.tfrec(ord)?$")


def is_url(path: str) -> bool:
    return bool(_URL.match(str(path))) and not str(path).startswith("file://")


def local_path(path: str) -> str:
    """``path`` without a ``file://`` scheme."""
    path = str(path)
    return path[len("file://"):] if path.startswith("file://") else path


def _fs(url: str):
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec is a dependency
        raise PetalnetError(f"{url}: reading URLs needs fsspec: pip install 'petalnet[cloud]'") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:
        scheme = url.split("://", 1)[0]
        raise PetalnetError(
            f"{url}: no fsspec backend for '{scheme}://' ({e}); install it, e.g. pip install 'petalnet[cloud]'"
        ) from None


def join(base: str, *parts: str) -> str:
    if is_url(base):
        return "/".join([base.rstrip("/"), *parts])
    return os.path.join(local_path(base), *parts)


def basename(path: str) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1] if is_url(path) else os.path.basename(local_path(path).rstrip(os.sep))


def isdir(path: str) -> bool:
    if is_url(path):
        fs, p = _fs(path)
        return fs.isdir(p)
    return os.path.isdir(local_path(path))


def exists(path: str) -> bool:
    if is_url(path):
        fs, p = _fs(path)
        return fs.exists(p)
    return os.path.exists(local_path(path))


def listdir(path: str) -> list[str]:
    """Full paths of the entries of a folder, sorted."""
    if is_url(path):
        fs, p = _fs(path)
        return sorted(fs.unstrip_protocol(e) for e in fs.ls(p, detail=False))
    path = local_path(path)
    return sorted(os.path.join(path, e) for e in os.listdir(path))


def entries(path: str) -> list[tuple[str, bool]]:
    """(full path, is a folder) of the entries of a folder, sorted: one listing, no request per entry (an
    HTTP ``isdir`` downloads the file to look for links in it)."""
    if is_url(path):
        fs, p = _fs(path)
        found = [(fs.unstrip_protocol(e["name"]), e.get("type")) for e in fs.ls(p, detail=True)]
        # an HTTP index's links do not say which are folders: ask for those not named as record files
        return sorted((name, kind == "directory" or (not _RECORD.search(name) and fs.isdir(name)))
                      for name, kind in found)
    return [(e, os.path.isdir(e)) for e in listdir(path)]


def expand(pattern: str) -> list[str]:
    """Files matching a path or glob, sorted; a plain file path gives itself."""
    if is_url(pattern):
        fs, p = _fs(pattern)
        return sorted(fs.unstrip_protocol(m) for m in fs.glob(p) if fs.isfile(m))
    pattern = local_path(pattern)
    if os.path.isfile(pattern):   # an existing file is itself, "[1]" or "*" in its name or not
        return [pattern]
    if _glob.has_magic(pattern):
        return sorted(m for m in _glob.glob(pattern) if os.path.isfile(m))
    return [pattern] if os.path.isfile(pattern) else []


def fingerprint(path: str) -> tuple[int, str]:
    """(size, version) that changes whenever the file's contents may have changed."""
    if is_url(path):
        fs, p = _fs(path)
        info = fs.info(p)
        version = next((str(info[k]) for k in ("ETag", "etag", "md5Hash", "generation", "mtime",
                                                "LastModified", "last_modified", "created") if info.get(k)), "")
        return int(info["size"]), version
    try:
        st = os.stat(local_path(path))
    except OSError as e:
        raise DataError(path, f"cannot read: {e.strerror or e}") from None
    return st.st_size, f"{st.st_mtime_ns}:{st.st_ino}"


class RandomAccessFile:
    """Read byte ranges of one file; a local file uses pread on one descriptor (no seek state)."""

    def __init__(self, path: str):
        self.path = str(path)
        self._fd: int | None = None
        self._remote = None
        if is_url(self.path):
            fs, p = _fs(self.path)
            self._remote = fs.open(p, "rb")
        else:
            try:
                self._fd = os.open(local_path(self.path), os.O_RDONLY)
            except OSError as e:
                raise DataError(self.path, f"cannot open: {e.strerror or e}") from None

    def read(self, offset: int, size: int) -> bytes:
        if self._fd is not None:
            return os.pread(self._fd, size, offset)
        self._remote.seek(offset)
        return self._remote.read(size)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._remote is not None:
            self._remote.close()
            self._remote = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def read_range(path: str, start: int, end: int) -> bytes:
    """Bytes ``start`` to ``end`` (clipped to the file's end) in one read: one range request for a URL."""
    if is_url(path):
        fs, p = _fs(path)
        try:
            return fs.cat_file(p, start, end)
        except Exception as e:   # fsspec's backends raise OSError, aiohttp's ClientError, botocore's ...
            raise DataError(path, f"cannot read bytes {start}-{end}: {e}", start) from None
    try:
        fd = os.open(local_path(path), os.O_RDONLY)
    except OSError as e:
        raise DataError(path, f"cannot open: {e.strerror or e}") from None
    try:
        return os.pread(fd, end - start, start)
    finally:
        os.close(fd)


def open_write(path: str):
    """A binary file for writing; local files are written atomically by the caller."""
    if is_url(path):
        fs, p = _fs(path)
        return fs.open(p, "wb")
    return open(local_path(path), "wb")


def cache_dir(*parts: str) -> str:
    """petalnet's cache folder (``$PETALNET_CACHE``, else ``$XDG_CACHE_HOME/petalnet``, else ~/.cache/petalnet)."""
    root = os.environ.get("PETALNET_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "petalnet")
    path = os.path.join(root, *parts)
    os.makedirs(path, exist_ok=True)
    return path
