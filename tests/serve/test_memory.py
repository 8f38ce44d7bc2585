"""What one request may cost in memory (issue 30, item 5): the decode limit, JPEG's reduced-scale decode,
16-bit samples converted on the small image, and the cap on decodes at once."""
import concurrent.futures
import io
import threading
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

import petalnet.serve.app as app_module
from petalnet.data.images import to_rgb
from petalnet.data.photo import ImageTooLarge, load_photo
from petalnet.data.writer import square
from petalnet.predict import load_predictor, predict_batches
from tests.serve.conftest import png_bytes


@pytest.fixture(scope="module")
def predictor(served_run):
    return load_predictor(served_run)


def _post(client, data, name, ctype):
    return client.post("/api/predict", files={"file": (name, data, ctype)})


def _grey16(side: int) -> Image.Image:
    ramp = np.add.outer(np.arange(side), np.arange(side)) * 65535 // (2 * side)
    return Image.fromarray(ramp.astype(np.uint16))


def _big_jpeg(daisy_jpeg: bytes, side: int = 2400) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(daisy_jpeg)).convert("RGB").resize((side, side), Image.Resampling.BICUBIC) \
        .save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def test_decoded_size_over_the_limit_is_413_naming_it_before_any_pixel_is_decoded(predictor, daisy_jpeg):
    png = png_bytes(_grey16(1200))   # 1200x1200 16-bit: 2,880,000 bytes decoded, over 1 MiB
    with TestClient(app_module.create_app(predictor, max_decode_mb=1)) as client:
        for data in (png, png[:200]):   # cut after the header: refused from the header, not "truncated"
            r = _post(client, data, "grey16.png", "image/png")
            assert r.status_code == 413, r.text
            assert r.json() == {"error": "grey16.png: decoding this 1200x1200 I;16 image takes 2,880,000 bytes, "
                                         "over the limit of 1,048,576 bytes per image (--max-decode-mb 1)"}
        assert _post(client, daisy_jpeg, "daisy.jpg", "image/jpeg").status_code == 200   # 192 px: under it
        assert _post(client, png_bytes(_grey16(400)), "small.png", "image/png").status_code == 200


def test_a_large_jpeg_decoded_at_reduced_scale_gets_the_full_decodes_label(predictor, daisy_jpeg):
    big = _big_jpeg(daisy_jpeg)   # 2400x2400 RGB: 23 MB decoded at full size, 300x300 at 1/8 scale
    with pytest.raises(ImageTooLarge, match="over the limit"):   # the full decode is over 1 MiB ...
        load_photo(big, 2400, "big.jpg", max_decode_bytes=1 << 20)
    drafted = load_photo(big, predictor.image_size, "big.jpg", max_decode_bytes=1 << 20)   # ... a draft is not
    with Image.open(io.BytesIO(big)) as img:
        full = torch.from_numpy(np.asarray(square(to_rgb(img), predictor.image_size)).copy()).permute(2, 0, 1)
    assert (drafted.float() - full.float()).abs().mean() < 1.0   # of 255
    (probs, _), = predict_batches([predictor], [(torch.stack([drafted, full]), None)], precision="32")
    assert probs[0].argmax() == probs[1].argmax()
    with TestClient(app_module.create_app(predictor, max_decode_mb=1)) as client:
        r = _post(client, big, "big.jpg", "image/jpeg")
    assert r.status_code == 200, r.text
    assert r.json()["top"][0]["label"] == int(probs[1].argmax())


def test_16bit_grey_is_converted_on_the_small_image_as_on_the_full_one():
    img = _grey16(700)
    old = np.asarray(square(to_rgb(img), 64), np.int16)   # the full-size float conversion, then resize
    new = load_photo(png_bytes(img), 64, "grey16.png").permute(1, 2, 0).numpy().astype(np.int16)
    assert new.shape == old.shape and np.abs(new - old).max() <= 2 and (new[..., 0] == new[..., 2]).all()


def _wait_for(condition, what: str, timeout: float = 120):
    """Until ``condition()`` holds (the timeout only ends a broken run)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def test_decodes_at_once_are_capped_however_many_clients(predictor, daisy_jpeg, monkeypatch):
    real, release, two_inside = app_module.load_photo, threading.Event(), threading.Event()
    inside, most, lock = [0], [0], threading.Lock()

    def held_decode(*args):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            if inside[0] == 2:
                two_inside.set()
        assert release.wait(120), "never released"
        with lock:
            inside[0] -= 1
        return real(*args)

    monkeypatch.setattr(app_module, "load_photo", held_decode)
    with TestClient(app_module.create_app(predictor, decode_threads=2)) as client:
        gate = client.app.state.decodes
        with concurrent.futures.ThreadPoolExecutor(5) as pool:
            futures = [pool.submit(_post, client, daisy_jpeg, "daisy.jpg", "image/jpeg") for _ in range(5)]
            assert two_inside.wait(120)
            _wait_for(lambda: gate.waiting == 3, "3 requests waiting for a decode thread")
            health = client.get("/api/health").json()["decodes"]
            assert health == {"running": 2, "waiting": 3, "threads": 2} and most[0] == 2
            release.set()
            statuses = [f.result().status_code for f in futures]
    assert statuses == [200] * 5 and most[0] == 2 and gate.running == gate.waiting == 0
