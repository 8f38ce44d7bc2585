"""FastAPI app: the upload page, ``POST /api/predict``, ``GET /api/health``.

Requests are decoded in threads of their own, a few at a time (``serve.decode``), and batched: a single task collects the images that arrive
within a few milliseconds (up to ``max_batch``) and runs them through the model together in a thread,
so parallel requests share one forward pass and the event loop never waits on the model.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from fastapi.responses import HTMLResponse, JSONResponse

from petalnet.commands import ServeOptions
from petalnet.errors import PetalnetError
from petalnet.data.photo import ImageTooLarge
from petalnet.predict import (MAX_PIXELS, Predictor, inference_model, inference_precision, load_photo,
                              predict_batches, top_entries)
from petalnet.serve.decode import DecodeGate

PAGE = os.path.join(os.path.dirname(__file__), "page.html")
ACCEPTED_TYPES = ("image/", "application/octet-stream")
access_log = logging.getLogger("petalnet.access")


class Batcher:
    """Collects single images into batches for one model."""

    def __init__(self, predictor: Predictor, max_batch: int = 16, max_wait: float = 0.005, precision: str = "auto"):
        self.predictor, self.max_batch, self.max_wait, self.precision = predictor, max_batch, max_wait, precision
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.batch_sizes: list[int] = []   # recent batch sizes, for /api/health and tests

    async def start(self):
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    async def stop(self):
        if self.task:
            self.task.cancel()

    async def predict(self, image: torch.Tensor) -> torch.Tensor:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((image, future))
        return await future

    async def _run(self):
        while True:
            items = [await self.queue.get()]
            deadline = time.perf_counter() + self.max_wait
            while len(items) < self.max_batch and (left := deadline - time.perf_counter()) > 0:
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            batch = torch.stack([img for img, _ in items])
            self.batch_sizes = (self.batch_sizes + [len(items)])[-1000:]
            try:
                probs = await asyncio.to_thread(self._forward, batch)
            except Exception as e:   # a model failure answers every waiting request, and the loop goes on
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (_, fut), p in zip(items, probs):
                if not fut.done():
                    fut.set_result(p)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        (probs, _), = predict_batches([self.predictor], [(batch, None)], precision=self.precision)
        return probs


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class BodyLimit:
    """ASGI middleware: stops reading a request body past ``max_bytes`` and answers 413. The
    Content-Length check cannot see a chunked body, which Starlette's form parser otherwise spooled
    to disk whole (400 MB in issue 14) before the handler's own check."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        received, over, started = 0, False, False

        async def limited_receive():
            nonlocal received, over
            if over:   # whoever asks again gets a disconnect, never more of the body
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    over = True
                    raise _TooLarge()
            return message

        async def guarded_send(message):
            nonlocal started
            if over:       # whatever the app made of the interrupted body, the client gets the 413
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            pass
        if over and not started:
            await _error(413, f"upload is over the limit of {self.max_bytes:,} bytes")(scope, receive, send)


class _TooLarge(Exception):
    pass


def _add_guards(app: FastAPI, max_bytes: int) -> None:
    """The refusals every request passes (one ``{"error": ...}`` shape) and the access log."""
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        # FastAPI's default is {"detail": [...]}; the API documents {"error": ...} for every refusal
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
                             for e in exc.errors())
        return _error(422, f"invalid request ({problems or 'unreadable form'}): send the photo as the "
                           "multipart form field 'file'")

    @app.exception_handler(HTTPException)
    async def refused(request: Request, exc: HTTPException):
        # Starlette's and FastAPI's own refusals (unknown route, wrong method, unparsable multipart body)
        # answer {"detail": ...} by default
        detail = exc.detail if isinstance(exc.detail, str) else "refused"
        return JSONResponse({"error": f"{request.method} {request.url.path}: {detail.lower()}"},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.middleware("http")
    async def refuse_large_bodies(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_bytes + 64 * 1024:   # room for the form fields
            return _error(413, f"upload of {int(length):,} bytes is over the limit of {max_bytes:,} bytes")
        return await call_next(request)

    @app.middleware("http")   # added last: the outermost, so it sees the refusals above too
    async def log_access(request: Request, call_next):
        t0 = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:   # one line per request, the refused and the failed too
            client = f"{request.client.host}:{request.client.port}" if request.client else "-"
            access_log.info('%s "%s %s" %d %.1f ms', client, request.method, request.url.path, status,
                            (time.perf_counter() - t0) * 1000)


def _add_pages(app: FastAPI, predictor: Predictor, name: str, decodes: DecodeGate) -> None:
    """The upload page and /api/health, with HEAD for uptime checks."""
    @app.get("/", response_class=HTMLResponse)
    async def page():
        with open(PAGE, encoding="utf-8") as fh:
            return fh.read()

    @app.get("/api/health")
    async def health():
        return {"status": "ok", "model": name, "model_name": predictor.model_name,
                "classes": predictor.num_classes, "image_size": predictor.image_size,
                "decodes": {"running": decodes.running, "waiting": decodes.waiting, "threads": decodes.threads}}

    for path, endpoint in (("/", page), ("/api/health", health)):   # HEAD off the schema
        app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)


def create_app(predictor: Predictor, *, max_bytes: int = 20 * 1024 * 1024, max_pixels: int = MAX_PIXELS,
               max_batch: int = 16, top_k: int = 5, precision: str = "auto", max_decode_mb: float = 128,
               decode_threads: int = 2) -> FastAPI:
    """``precision``: ``predict.inference_precision`` (auto: as predict). Decoding one image may take
    ``max_decode_mb`` MiB; ``decode_threads`` images are decoded at once."""
    inference_precision(precision, torch.device("cpu"), [predictor])   # a bad value fails here, not per request
    batcher = Batcher(predictor, max_batch=max_batch, precision=precision)
    decodes = DecodeGate(decode_threads)
    name = os.path.basename(os.path.normpath(predictor.name))

    @asynccontextmanager
    async def lifespan(app):
        # the model is prepared for the CPU (batch norm folded, bf16) before the first request, not in it
        await asyncio.to_thread(inference_model, predictor, torch.device("cpu"), precision)
        await batcher.start()
        decodes.start()
        yield
        await batcher.stop()
        decodes.stop()

    # no /docs or /redoc: FastAPI's pages load Swagger UI / ReDoc from a CDN, blank offline; the schema
    # itself is served at /openapi.json (any OpenAPI viewer reads it)
    app = FastAPI(title="petalnet", description="Names the flower species in a photo.", lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.batcher, app.state.decodes = batcher, decodes
    app.add_middleware(BodyLimit, max_bytes=max_bytes + 64 * 1024)   # room for the form fields

    _add_guards(app, max_bytes)

    _add_pages(app, predictor, name, decodes)

    @app.post("/api/predict")
    async def predict(file: UploadFile = File(..., description="the photo (JPEG, PNG, WebP, ...)")):
        t0 = time.perf_counter()
        ctype = (file.content_type or "").lower()
        if not ctype.startswith(ACCEPTED_TYPES):
            return _error(415, f"{file.filename}: content type {ctype or 'none'} is not an image")
        data = await file.read(max_bytes + 1)
        if len(data) > max_bytes:
            return _error(413, f"{file.filename}: upload is over the limit of {max_bytes:,} bytes")
        if not data:
            return _error(400, f"{file.filename or 'upload'}: empty file")
        try:
            image = await decodes.run(load_photo, data, predictor.image_size, file.filename or "upload",
                                      max_pixels, int(max_decode_mb * 2 ** 20))
        except ImageTooLarge as e:
            return _error(413, f"{e} (--max-decode-mb {max_decode_mb:g})" if e.decode_limit else str(e))
        except PetalnetError as e:
            return _error(400, str(e))
        probs = await batcher.predict(image)
        top = [{"label": c, "name": n, "probability": round(p, 6)} for c, n, p in top_entries(probs, top_k)]
        return {"top": top, "model": name, "ms": round((time.perf_counter() - t0) * 1000, 1)}

    return app


def serve(model_path: str, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 20,
          max_batch: int = 16, max_decode_mb: float = 128, decode_threads: int = 2, **kwargs) -> None:
    import uvicorn

    from petalnet.predict import load_predictor
    ServeOptions(model=model_path, host=host, port=port, max_upload_mb=max_upload_mb, max_batch=max_batch,
                 max_decode_mb=max_decode_mb, decode_threads=decode_threads,
                 **{k: v for k, v in kwargs.items() if k == "precision"}).check()   # before the model loads
    kwargs.update(max_bytes=int(max_upload_mb * 2 ** 20), max_batch=max_batch, max_decode_mb=max_decode_mb,
                  decode_threads=decode_threads)
    predictor = load_predictor(model_path)
    print(f"petalnet: serving {model_path} on http://{host}:{port}/ (API schema at /openapi.json; one line "
          "per request on stderr)", flush=True)
    if not access_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
        access_log.propagate = False
    uvicorn.run(create_app(predictor, **kwargs), host=host, port=port, log_level="warning")
