"""Issue 14, data side: headers before pixels, 16-bit images, chunked uploads, worker errors, empty data,
negative labels and what --skip-bad skips. Each test reproduces a defect of the code before the fix."""
import asyncio
import io
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from petalnet.cli import main
from petalnet.data import example, tfrecord
from petalnet.data.dataset import TFRecordImages, open_split
from petalnet.data.loader import create_loader
from petalnet.data.synthetic import synthetic_data
from petalnet.errors import DataError, PetalnetError
from petalnet.predict import Predictor, load_photo, load_predictor, predict_dataset
from petalnet.engine import TrainConfig, train
from tests.conftest import ROOT


def _write(path, records):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with tfrecord.TFRecordWriter(str(path)) as w:
        for r in records:
            w.write(r if isinstance(r, bytes) else example.encode(r))
    return str(path)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return synthetic_data(64, seed=0, root=str(tmp_path_factory.mktemp("syn")))


@pytest.fixture(scope="module")
def small(synthetic):
    """(JPEG bytes, label) of 8 synthetic 64 px val records."""
    ds = open_split(synthetic, "val")
    return [(ds.read(i)["image"], int(ds.read(i)["class"])) for i in range(8)]


@pytest.fixture(scope="module")
def run(synthetic, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs") / "lite0")
    train(TrainConfig(data=synthetic, out=out, epochs=1, precision="32", workers=0, quiet=True))
    return out


def _records(small, bad: dict[int, dict | bytes]):
    """The 8 small records as Example dicts, record k replaced (or updated) by ``bad[k]``."""
    out = []
    for k, (jpeg, label) in enumerate(small):
        rec = {"image": jpeg, "class": label, "id": f"{k:09x}"}
        b = bad.get(k)
        out.append(b if isinstance(b, bytes) else {**rec, **(b or {})})
    return out


def _bomb(jpeg: bytes, w: int = 60000, h: int = 60000) -> bytes:
    """``jpeg`` with its SOF0 header claiming w x h pixels (the scan data stays that of the small image)."""
    k = jpeg.index(b"\xff\xc0")
    return jpeg[:k + 5] + h.to_bytes(2, "big") + w.to_bytes(2, "big") + jpeg[k + 9:]


# ---------------------------------------------------------------- item 3: headers before pixels

BOMB_SCRIPT = r"""
import os, resource, sys, warnings
from PIL import Image
import petalnet.data.convert as convert_mod
from petalnet.data.convert import resize_records
from petalnet.data.dataset import TFRecordImages
from petalnet.data.loader import create_loader
from petalnet.data.summary import verify
from petalnet.errors import PetalnetError
from petalnet.predict import load_photo
path, bomb_jpeg, photo_dir, out = sys.argv[1:5]
vm = int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmSize"))) * 1024
# room for the checks, not for the 10.8 GB that decoding a 60000x60000 header asks for
resource.setrlimit(resource.RLIMIT_AS, (vm + (1500 << 20), resource.RLIM_INFINITY))
checks = {
    "load": lambda ds: ds.load(1),
    "getitem": lambda ds: ds[1],
    "load_batch": lambda ds: ds.load_batch([0, 1]),
    "encoded": lambda ds: TFRecordImages([path], image_size=ds.image_size, decode=False)[1],
    "workers": lambda ds: list(create_loader(ds, 2, num_workers=1)),
    "threads": lambda ds: list(create_loader(ds, 2, num_workers=0, threads=1)),
    "verify": lambda ds: verify({"val": ds}, skip_bad=False),
}
for size in (64, None):   # a size to expect, and none (then the pixel limit)
    for name, check in checks.items():
        ds = TFRecordImages([path], image_size=size)
        try:
            check(ds)
        except PetalnetError as e:
            msg = str(e)
            assert "\n" not in msg and "record 1" in msg and "60000x60000" in msg, (name, size, msg)
        else:
            raise AssertionError(f"{name} (size {size}) accepted the bomb")
try:
    resize_records(os.path.dirname(os.path.dirname(path)), out, 32)
except PetalnetError as e:
    assert "record 1" in str(e) and "60000x60000" in str(e), str(e)
else:
    raise AssertionError("convert accepted the bomb")
for source in (open(bomb_jpeg, "rb").read(), bomb_jpeg):
    try:
        load_photo(source, 64, "bomb.jpg")
    except PetalnetError as e:
        assert "60000x60000" in str(e) or "too large to decode" in str(e), str(e)
    else:
        raise AssertionError("load_photo accepted the bomb")
try:   # between 50 and 179 megapixels: Pillow itself only warns, and decoded it
    convert_mod._load(photo_dir, "daisy/bomb.jpg", 32, 90)
except PetalnetError as e:
    assert "10000x10000" in str(e) and "over the limit" in str(e), str(e)
else:
    raise AssertionError("convert of a photo accepted the bomb")
print("refused everywhere")
"""


def test_image_bomb_in_a_record_refused_from_its_header_everywhere(small, tmp_path):
    jpeg = small[0][0]
    path = _write(tmp_path / "data" / "val" / "00-64x64-2.tfrec",
                  [{"image": jpeg, "class": 48, "id": "aaaaaaaaa"}, {"image": _bomb(jpeg), "class": 48, "id": "bbbbbbbbb"}])
    (tmp_path / "bomb.jpg").write_bytes(_bomb(jpeg))
    (tmp_path / "photos" / "daisy").mkdir(parents=True)
    (tmp_path / "photos" / "daisy" / "bomb.jpg").write_bytes(_bomb(jpeg, 10000, 10000))
    env = {**os.environ, "PYTHONPATH": ROOT}
    r = subprocess.run([sys.executable, "-c", BOMB_SCRIPT, path, str(tmp_path / "bomb.jpg"),
                        str(tmp_path / "photos"), str(tmp_path / "out")],
                       capture_output=True, text=True, env=env, timeout=240)
    assert r.returncode == 0 and "refused everywhere" in r.stdout, r.stderr[-3000:]


# ---------------------------------------------------------------- item 6: 16-bit greys

def _grey16_png(value=32768, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full(size[::-1], value, np.uint16)).save(buf, format="PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).mode.startswith("I")   # what Pillow reads back
    return buf.getvalue()


def test_16bit_grey_png_is_mid_grey_in_photo_convert_and_record_paths(tmp_path):
    png = _grey16_png()
    (tmp_path / "grey.png").write_bytes(png)
    for source in (str(tmp_path / "grey.png"), png):   # predict PHOTO reads the path, serve the bytes
        img = load_photo(source, 32, "grey.png")
        assert img.dtype == torch.uint8 and abs(img.float().mean().item() - 128) <= 1, img.float().mean()
    tree = tmp_path / "photos"
    for cls in ("daisy", "rose"):
        (tree / cls).mkdir(parents=True)
        for k in range(2):
            (tree / cls / f"{k}.png").write_bytes(png)
    assert main(["convert", str(tree), str(tmp_path / "out"), "--size", "16", "--val-fraction", "0.5"]) == 0
    ds = open_split(str(tmp_path / "out"), "train")
    img, _ = ds.load(0)
    assert abs(img.float().mean().item() - 128) <= 2, img.float().mean()
    rec = _write(tmp_path / "png" / "00-40x40-1.tfrec", [{"image": _grey16_png(size=(40, 40)), "class": 48,
                                                           "id": "aaaaaaaaa"}])
    img, _ = TFRecordImages([rec]).load(0)   # torchvision decodes it as uint16
    assert img.dtype == torch.uint8 and abs(img.float().mean().item() - 128) <= 1, img.float().mean()


# ---------------------------------------------------------------- item 7: chunked uploads

def test_chunked_upload_without_content_length_stops_at_the_limit():
    from petalnet.serve.app import create_app
    predictor = Predictor("m", torch.nn.Identity(), 104, 32, (0.0,) * 3, (1.0,) * 3)
    limit, chunk, total = 1 << 20, 64 * 1024, 8 << 20
    app = create_app(predictor, max_bytes=limit)
    boundary = b"xyz"
    head = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n\xff\xd8")
    sent, out = {"bytes": 0}, []
    chunks = [head] + [b"\0" * chunk] * (total // chunk)

    async def receive():
        if not chunks:
            return {"type": "http.request", "body": b"--" + boundary + b"--\r\n", "more_body": False}
        body = chunks.pop(0)
        sent["bytes"] += len(body)
        return {"type": "http.request", "body": body, "more_body": True}

    async def send(message):
        out.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/api/predict", "raw_path": b"/api/predict", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"multipart/form-data; boundary=" + boundary),
                         (b"transfer-encoding", b"chunked")], "client": ("127.0.0.1", 1), "server": ("t", 80)}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in out if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in out if m["type"] == "http.response.body")
    assert start["status"] == 413 and b"over the limit" in body, body
    assert sent["bytes"] <= limit + 64 * 1024 + chunk, sent   # read no further than the limit and one chunk


# ---------------------------------------------------------------- item 8: worker errors

def test_worker_process_errors_surface_as_the_one_line_error(small, tmp_path):
    path = _write(tmp_path / "val" / "00-64x64-8.tfrec", _records(small, {3: {"image": small[3][0][:300]}}))
    ds = TFRecordImages([path], image_size=64)
    with pytest.raises(DataError) as info:
        list(create_loader(ds, 4, num_workers=1))
    msg = str(info.value)
    assert "record 3, id 000000003: corrupt image" in msg and "\n" not in msg and "Caught" not in msg


def test_train_with_workers_on_a_bad_record_is_one_line(small, tmp_path):
    data = tmp_path / "data" / "tfrecords-jpeg-64x64"
    _write(data / "train" / "00-64x64-8.tfrec", _records(small, {5: {"image": small[5][0][:300]}}))
    r = subprocess.run([sys.executable, "-m", "petalnet", "train", "--data", str(tmp_path / "data"), "--out",
                        str(tmp_path / "run"), "--epochs", "1", "--workers", "1", "--batch-size", "4",
                        "--precision", "32", "--quiet"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": ROOT}, timeout=240)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "record 5, id 000000005: corrupt image" in lines[-1] and lines[-1].startswith("petalnet: error:")


# ---------------------------------------------------------------- items 9, 10: empty data, negative labels

@pytest.mark.parametrize("content", [b"", np.random.default_rng(0).bytes(3000)], ids=["empty", "random"])
def test_predict_on_empty_or_random_file_with_skip_bad_is_one_line(run, tmp_path, capsys, content):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "00-64x64-0.tfrec").write_bytes(content)
    with pytest.raises(PetalnetError, match="no readable records in"):
        predict_dataset([load_predictor(run)], TFRecordImages([str(tmp_path / "d" / "00-64x64-0.tfrec")], labeled=False,
                                           skip_bad=True))
    code = main(["predict", run, "--data", str(tmp_path / "d"), "--skip-bad", "--output", str(tmp_path / "s.csv")])
    err = capsys.readouterr().err
    assert code == 1 and "no readable records in" in err and not (tmp_path / "s.csv").exists(), err


def test_evaluate_refuses_a_negative_class_naming_the_record(run, small, tmp_path, capsys):
    _write(tmp_path / "d" / "val" / "00-64x64-8.tfrec", _records(small, {6: {"class": -1}}))
    code = main(["evaluate", run, "--data", str(tmp_path / "d"), "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert "00-64x64-8.tfrec" in err and "record 6" in err and "class -1 outside" in err


# ---------------------------------------------------------------- item 13: what --skip-bad skips

BAD_KINDS = {
    "class as bytes": {"class": b"48"},
    "not an Example": b"\xff\xfe this is no protobuf",
    "class 500": {"class": 500},
    "corrupt image": {"image": b"\xff\xd8" + b"\x01" * 200},
    "truncated image": "truncate",
}


@pytest.mark.parametrize("kind", list(BAD_KINDS))
def test_skip_bad_skips_each_kind_of_bad_record_and_counts_it(small, tmp_path, kind):
    bad = BAD_KINDS[kind]
    if bad == "truncate":
        bad = {"image": small[2][0][: len(small[2][0]) // 2]}
    path = _write(tmp_path / "val" / "00-64x64-8.tfrec", _records(small, {2: bad}))
    with pytest.warns(UserWarning, match=r"skipped 1 bad record\(s\), kept 7: .*00-64x64-8.tfrec.*record 2"):
        ds = TFRecordImages([path], image_size=64, skip_bad=True)
    assert len(ds) == 7 and len(ds.problems) == 1
    images, labels = next(iter(create_loader(ds, 8, num_workers=0)))
    assert images.shape == (7, 3, 64, 64)
    assert labels.tolist() == [lab for k, (_, lab) in enumerate(small) if k != 2]
    assert ds.metadata()[1] == [f"{k:09x}" for k in range(8) if k != 2]
    # without --skip-bad: one line naming the file and the record
    ds = TFRecordImages([path], image_size=64)
    with pytest.raises(PetalnetError) as info:
        labels, _ = ds.metadata()
        ds.check_labels(labels)
        list(create_loader(ds, 8, num_workers=0))
    assert "00-64x64-8.tfrec" in str(info.value) and "record 2" in str(info.value)
    assert "\n" not in str(info.value)


def test_predict_skip_bad_skips_a_corrupt_image_and_says_so(run, small, tmp_path, capsys):
    _write(tmp_path / "d" / "test" / "00-64x64-8.tfrec", _records(small, {4: {"image": small[4][0][:200]}}))
    out = tmp_path / "s.csv"
    assert main(["predict", run, "--data", str(tmp_path / "d"), "--output", str(out)]) == 1
    assert "record 4" in capsys.readouterr().err and not out.exists()
    assert main(["predict", run, "--data", str(tmp_path / "d"), "--output", str(out), "--skip-bad"]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 bad record(s), kept 7" in err and "record 4" in err
    rows = out.read_text().splitlines()
    assert rows[0] == "id,label" and [r.split(",")[0] for r in rows[1:]] == [f"{k:09x}" for k in range(8) if k != 4]
