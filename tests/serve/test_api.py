import concurrent.futures

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from petalnet.classes import CLASSES
from petalnet.predict import load_predictor
from petalnet.serve.app import create_app
from tests.serve.conftest import png_bytes


@pytest.fixture(scope="module")
def client(served_run):
    app = create_app(load_predictor(served_run), max_bytes=1_000_000)
    with TestClient(app) as c:
        yield c


def _post(client, data, name="photo.jpg", ctype="image/jpeg"):
    return client.post("/api/predict", files={"file": (name, data, ctype)})


def _ok(client, daisy_jpeg):
    r = _post(client, daisy_jpeg)
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["top"]) == 5 and body["model"] == "lite0" and body["ms"] > 0
    probs = [t["probability"] for t in body["top"]]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    assert all(t["name"] == CLASSES[t["label"]] for t in body["top"])
    return body


def test_health_openapi_and_page(client):
    h = client.get("/api/health").json()
    assert h["status"] == "ok" and h["classes"] == 104 and h["image_size"] == 64
    schema = client.get("/openapi.json").json()
    assert "/api/predict" in schema["paths"] and "/api/health" in schema["paths"]
    page = client.get("/").text
    assert "<input" in page and "api/predict" in page
    assert "http://" not in page and "https://" not in page   # nothing from the internet


@pytest.mark.parametrize("case", ["empty", "text", "truncated", "bomb", "content-type", "too-big", "no-field"])
def test_bad_uploads_get_4xx_json_and_the_server_keeps_serving(client, daisy_jpeg, case):
    if case == "empty":
        r, status, words = _post(client, b""), 400, "empty"
    elif case == "text":
        r, status, words = _post(client, b"just some words, not pixels" * 10), 400, "not a readable image"
    elif case == "truncated":
        r, status, words = _post(client, daisy_jpeg[: len(daisy_jpeg) // 2]), 400, "truncated"
    elif case == "bomb":   # 64 megapixels in a few kilobytes of PNG
        r, status, words = _post(client, png_bytes(Image.new("1", (8000, 8000))), "bomb.png", "image/png"), 413, \
            "over the limit"
    elif case == "content-type":
        r, status, words = _post(client, daisy_jpeg, "daisy.txt", "text/plain"), 415, "not an image"
    elif case == "too-big":
        r, status, words = _post(client, b"\xff\xd8" + b"\0" * 2_000_000), 413, "over the limit"
    else:
        r, status, words = client.post("/api/predict", data={"other": "x"}), 422, ""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and words in body["error"]
    _ok(client, daisy_jpeg)   # still serving


def test_parallel_requests_are_batched(client, daisy_jpeg):
    client.app.state.batcher.batch_sizes.clear()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: _post(client, daisy_jpeg).json(), range(32)))
    # the same answer in any batch: float32 (--precision auto on a CPU) differs by batch size in the last bits
    assert all([t["label"] for t in r["top"]] == [t["label"] for t in results[0]["top"]] for r in results)
    assert max(abs(t["probability"] - u["probability"]) for r in results
               for t, u in zip(r["top"], results[0]["top"])) < 1e-5
    sizes = client.app.state.batcher.batch_sizes
    assert sum(sizes) == 32 and max(sizes) > 1, sizes


def test_no_cdn_docs_page_and_one_access_line_per_request(client, daisy_jpeg, caplog):
    """FastAPI's /docs loads Swagger UI from a CDN (blank offline): not served; the schema is."""
    import logging
    with caplog.at_level(logging.INFO, logger="petalnet.access"):
        assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
        assert client.get("/openapi.json").status_code == 200
        assert _post(client, daisy_jpeg).status_code == 200
        assert _post(client, b"").status_code == 400
    lines = [r.getMessage() for r in caplog.records if r.name == "petalnet.access"]
    assert len(lines) == 5, lines
    assert '"GET /docs" 404' in lines[0] and '"GET /openapi.json" 200' in lines[2]
    assert '"POST /api/predict" 200' in lines[3] and '"POST /api/predict" 400' in lines[4]
    assert all(line.endswith(" ms") for line in lines)


def test_every_refusal_is_one_error_shape_and_get_routes_answer_head(client):
    """Unknown routes, wrong methods and unparsable multipart bodies answer {"error": ...} like petalnet's
    own refusals (not Starlette's {"detail": ...}); HEAD on the page and on /api/health is 200."""
    for method, path, kwargs, status in [
            ("GET", "/nowhere", {}, 404), ("DELETE", "/api/health", {}, 405),
            ("POST", "/api/predict", {"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=x"}}, None)]:
        r = client.request(method, path, **kwargs)
        assert r.status_code >= 400 and (status is None or r.status_code == status), (path, r.status_code)
        body = r.json()
        assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    for path in ("/", "/api/health"):
        assert client.head(path).status_code == 200
