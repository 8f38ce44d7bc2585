"""Streaming shards (issue 29): the epoch order as a pure function, its shuffle's quality, one read of
every byte over a bucket (``../shared/bench/slow_bucket.py``), exact resume inside an epoch, CRC errors
naming the URL, and a 2-rank training run stopped inside an epoch that resumes to the same history."""
import glob
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from petalnet.data import order as orders
from petalnet.data.discovery import discover
from petalnet.data.loader import WithIndex, create_loader
from petalnet.data.streaming import StreamedImages
from petalnet.data.tfrecord import load_index
from petalnet.errors import DataError
from tests.conftest import PETALS_192, ROOT, free_port

SLOW_BUCKET = os.path.join(os.path.dirname(ROOT), "shared", "bench", "slow_bucket.py")
TRAIN = sorted(glob.glob(os.path.join(PETALS_192, "train", "*.tfrec")))
COUNTS = [int(p.rsplit("-", 1)[1].split(".")[0]) for p in TRAIN]


class Bucket:
    """slow_bucket.py serving ``root`` on a free loopback port (no delay: the tests count, never time)."""

    def __init__(self, root: str, delay: float = 0.0):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, SLOW_BUCKET, str(root), str(self.port), str(delay)])
        self.url = f"http://127.0.0.1:{self.port}"
        while True:   # until it answers (or died)
            try:
                self.stats()
                return
            except OSError:
                assert self.proc.poll() is None, "slow_bucket.py did not start (needs aiohttp)"
                time.sleep(0.05)

    def stats(self) -> dict:
        with urllib.request.urlopen(self.url + "/_stats", timeout=10) as r:
            return json.load(r)

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def bucket():
    b = Bucket(os.path.dirname(PETALS_192))
    yield b
    b.close()


def _labels():
    """Class of each global record index of petals-mini's train split (read locally)."""
    from petalnet.data.dataset import TFRecordImages
    return TFRecordImages(TRAIN).metadata()[0]


def _epoch(loader, epoch, start=0):
    loader.sampler.set_epoch(epoch, start=start)
    seen, labels = [], []
    for _, y, i in loader:
        seen += i.tolist()
        labels += y.tolist()
    return seen, labels


def test_order_is_a_pure_function_of_seed_epoch_and_ranks():
    a = orders.epoch_order(COUNTS, 3, 1, 2, 0).emitted
    assert np.array_equal(a, orders.epoch_order(COUNTS, 3, 1, 2, 0).emitted)
    assert not np.array_equal(a, orders.epoch_order(COUNTS, 3, 2, 2, 0).emitted)   # another epoch
    assert not np.array_equal(a, orders.epoch_order(COUNTS, 4, 1, 2, 0).emitted)   # another seed
    total = sum(COUNTS)
    for world in (1, 2, 3, 8):
        for epoch in (0, 1):
            parts = [orders.epoch_order(COUNTS, 3, epoch, world, r).emitted for r in range(world)]
            assert sorted(np.concatenate(parts).tolist()) == list(range(total))   # each record exactly once
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
            padded = [orders.epoch_order(COUNTS, 3, epoch, world, r, pad=True).emitted for r in range(world)]
            assert {len(p) for p in padded} == {-(-total // world)}   # DDP steps in lockstep
            assert set(np.concatenate(padded).tolist()) == set(range(total))
    # every piece read front to back: within a shard, the read order is the file order
    eo = orders.epoch_order(COUNTS, 3, 0, 1, 0)
    starts = np.cumsum([0] + COUNTS[:-1])
    for s, n in enumerate(COUNTS):
        mine = eo.read[(eo.read >= starts[s]) & (eo.read < starts[s] + n)]
        assert np.array_equal(mine, np.arange(starts[s], starts[s] + n))


def test_classes_are_mixed_within_batches_like_the_split():
    """petals-mini's classes are imbalanced (41 to 628 images): the class histogram of every window of 4
    batches of 64 stays near the split's (total variation), as it does for a full random permutation;
    reading the shards one after another in file order would not be shuffled at all."""
    labels = _labels()
    classes = np.unique(labels)
    split = np.array([(labels == c).mean() for c in classes])

    def worst(order):
        windows = [labels[order[a:a + 256]] for a in range(0, len(order) - 255, 256)]
        return max(0.5 * np.abs(np.array([(w == c).mean() for c in classes]) - split).sum() for w in windows)

    ours = [worst(orders.epoch_order(COUNTS, seed, 0, 1, 0).emitted) for seed in range(5)]
    random = [worst(np.random.default_rng(seed).permutation(len(labels))) for seed in range(5)]
    assert max(ours) < 0.15 and max(ours) < 1.5 * max(random), (ours, random)
    # and the order is not the file order: consecutive records of one file rarely stay neighbours
    e = orders.epoch_order(COUNTS, 0, 0, 1, 0).emitted
    assert np.mean(np.diff(e) == 1) < 0.05


def test_a_shuffled_epoch_over_a_bucket_reads_every_byte_once(bucket):
    url = bucket.url + "/tfrecords-jpeg-192x192/train"
    paths = discover(url).split("train")
    ds = StreamedImages(paths, image_size=192, labeled=True)
    loader = create_loader(WithIndex(ds), 64, shuffle=True, seed=5, threads=2, num_workers=0, pad=True)
    before = bucket.stats()
    seen, labels = _epoch(loader, 0)
    got = bucket.stats()["bytes"] - before["bytes"]
    split = sum(os.path.getsize(p) for p in TRAIN)
    assert got == split   # every byte once, none twice
    assert seen == orders.epoch_order(COUNTS, 5, 0, 1, 0, pad=True).emitted.tolist()
    assert labels == _labels()[seen].tolist()   # the records are the right ones
    again, _ = _epoch(loader, 1)
    assert sorted(again) == sorted(seen) and again != seen


def test_resume_inside_an_epoch_reads_from_the_right_record(bucket, tmp_path, monkeypatch):
    """Stopped after 20 batches (of 45), a new process's loader (another thread count) yields exactly the
    rest of the epoch's order; with the offsets the first streams wrote, it reads only the bytes from each
    shard's first record still to come; with none (another machine), at most each shard whole."""
    url = bucket.url + "/tfrecords-jpeg-192x192/train"
    paths = discover(url).split("train")
    full = orders.epoch_order(COUNTS, 9, 2, 1, 0, pad=True).emitted.tolist()
    first = create_loader(WithIndex(StreamedImages(paths, image_size=192, labeled=True)), 64, shuffle=True,
                          seed=9, threads=2, num_workers=0, pad=True)
    first.sampler.set_epoch(2)
    for k, _ in zip(range(20), first):
        pass
    first.dataset.dataset.end()
    local = [load_index(p) for p in TRAIN]   # where each record lies, to count the bytes a resume needs
    rest = full[20 * 64:]
    starts = np.cumsum([0] + COUNTS[:-1])
    need = 0
    for s, idx in enumerate(local):
        mine = [i - starts[s] for i in rest if starts[s] <= i < starts[s] + COUNTS[s]]
        if mine:
            need += idx.size - int(idx.offsets[min(mine)])   # from the first needed record to the file's end
    for fresh_cache in (False, True):
        if fresh_cache:
            monkeypatch.setenv("PETALNET_CACHE", str(tmp_path / "elsewhere"))
        second = create_loader(WithIndex(StreamedImages(paths, image_size=192, labeled=True)), 64, shuffle=True,
                               seed=9, threads=1, num_workers=0, pad=True)
        before = bucket.stats()["bytes"]
        seen, labels = _epoch(second, 2, start=20 * 64)
        got = bucket.stats()["bytes"] - before
        assert seen == rest and labels == _labels()[rest].tolist()
        if not fresh_cache:
            assert got == need < 0.75 * sum(idx.size for idx in local)
        else:
            assert need < got <= sum(idx.size for idx in local)


def test_a_corrupt_byte_in_a_remote_shard_is_one_line_naming_the_url_and_offset(tmp_path):
    folder = tmp_path / "tfrecords-jpeg-192x192" / "train"
    folder.mkdir(parents=True)
    name = os.path.basename(TRAIN[5])
    shutil.copy(TRAIN[5], folder / name)
    index = load_index(str(folder / name), use_cache=False)
    bad = int(index.offsets[100])
    data = bytearray((folder / name).read_bytes())
    data[bad + 12 + 50] ^= 0xFF   # inside record 100's payload
    (folder / name).write_bytes(bytes(data))
    b = Bucket(tmp_path)
    try:
        url = f"{b.url}/tfrecords-jpeg-192x192/train/{name}"
        loader = create_loader(WithIndex(StreamedImages([url], image_size=192, labeled=True)), 32, shuffle=True,
                               threads=2, num_workers=0)
        with pytest.raises(DataError) as e:
            _epoch(loader, 0)
        assert str(e.value) == f"{url} at byte offset {bad}: corrupt record: payload checksum mismatch"
        assert "\n" not in str(e.value)
    finally:
        b.close()


def test_inspect_verify_over_a_bucket_reads_the_split_once(bucket, capsys):
    from petalnet.cli import main
    before = bucket.stats()["bytes"]
    assert main(["inspect", bucket.url + "/tfrecords-jpeg-192x192/val", "--verify"]) == 0
    assert "verified 773 records: all checksums and images good" in capsys.readouterr().out
    split = sum(os.path.getsize(p) for p in glob.glob(os.path.join(PETALS_192, "val", "*.tfrec")))
    assert bucket.stats()["bytes"] - before <= 1.1 * split


class GatedBucket:
    """The folder over HTTP with byte ranges (aiohttp, in a thread of the test), holding the first range
    request for a training shard until ``release``: the run is then stopped at a known point, no clock."""

    def __init__(self, root, gate: bool):
        import asyncio
        import threading

        from aiohttp import web
        self.held, self.loop, self.port = threading.Event(), asyncio.new_event_loop(), free_port()
        self.url, self.gate = f"http://127.0.0.1:{self.port}", gate
        go = asyncio.Event()

        @web.middleware
        async def hold(request, handler):
            if self.gate and "/train/" in request.path and request.headers.get("Range") and not self.held.is_set():
                self.held.set()
                await go.wait()
            return await handler(request)

        app = web.Application(middlewares=[hold])
        app.router.add_static("/", str(root), show_index=True)
        self.release = lambda: self.loop.call_soon_threadsafe(go.set)
        runner = web.AppRunner(app)
        ready = threading.Event()

        async def serve():
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            ready.set()
        threading.Thread(target=lambda: (self.loop.run_until_complete(serve()), self.loop.run_forever()),
                         daemon=True).start()
        assert ready.wait(30)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)


def _layout(root):
    """180 training images in 3 shards of 60 (so 2 ranks split one mid-file), 40 for validation."""
    from petalnet.data.synthetic import _records
    from petalnet.data.writer import write_split
    base = root / "tfrecords-jpeg-64x64"
    write_split(str(base / "train"), 64, _records("train", 64, 0)[:180], shard_size=60)
    write_split(str(base / "val"), 64, _records("val", 64, 0)[:40], shard_size=40)
    return root


RUN = ["--recipe", "linear", "--no-cache-frozen", "--epochs", "2", "--batch-size", "4", "--devices", "2",
       "--accelerator", "cpu", "--precision", "32", "--deterministic", "--quiet", "--workers", "1", "--seed", "1"]


def _train(*args):
    return subprocess.Popen([sys.executable, "-m", "petalnet", "train", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _history(run):
    keys = ("epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1")
    with open(os.path.join(run, "history.jsonl")) as fh:
        return [{k: row[k] for k in keys} for row in map(json.loads, fh)]


def test_a_streaming_run_on_two_ranks_stopped_inside_an_epoch_resumes_to_the_same_history(tmp_path):
    """SIGTERM reaches rank 0 while the first shard read is held; the ranks stop together at step 10 of
    epoch 1's 23 (they agree every 10 steps), save the position, and the resumed run's history equals an
    uninterrupted run's."""
    import signal

    import torch
    root = _layout(tmp_path / "data")
    ref_bucket = GatedBucket(root, gate=False)
    try:
        p = _train("--data", ref_bucket.url + "/tfrecords-jpeg-64x64", "--out", tmp_path / "ref", *RUN)
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    finally:
        ref_bucket.close()
    bucket = GatedBucket(root, gate=True)
    try:
        data, run = bucket.url + "/tfrecords-jpeg-64x64", tmp_path / "run"
        p = _train("--data", data, "--out", run, *RUN)
        assert bucket.held.wait(300), p.communicate(timeout=60)[1][-3000:]
        p.send_signal(signal.SIGTERM)
        bucket.release()
        _, err = p.communicate(timeout=600)
        assert p.returncode == 130 and "Traceback" not in err, err[-3000:]
        last = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
        assert (last["epoch"], last["step"]) == (0, 10)   # inside epoch 1
        p = _train("--resume", run, "--quiet")
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    finally:
        bucket.close()
    got, want = _history(run), _history(tmp_path / "ref")
    assert len(got) == len(want) == 2
    for g, w in zip(got, want):
        for k in w:
            assert g[k] == pytest.approx(w[k], rel=1e-9, abs=1e-12), (g["epoch"], k)
