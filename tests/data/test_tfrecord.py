import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from petalnet.data import example, tfrecord
from petalnet.errors import ExampleError, PetalnetError, RecordError
from tests.conftest import PETALS_192


def test_framing_matches_tensorflow_writer(petals):
    """petals-mini was written by TensorFlow: re-framing each payload must give its exact bytes."""
    path = os.path.join(PETALS_192, "train", "05-192x192-278.tfrec")
    raw = open(path, "rb").read()
    index = tfrecord.scan(path, verify=True)
    reader = tfrecord.RecordReader(index)
    rebuilt = b"".join(tfrecord.frame(reader.read(i)) for i in range(len(index)))
    assert rebuilt == raw


def test_iter_records_equals_indexed_reads(val_copy):
    reader = tfrecord.RecordReader(tfrecord.scan(val_copy))
    assert list(tfrecord.iter_records(val_copy)) == list(reader)


def _flip(path, offset):
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0x40]))


def test_flipped_payload_byte_names_file_and_offset(val_copy):
    index = tfrecord.scan(val_copy)
    rec = 7
    _flip(val_copy, int(index.offsets[rec]) + 12 + 100)
    with pytest.raises(RecordError) as e:
        tfrecord.scan(val_copy, verify=True)
    assert val_copy in str(e.value) and f"byte offset {index.offsets[rec]}" in str(e.value)
    assert "payload checksum" in str(e.value)
    # the header-only index still builds, but reading that record fails
    reader = tfrecord.RecordReader(tfrecord.scan(val_copy))
    reader.read(rec - 1)
    with pytest.raises(RecordError, match="payload checksum"):
        reader.read(rec)


def test_flipped_header_byte(val_copy):
    index = tfrecord.scan(val_copy)
    _flip(val_copy, int(index.offsets[3]) + 2)
    with pytest.raises(RecordError, match=f"byte offset {index.offsets[3]}: corrupt record header"):
        tfrecord.scan(val_copy)


def test_truncated_file(val_copy):
    size = os.path.getsize(val_copy)
    index = tfrecord.scan(val_copy)
    os.truncate(val_copy, size - 500)
    with pytest.raises(RecordError, match=f"byte offset {index.offsets[-1]}: truncated record"):
        tfrecord.scan(val_copy)
    os.truncate(val_copy, int(index.offsets[-1]) + 5)
    with pytest.raises(RecordError, match="truncated record header"):
        tfrecord.scan(val_copy)


def test_empty_and_foreign_files(tmp_path):
    empty = tmp_path / "empty.tfrec"
    empty.write_bytes(b"")
    with pytest.raises(RecordError, match=r"empty.tfrec: empty file \(0 bytes\)"):
        tfrecord.scan(str(empty))
    text = tmp_path / "notes.tfrec"
    text.write_text("this is a text file, not records\n" * 10)
    with pytest.raises(RecordError, match="notes.tfrec at byte offset 0: not a TFRecord file"):
        tfrecord.scan(str(text))


def test_skip_bad_records(val_copy):
    index = tfrecord.scan(val_copy)
    n = len(index)
    _flip(val_copy, int(index.offsets[10]) + 12 + 50)       # payload of record 10
    _flip(val_copy, int(index.offsets[20]) + 1)             # length of record 20: must resync
    os.truncate(val_copy, os.path.getsize(val_copy) - 10)   # last record truncated
    with pytest.warns(UserWarning, match=r"skipped 3 bad span\(s\), kept 258 records"):
        skipped = tfrecord.load_index(val_copy, skip_bad=True)
    assert len(skipped) == n - 3
    kept = set(skipped.offsets.tolist())
    assert {int(index.offsets[i]) for i in (10, 20, n - 1)}.isdisjoint(kept)
    assert {int(o) for i, o in enumerate(index.offsets) if i not in (10, 20, n - 1)} == kept
    reader = tfrecord.RecordReader(skipped)
    assert all(len(p) > 0 for p in reader)


def test_index_cache_reused_and_invalidated(val_copy, monkeypatch):
    first = tfrecord.load_index(val_copy)
    calls = []
    real_scan = tfrecord.scan
    monkeypatch.setattr(tfrecord, "scan", lambda *a, **k: calls.append(a) or real_scan(*a, **k))
    again = tfrecord.load_index(val_copy)
    assert calls == [] and again.offsets.tolist() == first.offsets.tolist()
    # append one record: size and mtime change, so the index is rebuilt with the new record
    with open(val_copy, "ab") as fh:
        fh.write(tfrecord.frame(example.encode({"image": b"x", "class": 1, "id": "abc"})))
    grown = tfrecord.load_index(val_copy)
    assert len(calls) == 1 and len(grown) == len(first) + 1


def test_writer_is_atomic(tmp_path):
    path = tmp_path / "out.tfrec"
    with pytest.raises(RuntimeError):
        with tfrecord.TFRecordWriter(str(path)) as w:
            w.write(b"payload")
            raise RuntimeError("boom")
    assert not path.exists() and os.listdir(tmp_path) == []
    with tfrecord.TFRecordWriter(str(path)) as w:
        w.write(b"one")
        w.write(b"")
    assert list(tfrecord.iter_records(str(path))) == [b"one", b""]


def test_example_round_trip_and_errors():
    payload = example.encode({"image": b"\xff\xd8jpeg", "class": 48, "id": "0a1b2c3d4", "w": [0.5, 1.5]})
    got = example.parse(payload, {"image": "bytes", "class": "int64", "id": "bytes", "w": "float[]"})
    assert got == {"image": b"\xff\xd8jpeg", "class": 48, "id": b"0a1b2c3d4", "w": [0.5, 1.5]}
    with pytest.raises(ExampleError, match="feature 'label' is missing"):
        example.parse(payload, {"label": "int64"})
    with pytest.raises(ExampleError, match="feature 'id' is bytes_list, expected int64_list"):
        example.parse(payload, {"id": "int64"})
    with pytest.raises(ExampleError, match="feature 'w' has 2 values, expected 1"):
        example.parse(payload, {"w": "float"})
    with pytest.raises(ExampleError, match="not a tf.train.Example"):
        example.parse(b"\xff\xff\xff", {"image": "bytes"})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_random_bytes_only_raise_petalnet_errors(tmp_path, data):
    try:
        example.parse(data, {"image": "bytes", "class": "int64", "id": "bytes"})
    except ExampleError:
        pass
    path = tmp_path / "fuzz.tfrec"
    path.write_bytes(data)
    for skip in (False, True):
        try:
            index = tfrecord.scan(str(path), skip_bad=skip)
            list(tfrecord.RecordReader(index))
        except PetalnetError:
            pass


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(st.binary(max_size=64), max_size=5), cut=st.integers(0, 400), flip=st.integers(0, 400))
def test_damaged_valid_files_only_raise_petalnet_errors(tmp_path, records, cut, flip):
    raw = bytearray(b"".join(map(tfrecord.frame, records)))
    if raw:
        raw[flip % len(raw)] ^= 0x01
    path = tmp_path / "damaged.tfrec"
    path.write_bytes(bytes(raw[: len(raw) - cut % (len(raw) + 1)]))
    try:
        for payload in tfrecord.RecordReader(tfrecord.scan(str(path), skip_bad=True)):
            try:
                example.keys(payload)
            except ExampleError:
                pass
    except PetalnetError:
        pass


def test_unwritable_cache_does_not_stop_reading(val_copy, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("PETALNET_CACHE", str(blocker))
    assert len(tfrecord.load_index(val_copy)) == 261
