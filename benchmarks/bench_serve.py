"""Load on `petalnet serve` over loopback: N requests from C concurrent clients, each a real petals-mini
photo; prints status counts, p50/p95 latency and requests/s.

usage: python benchmarks/bench_serve.py [RUN_DIR|MODEL.onnx] [--requests 200] [--clients 8]
       (without a run, trains the default recipe on the synthetic flowers at 128 px for 1 epoch first)
"""
from __future__ import annotations

import argparse
import concurrent.futures
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


def _multipart(data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"photo.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if not model:
            from petalnet.data.synthetic import synthetic_data
            from petalnet.engine import TrainConfig, train
            model = os.path.join(tmp, "run")
            train(TrainConfig(data=synthetic_data(128), out=model, epochs=1, quiet=True))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "petalnet", "serve", model, "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/api/predict"
        try:
            for _ in range(300):
                if server.poll() is not None:
                    sys.exit(f"the server exited with code {server.returncode}: try `petalnet serve {model}`")
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.2)
            body, ctype = _multipart(_photo())

            def one(_):
                t = time.perf_counter()
                req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype}, method="POST")
                try:
                    with urllib.request.urlopen(req, timeout=60) as r:
                        r.read()
                        status = r.status
                except urllib.error.HTTPError as e:
                    status = e.code
                return status, time.perf_counter() - t
            one(0)   # warm-up
            t0 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
                results = list(pool.map(one, range(args.requests)))
            wall = time.perf_counter() - t0
        finally:
            server.terminate()
            server.wait(timeout=30)
    lat = sorted(r[1] * 1000 for r in results)
    codes = statistics.multimode([r[0] for r in results])
    ok = sum(1 for r in results if r[0] == 200)
    print(f"{args.requests} requests, {args.clients} clients, model {args.model or 'synthetic lite0 @128px'}: "
          f"{ok} answered 200 (most common status {codes}), p50 {lat[len(lat) // 2]:.0f} ms, "
          f"p95 {lat[int(len(lat) * 0.95) - 1]:.0f} ms, {args.requests / wall:.1f} requests/s")


if __name__ == "__main__":
    main()
