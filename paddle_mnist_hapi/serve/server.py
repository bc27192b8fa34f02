"""``run_server``: load the model, bind the socket, serve with uvicorn until Ctrl+C or SIGTERM.

Everything that can fail because of the user's input fails before the first
request is accepted, with one :class:`~paddle_mnist_hapi.errors.PaddleMnistError`:
a missing or broken model (it is loaded and run once on a blank image), an export
that declares no picture preprocessing (arrays only), a port in use, a bad option.

Examples:
    >>> run_server("/no/such/model")
    Traceback (most recent call last):
    ...
    paddle_mnist_hapi.errors.ExportError: No exported model at /no/such/model: ...
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator

import numpy as np

from paddle_mnist_hapi.deploy.predict import Predictor
from paddle_mnist_hapi.errors import ConfigError, ExportError

__all__ = ["load_checked_predictor", "run_server"]

log = logging.getLogger("paddle_mnist_hapi.serve")

#: At most this many connections at once; more get 503 (uvicorn's limit_concurrency).
MAX_CONNECTIONS = 128


def load_checked_predictor(model: str | os.PathLike[str]) -> Predictor:
    """A :class:`Predictor` for ``model`` that has run once (a model that loads but cannot run fails here).

    Raises:
        ExportError: the model is missing, unreadable, takes arrays only, or fails on a blank input.
    """
    predictor = Predictor(model, threads=1)
    predictor.require_pictures()  # the service takes pictures: an arrays-only export is refused at start
    try:
        logits = predictor.logits(np.zeros((1, *predictor.input_shape), np.float32))
    except Exception as exc:
        reason = " ".join(str(exc).split())[:300]
        raise ExportError(f"The model {predictor.prefix} loads but cannot run: {reason}. Re-export it.") from exc
    if logits.ndim != 2 or logits.shape[0] != 1:
        raise ExportError(
            f"The model {predictor.prefix} gives outputs of shape {list(logits.shape)}, expected [1, classes]. "
            "Serve a classifier exported by model.save(PREFIX, training=False)."
        )
    return predictor


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``port`` 0: any free port).

    Raises:
        ConfigError: the address cannot be used (port taken, unknown host, no permission).

    Examples:
        >>> sock = bind("127.0.0.1", 0)
        >>> sock.getsockname()[1] > 0
        True
        >>> sock.close()
    """
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"port must be in 0..65535 (0: any free port). Received: port={port!r}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}. Received: host={host!r}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"Cannot listen on {host}:{port}: {exc.strerror or exc}. Choose another --port (0 picks a free one)."
        ) from exc
    sock.set_inheritable(True)
    return sock


def run_server(
    model: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch: int = 32,
    max_wait_ms: float = 3.0,
    max_upload_bytes: int | None = None,
    decode_processes: int = 0,
    read_timeout_s: float = 30.0,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``model`` on ``http://host:port/`` until interrupted (SIGINT/SIGTERM stop it cleanly).

    Args:
        model (str|PathLike): export prefix, one of its files, or a training run directory.
        host (str, optional): the address to listen on; only this machine by default. Default: 127.0.0.1.
        port (int, optional): the port; 0 picks a free one (``on_ready`` receives the URL). Default: 8000.
        max_batch (int, optional): the most images per model call (1: no batching). Default: 32.
        max_wait_ms (float, optional): how long a batch waits for more requests. Default: 3.
        max_upload_bytes (int, optional): the largest request body. Default: 10 MiB.
        decode_processes (int, optional): worker processes that decode uploads; 0 decodes in
            threads of this process (faster on the loaded 2-core machine measured). Default: 0.
        read_timeout_s (float, optional): the longest a request body may take to arrive. Default: 30.
        on_ready (callable, optional): called with the base URL once the socket is bound.

    Raises:
        ExportError: the model is missing or broken.
        ConfigError: the address cannot be used.
    """
    import uvicorn

    from paddle_mnist_hapi.serve.app import MAX_UPLOAD_BYTES, create_app

    if not isinstance(port, int) or not 0 <= port <= 65535:  # before the model is loaded: fail fast
        raise ConfigError(f"port must be in 0..65535 (0: any free port). Received: port={port!r}")
    predictor = load_checked_predictor(model)
    sock = bind(host, port)
    with contextlib.closing(sock):
        app = create_app(
            predictor,
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
            max_upload_bytes=MAX_UPLOAD_BYTES if max_upload_bytes is None else max_upload_bytes,
            decode_processes=decode_processes,
            read_timeout_s=read_timeout_s,
        )
        bound_host, bound_port = sock.getsockname()[:2]
        url = f"http://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}/"
        if host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("listening on %s: reachable from other machines, with no authentication", host)
        config = uvicorn.Config(
            app,
            loop="asyncio",
            http="h11",  # strict and bounded (header size limit); a pure-Python parser
            lifespan="on",
            log_config=None,  # our own one line per request, through logging
            access_log=False,
            server_header=False,
            limit_concurrency=MAX_CONNECTIONS,
            timeout_graceful_shutdown=5,
        )
        if on_ready is None:
            log.warning("serving %s on %s", predictor.prefix, url)
        else:
            on_ready(url)
        with _stop_signals_end_quietly() as received:
            uvicorn.Server(config).run(sockets=[sock])
    if received:
        log.warning("stopped by %s", signal.Signals(received[-1]).name)


@contextlib.contextmanager
def _stop_signals_end_quietly() -> Iterator[list[int]]:
    """uvicorn stops gracefully on SIGINT/SIGTERM, then raises the signal again for the handler it found:
    this one records it, so that Ctrl+C or ``kill`` ends the command normally (exit 0)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in stops}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
