"""Load on `petalnet serve` over loopback: N requests from C concurrent clients, each a real petals-mini
photo; prints status counts, p50/p95 latency and requests/s.

With --burst-png: the memory bursts of large decodes cost (issue 30, item 5): twice C concurrent uploads
of a 7000x7000 16-bit greyscale PNG (made here, 0.6 MB), then the server's VmHWM rise over its level after
a warm-up request, against the issue's 600 MB target, and its VmRSS after each burst.

usage: python benchmarks/bench_serve.py [RUN_DIR|MODEL.onnx] [--requests 200] [--clients 8]
       python benchmarks/bench_serve.py [RUN_DIR|MODEL.onnx] --burst-png [--clients 12] [-- SERVE OPTIONS]
       (without a run, trains the default recipe on the synthetic flowers at 128 px for 1 epoch first)
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
PETALS = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "data", "petals-mini")


def _photo() -> bytes:
    from petalnet.data.dataset import open_split
    return open_split(PETALS, "val").read(0)["image"]


def _grey16_png(side: int = 7000) -> bytes:
    """A side x side 16-bit greyscale PNG: diagonal ramps over the whole 0..65535 range."""
    import io

    import numpy as np
    from PIL import Image
    ramp = np.add.outer(np.arange(side, dtype=np.uint32), np.arange(side, dtype=np.uint32)) * 7 % 65536
    buf = io.BytesIO()
    Image.fromarray(ramp.astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def _multipart(data: bytes, name: str = "photo.jpg", ctype: str = "image/jpeg") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: {ctype}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _memory(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS of process ``pid``, in bytes."""
    with open(f"/proc/{pid}/status") as fh:
        fields = dict(line.split(":", 1) for line in fh)
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmHWM", "VmRSS")}


def _post(url: str, body: bytes, ctype: str) -> tuple[int, float]:
    """(status, seconds) of one POST."""
    t = time.perf_counter()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    return status, time.perf_counter() - t


@contextlib.contextmanager
def _server(model: str, options: list[str]):
    """(process, base url) of `petalnet serve MODEL OPTIONS` on a free port, once it answers /api/health."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "petalnet", "serve", model, "--port", str(port), *options],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            if server.poll() is not None:
                sys.exit(f"the server exited with code {server.returncode}: try `petalnet serve {model}`")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        yield server, f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def _load(url: str, requests: int, clients: int, label: str) -> None:
    body, ctype = _multipart(_photo())
    _post(url, body, ctype)   # warm-up
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda _: _post(url, body, ctype), range(requests)))
    wall = time.perf_counter() - t0
    lat = sorted(r[1] * 1000 for r in results)
    codes = statistics.multimode([r[0] for r in results])
    ok = sum(1 for r in results if r[0] == 200)
    print(f"{requests} requests, {clients} clients, model {label}: "
          f"{ok} answered 200 (most common status {codes}), p50 {lat[len(lat) // 2]:.0f} ms, "
          f"p95 {lat[int(len(lat) * 0.95) - 1]:.0f} ms, {requests / wall:.1f} requests/s")


def _burst(server, url: str, clients: int, label: str, target_mb: float = 600) -> None:
    """Two bursts of ``clients`` uploads at once: the VmHWM rise over both, VmRSS after each."""
    _post(url, *_multipart(_photo()))   # warm-up: the model prepared, one request's buffers allocated
    png = _grey16_png()
    body, ctype = _multipart(png, "grey16.png", "image/png")
    before, rss_after, codes = _memory(server.pid), [], set()
    for _ in range(2):
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            codes |= {r[0] for r in pool.map(lambda _: _post(url, body, ctype), range(clients))}
        rss_after.append(_memory(server.pid)["VmRSS"] / 2 ** 20)
    after = _memory(server.pid)
    rise = (after["VmHWM"] - before["VmHWM"]) / 2 ** 20
    print(f"2 bursts of {clients} concurrent uploads of a 7000x7000 16-bit grey PNG ({len(png):,} bytes), model "
          f"{label}: statuses {sorted(codes)}, VmHWM {before['VmHWM'] / 2 ** 20:.0f} -> "
          f"{after['VmHWM'] / 2 ** 20:.0f} MiB (+{rise:.0f} MiB; target +{target_mb:.0f}: {rise / target_mb:.2f}x), "
          f"VmRSS {before['VmRSS'] / 2 ** 20:.0f} MiB before, "
          + ", ".join(f"{r:.0f}" for r in rss_after) + " MiB after each burst")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, help="concurrent clients (default: 8; 12 with --burst-png)")
    ap.add_argument("--burst-png", action="store_true", help="measure a burst of large 16-bit PNG decodes")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, options = ap.parse_args(argv[:split]), argv[split + 1:]   # after --: options for petalnet serve
    clients = args.clients or (12 if args.burst_png else 8)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if not model:
            from petalnet.data.synthetic import synthetic_data
            from petalnet.engine import TrainConfig, train
            model = os.path.join(tmp, "run")
            train(TrainConfig(data=synthetic_data(128), out=model, epochs=1, quiet=True))
        label = args.model or "synthetic lite0 @128px"
        with _server(model, options) as (server, base):
            if args.burst_png:
                _burst(server, f"{base}/api/predict", clients, label)
            else:
                _load(f"{base}/api/predict", args.requests, clients, label)


if __name__ == "__main__":
    main()
