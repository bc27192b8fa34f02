"""The HTTP service: a Starlette application around one :class:`~paddle_mnist_hapi.deploy.predict.Predictor`.

Routes:

- ``POST /predict``: one image as the raw request body (PNG, JPEG, BMP, GIF,
  TIFF, WebP: whatever ``paddle-mnist predict`` reads) or as a multipart form
  field named ``file``; answers like one record of ``predict --json``, plus
  ``model_input``, the picture the model saw (a PNG data URL: 28x28 for a digit
  model, the declared size and colours for an ``image`` export);
- ``GET /health``: 200 once the model is loaded (and has run once), with the
  batching statistics;
- ``GET /metadata``: the model's ``prefix_meta.json``;
- ``GET /``: the page to draw a digit on (``index.html``, no external assets).

Pictures are decoded and preprocessed by :mod:`~paddle_mnist_hapi.serve.decoding`
(worker processes or threads), exactly as ``paddle-mnist predict`` does; the model
runs in the :class:`~paddle_mnist_hapi.serve.batching.MicroBatcher`'s one thread.
Every error is JSON ``{"error": "..."}`` with a 4xx status (5xx only for a bug),
and one log line per request (method, path, status, milliseconds, label).

Examples:
    >>> from paddle_mnist_hapi.deploy.predict import _example_predictor
    >>> app = create_app(_example_predictor())
    >>> [route.path for route in app.routes]
    ['/', '/health', '/metadata', '/predict']
    >>> app.state.service.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from paddle_mnist_hapi.deploy.export import METADATA_SUFFIX, metadata_path
from paddle_mnist_hapi.deploy.predict import Predictor
from paddle_mnist_hapi.serve.batching import MicroBatcher
from paddle_mnist_hapi.serve.decoding import Decoders

__all__ = ["MAX_PIXELS", "MAX_UPLOAD_BYTES", "create_app"]

log = logging.getLogger("paddle_mnist_hapi.serve")

#: Default upload limit: a 12 MP phone JPEG fits.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: Largest picture the service decodes (a 24 MP photo fits); larger ones get 413 before decoding.
MAX_PIXELS = 25_000_000
_LABEL = "paddle_mnist_hapi.label"  # scope key: the predicted label, for the request log
_REFUSED_TYPES = ("application/json", "text/")
_HOW = "Send the image file (PNG, JPEG, ...) as the request body, or as a multipart form field named 'file'."
#: The page's policy: nothing is loaded from anywhere but this server.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self' data: blob:; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def create_app(
    predictor: Predictor,
    *,
    max_batch: int = 32,
    max_wait_ms: float = 3.0,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    decode_processes: int = 0,
    read_timeout_s: float = 30.0,
) -> Starlette:
    """The service for ``predictor`` as an ASGI application (run it with uvicorn, see ``run_server``).

    Args:
        predictor (Predictor): the loaded model; its ``paddle.inference`` predictor is only
            used from the batcher's thread from now on.
        max_batch (int, optional): the most images per model call. Default: 32.
        max_wait_ms (float, optional): how long a batch waits for more requests. Default: 3.
        max_upload_bytes (int, optional): the largest request body; larger ones get 413 while
            they are read. Default: 10 MiB.
        max_pixels (int, optional): the largest picture decoded (decompression-bomb guard). Default: 25 MP.
        decode_processes (int, optional): worker processes that decode uploads; 0 decodes in threads
            of this process (see :class:`~paddle_mnist_hapi.serve.decoding.Decoders`). Default: 0.
        read_timeout_s (float, optional): the longest a request body may take to arrive (408 after). Default: 30.
    """
    service = _Service(
        predictor, max_batch, max_wait_ms, max_upload_bytes, max_pixels, decode_processes, read_timeout_s
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            service.close()

    routes = [
        Route("/", service.page, methods=["GET"]),
        Route("/health", service.health, methods=["GET"]),
        Route("/metadata", service.metadata, methods=["GET"]),
        Route("/predict", service.predict, methods=["POST"]),
    ]
    handlers = {HTTPException: _http_error, Exception: _internal_error}
    app = Starlette(routes=routes, middleware=[Middleware(RequestLog)], exception_handlers=handlers, lifespan=lifespan)
    app.state.service = service
    return app


class _Service:
    """The endpoints and what they share: the predictor, the batcher, the decoding threads."""

    def __init__(
        self,
        predictor: Predictor,
        max_batch: int,
        max_wait_ms: float,
        max_upload_bytes: int,
        max_pixels: int,
        decode_processes: int,
        read_timeout_s: float,
    ) -> None:
        self.predictor = predictor
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        self.read_timeout_s = read_timeout_s
        self.batcher = MicroBatcher(
            predictor.probabilities, max_batch=max_batch, max_wait_ms=max_wait_ms
        )  # fmt: skip  (calibrated, as Predictor.predict)
        self.decoders = Decoders(decode_processes, max_pixels, predictor.invert, predictor.image_input)
        self.name = Path(predictor.prefix).name  # never the full path: the service tells no file-system paths
        meta = metadata_path(predictor.prefix)
        self.meta = predictor.metadata if meta.is_file() else None
        self.index_html = resources.files("paddle_mnist_hapi.serve").joinpath("index.html").read_text("utf-8")

    def close(self) -> None:
        self.batcher.close()
        self.decoders.close()

    async def page(self, request: Request) -> Response:
        return HTMLResponse(self.index_html, headers=_PAGE_HEADERS)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": self.name, "batching": self.batcher.stats()})

    async def metadata(self, request: Request) -> Response:
        if self.meta is None:
            raise HTTPException(404, f"The model {self.name} has no {METADATA_SUFFIX} file (exported without one).")
        return JSONResponse(self.meta)

    async def predict(self, request: Request) -> Response:
        self.batcher.announce()  # from now on the batcher waits for this request (up to max_wait_ms)
        try:
            data = await self._upload(request)
            image, seen, status, message = await self.decoders.prepare(data)
            if image is None:
                raise HTTPException(status, message)
        except BaseException:
            self.batcher.withdraw()
            raise
        probabilities = (await asyncio.wrap_future(self.batcher.submit(image, announced=True)))[0]
        prediction = self.predictor.prediction(probabilities, problem=message or None)
        label = prediction.label
        request.scope[_LABEL] = label
        return JSONResponse({**prediction.to_dict(), "model": self.name, "model_input": seen})

    # ------------------------------------------------------------------ reading an upload

    async def _upload(self, request: Request) -> bytes:
        """The image bytes of the request: its body, or its multipart field ``file``."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind.startswith(_REFUSED_TYPES):
            raise HTTPException(415, f"Content-Type {kind} is not an image. {_HOW}")
        body = await self._body(request)
        if kind == "multipart/form-data":
            body = await self._form_file(request, body)
        if not body:
            raise HTTPException(400, f"The request holds no image (an empty body). {_HOW}")
        return body

    async def _body(self, request: Request) -> bytes:
        """The body, refused with 413 as soon as it is known to exceed the limit (never read whole first),
        and with 408 when it has not arrived within ``read_timeout_s``."""
        limit = self.max_upload_bytes
        too_large = f"The upload is larger than the limit of {limit:,} bytes. Send a smaller image."
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise HTTPException(400, f"Content-Length must be a number of bytes. Received: {declared[:40]!r}")
            if int(declared) > limit:
                raise HTTPException(413, too_large)
        body = bytearray()
        try:
            async with asyncio.timeout(self.read_timeout_s):  # a client that trickles its upload is let go
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > limit:
                        raise HTTPException(413, too_large)
        except TimeoutError:
            raise HTTPException(
                408, f"The upload did not arrive within {self.read_timeout_s:g} s ({len(body):,} bytes came)."
            ) from None
        return bytes(body)

    async def _form_file(self, request: Request, body: bytes) -> bytes:
        async def replay() -> AsyncIterator[bytes]:
            yield body

        parser = MultiPartParser(request.headers, replay(), max_files=1, max_fields=8, max_part_size=64 * 1024)
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            raise HTTPException(400, f"Malformed multipart form: {exc.message} {_HOW}") from exc
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                found = ", ".join(repr(k) for k in form.keys()) or "none"
                raise HTTPException(422, f"The multipart form has no file field named 'file' (fields: {found}).")
            return await upload.read()
        finally:
            await form.close()


# ---------------------------------------------------------------------- errors and the request log


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = "No such page. The service answers GET /, GET /health, GET /metadata and POST /predict."
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "another method")
        message = f"{request.method} is not allowed on {request.url.path}; use {allowed}."
    else:
        message = exc.detail
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": f"Internal error: {type(exc).__name__}. The service goes on."}, status_code=500)


class RequestLog:
    """ASGI middleware: one log line per request: method, path, status, milliseconds, label (no body)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            label = scope.get(_LABEL)
            path = repr(scope.get("path", ""))[1:-1][:200]  # escaped: a request cannot forge log lines
            log.info(
                "%s %s %d %.1f ms%s",
                scope.get("method", "?"),
                path,
                status,
                (time.perf_counter() - started) * 1000,
                "" if label is None else f" label={label}",
            )
