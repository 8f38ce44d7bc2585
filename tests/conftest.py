import os
import shutil

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PETALS = os.path.join(os.path.dirname(ROOT), "shared", "data", "petals-mini")
PETALS_192 = os.path.join(PETALS, "tfrecords-jpeg-192x192")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    """Each test gets an empty index/synthetic cache, so no test depends on another's leftovers."""
    monkeypatch.setenv("PETALNET_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def petals():
    assert os.path.isdir(PETALS_192), f"shared data missing: {PETALS} (see ../shared/README.md)"
    return PETALS


@pytest.fixture
def val_copy(tmp_path, petals):
    """A writable copy of petals-mini's second val file (261 records)."""
    src = os.path.join(PETALS_192, "val", "01-192x192-261.tfrec")
    dst = tmp_path / "val" / "01-192x192-261.tfrec"
    dst.parent.mkdir()
    shutil.copy(src, dst)
    return str(dst)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
