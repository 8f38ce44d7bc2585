import os
import re

import numpy as np
import pytest
import torch

from petalnet.data import example, tfrecord
from petalnet.data.dataset import TFRecordImages, open_split
from petalnet.data.discovery import discover
from petalnet.data.loader import ShardSampler, create_loader
from petalnet.errors import DataError
from tests.conftest import PETALS_192

TRAIN_COUNTS = {5: 52, 11: 52, 22: 50, 47: 44, 48: 467, 49: 628, 51: 41, 53: 445, 67: 46, 68: 45, 73: 433, 102: 535}
VAL_COUNTS = {5: 6, 11: 10, 22: 8, 47: 9, 48: 130, 49: 162, 51: 17, 53: 118, 67: 11, 68: 14, 73: 133, 102: 155}


def test_every_petals_mini_record_reads_and_decodes(petals):
    seen_ids = set()
    for split, counts in (("train", TRAIN_COUNTS), ("val", VAL_COUNTS), ("test", None)):
        ds = open_split(petals, split)
        assert ds.labeled is (counts is not None)
        loader = create_loader(ds, 128, num_workers=2)
        labels, n = [], 0
        for images, targets in loader:
            assert images.dtype == torch.uint8 and images.shape[1:] == (3, 192, 192)
            assert images.float().std() > 10   # real pictures, not blank
            n += len(images)
            if counts:
                labels += targets.tolist()
            else:
                assert all(re.fullmatch(r"[0-9a-f]{9}", t) for t in targets)
                seen_ids.update(targets)
        assert n == sum(counts.values()) if counts else n == 503
        if counts:
            assert dict(zip(*np.unique(labels, return_counts=True))) == counts
    assert len(seen_ids) == 503


def _write(path, records):
    with tfrecord.TFRecordWriter(str(path)) as w:
        for r in records:
            w.write(example.encode(r))
    return str(path)


def _jpeg(petals, i=0):
    return open_split(petals, "val").read(i)["image"]


def test_corrupt_jpeg_names_file_record_and_id(tmp_path, petals):
    good = _jpeg(petals)
    path = _write(tmp_path / "bad.tfrec", [{"image": good, "class": 48, "id": "aaaaaaaaa"},
                                           {"image": good[: len(good) // 3], "class": 48, "id": "bbbbbbbbb"}])
    ds = TFRecordImages([path])
    assert ds[0][1] == 48
    with pytest.raises(DataError, match=r"bad.tfrec at byte offset \d+: record 1, id bbbbbbbbb: corrupt image"):
        ds[1]


def test_missing_or_wrong_features(tmp_path, petals):
    path = _write(tmp_path / "x.tfrec", [{"image": _jpeg(petals), "label": 3, "id": "ccccccccc"}])
    with pytest.raises(DataError, match=r"x.tfrec at byte offset 0: record 0: feature 'class' is missing"):
        TFRecordImages([path], labeled=True)[0]
    ds = TFRecordImages([path], label_key="label")
    assert ds.labeled and ds[0][1] == 3
    path = _write(tmp_path / "y.tfrec", [{"image": _jpeg(petals), "class": "48", "id": "d"}])
    with pytest.raises(DataError, match="feature 'class' is bytes_list, expected int64_list"):
        TFRecordImages([path], labeled=True)[0]


def test_image_size_checked_against_images(tmp_path, petals):
    path = _write(tmp_path / "00-224x224-1.tfrec", [{"image": _jpeg(petals), "class": 48, "id": "e"}])
    src = discover(str(tmp_path))
    assert src.image_size == 224
    with pytest.raises(DataError, match="image is 192x192, expected 224x224"):
        TFRecordImages(src.split(src.root.rsplit("/", 1)[-1]), image_size=src.image_size)[0]
    del path


def test_record_count_in_file_name_checked(tmp_path, petals):
    path = _write(tmp_path / "00-192x192-3.tfrec", [{"image": _jpeg(petals), "class": 48, "id": "f"}] * 2)
    with pytest.raises(DataError, match="00-192x192-3.tfrec: file name says 3 records, the file holds 2"):
        TFRecordImages([path])


class _WhoReads(TFRecordImages):
    """Tags each record id with the DataLoader worker that read it."""

    def __getitem__(self, i):
        info = torch.utils.data.get_worker_info()
        return self.read(i, self.meta_spec)[self.id_key].decode(), (info.id if info else -1)


def _collate_ids(batch):
    return batch


def test_two_ranks_two_workers_disjoint_and_covering(petals):
    ds = open_split(petals, "val")   # 773 records: does not divide by 2
    _, all_ids = ds.metadata()
    tagged = _WhoReads(ds.paths, labeled=False)
    by_reader = {}
    for rank in range(2):
        loader = create_loader(tagged, 64, rank=rank, world_size=2, num_workers=2, shuffle=True, seed=3)
        loader.collate_fn = _collate_ids
        loader.sampler.set_epoch(1)
        for batch in loader:
            for rid, worker in batch:
                by_reader.setdefault((rank, worker), []).append(rid)
    assert sorted(by_reader) == [(0, 0), (0, 1), (1, 0), (1, 1)]   # every rank x worker did some reading
    seen = [rid for ids in by_reader.values() for rid in ids]
    assert len(seen) == len(set(seen)) == 773 and sorted(seen) == sorted(all_ids)
    assert sum(len(by_reader[0, w]) for w in (0, 1)) == 387


def test_shard_sampler_shuffle_pad_and_resume():
    s = ShardSampler(10, rank=1, world_size=3, shuffle=True, seed=0, pad=True)
    s.set_epoch(0)
    epoch0 = list(s)
    assert len(epoch0) == len(s) == 4
    s.set_epoch(1)
    assert list(s) != epoch0
    s.set_epoch(0, start=2)
    assert list(s) == epoch0[2:] and len(s) == 2
    full = [i for r in range(3) for i in ShardSampler(10, rank=r, world_size=3, pad=True)]
    assert len(full) == 12 and set(full) == set(range(10))
    dropped = [i for r in range(3) for i in ShardSampler(10, rank=r, world_size=3, drop_last=True)]
    assert len(dropped) == len(set(dropped)) == 9


def test_loader_is_deterministic_per_seed(petals):
    from torchvision.transforms import v2
    ds = open_split(petals, "val", transform=v2.RandomHorizontalFlip())

    def first_batch(seed):
        loader = create_loader(ds, 16, shuffle=True, seed=seed, num_workers=2)
        return next(iter(loader))
    a, b, c = first_batch(1), first_batch(1), first_batch(2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_fsspec_urls_memory_and_file(petals):
    fsspec = pytest.importorskip("fsspec")
    mem = fsspec.filesystem("memory")
    for name in os.listdir(os.path.join(PETALS_192, "val")):
        with open(os.path.join(PETALS_192, "val", name), "rb") as src:
            mem.pipe(f"/bucket/tfrecords-jpeg-192x192/val/{name}", src.read())
    remote = open_split("memory://bucket", "val")
    local = open_split(petals, "val")
    assert remote.image_size == 192 and len(remote) == len(local) == 773
    for i in (0, 400, 772):
        assert torch.equal(remote[i][0], local[i][0]) and remote[i][1] == local[i][1]
    glob_ds = open_split("memory://bucket/tfrecords-jpeg-192x192/val/*.tfrec")
    assert len(glob_ds) == 773
    by_file_url = open_split("file://" + os.path.join(PETALS_192, "val"))
    assert len(by_file_url) == 773 and torch.equal(by_file_url[5][0], local[5][0])
    mem.rm("/bucket", recursive=True)


def test_encoded_batches_decode_on_device_to_the_same_pixels(val_copy):
    """decode=False hands out JPEG bytes (for nvJPEG); DevicePreprocess decodes them to what the
    CPU path gives, and a bad JPEG in the batch is a one-line error."""
    from petalnet.accel import DevicePreprocess
    raw = TFRecordImages([val_copy], decode=False)
    decoded = TFRecordImages([val_copy])
    enc, labels = next(iter(create_loader(raw, 8, num_workers=0)))
    dec, labels2 = next(iter(create_loader(decoded, 8, num_workers=0)))
    assert isinstance(enc, list) and enc[0].dim() == 1 and enc[0][:2].tolist() == [0xFF, 0xD8]
    assert torch.equal(labels, labels2)
    prep = DevicePreprocess(torch.device("cpu"), (0.5,) * 3, (0.25,) * 3, 192)
    assert torch.equal(prep(enc), prep(dec))
    enc[3] = enc[3][:200]
    with pytest.raises(Exception, match="cannot be decoded"):
        prep(enc)


def test_threaded_loader_same_batches_as_dataloader(petals):
    """ThreadedLoader: the DataLoader's batches, in the same order, with batch transforms in its threads."""
    ds = open_split(petals, "val")
    ref = create_loader(ds, 64, shuffle=True, seed=5, num_workers=0)
    thr = create_loader(ds, 64, shuffle=True, seed=5, num_workers=0, threads=2)
    for loader in (ref, thr):
        loader.sampler.set_epoch(2)
    pairs = list(zip(ref, thr))
    assert len(pairs) == len(ref) == len(thr) == 13
    for (a, la), (b, lb) in pairs:
        assert torch.equal(a, b) and torch.equal(la, lb)
    flipped = create_loader(ds, 64, num_workers=0, threads=2,
                            batch_transform=lambda b: (b[0].flip(-1), b[1]))
    first = next(iter(flipped))[0]
    assert torch.equal(first, next(iter(create_loader(ds, 64, num_workers=0)))[0].flip(-1))
    broken = create_loader(ds, 64, num_workers=0, threads=2, batch_transform=lambda b: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        next(iter(broken))


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling classes")
def test_background_loader_threads_run_at_idle_priority_and_give_the_same_batches(petals):
    ds = open_split(petals, "val")
    seen = {}

    def policy(name):
        def record(batch):   # runs in the loader's thread
            seen.setdefault(name, set()).add(os.sched_getscheduler(0))
            return batch
        return record
    batches = {name: list(create_loader(ds, 64, shuffle=True, seed=3, num_workers=0, threads=2, background=bg,
                                        batch_transform=policy(name)))
               for name, bg in (("normal", False), ("background", True))}
    assert seen == {"normal": {os.SCHED_OTHER}, "background": {os.SCHED_IDLE}}
    assert os.sched_getscheduler(0) == os.SCHED_OTHER   # the caller's thread is left as it was
    for (a, la), (b, lb) in zip(batches["normal"], batches["background"]):
        assert torch.equal(a, b) and torch.equal(la, lb)


def test_load_batch_decodes_in_place_flips_and_names_bad_records(tmp_path, val_copy):
    """The threaded fast path (simplejpeg into the batch) gives torchvision's pixels, mirrors exactly
    the images asked, and reports a corrupt or wrong-sized JPEG like the per-image path."""
    ds = TFRecordImages([val_copy])
    idx = [0, 7, 100, 260]
    images, labels = ds.load_batch(idx, flips=[False, True, False, True])
    ref = torch.stack([ds[i][0] for i in idx])
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(images[[0, 2]], ref[[0, 2]]) and torch.equal(images[[1, 3]], ref[[1, 3]].flip(-1))
    assert labels.tolist() == [ds[i][1] for i in idx]
    wrong = TFRecordImages([val_copy], image_size=128)
    with pytest.raises(DataError, match=r"record 7, id .*: image is 192x192, expected 128x128"):
        wrong.load_batch([7])
    good = _jpeg(val_copy)
    path = _write(tmp_path / "bad.tfrec", [{"image": good, "class": 48, "id": "aaaaaaaaa"},
                                           {"image": good[: len(good) // 3], "class": 48, "id": "bbbbbbbbb"}])
    with pytest.raises(DataError, match=r"bad.tfrec at byte offset \d+: record 1, id bbbbbbbbb: corrupt image"):
        TFRecordImages([path]).load_batch([0, 1])
