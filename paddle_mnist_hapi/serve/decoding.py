"""Decoding uploads off the event loop: ``prepare`` (one upload -> model input) and ``Decoders`` (where it runs).

Decoding and the MNIST-style preprocessing are Python and numpy work that holds the
GIL for most of its 1-2 ms per picture, more than the model itself needs. By default
it runs in 4 threads of the server process. With ``processes=N`` it runs in worker
processes instead: they can use more cores than one process's GIL allows, and a
picture that crashed the decoder would take down a worker, not the service (the
pool is rebuilt and that request gets a 500). On the loaded 2-core machine where
this was measured, threads were faster (``bench/serve_load.py --decode-processes``).

Examples:
    >>> import io, numpy as np
    >>> from PIL import Image
    >>> png = io.BytesIO(); Image.fromarray(np.eye(28, dtype=np.uint8) * 255).save(png, "PNG")
    >>> image, seen, status, message = prepare(png.getvalue())
    >>> image.shape, seen.startswith("data:image/png;base64,"), status
    ((1, 1, 28, 28), True, 200)
    >>> status, message = prepare(b"hello")[2:]
    >>> status, message[:61]
    (422, 'Cannot read the upload as an image: not a format Pillow recog')
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import multiprocessing
import re
import sys
import warnings
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
from PIL import Image

from paddle_mnist_hapi.data.dataset import MEAN, STD
from paddle_mnist_hapi.deploy.image_input import ImageInput
from paddle_mnist_hapi.deploy.preprocess import MAX_PIXELS, Invert, preprocess_digit
from paddle_mnist_hapi.errors import ImageError

__all__ = ["Decoders", "prepare"]

log = logging.getLogger("paddle_mnist_hapi.serve")

Prepared = tuple[np.ndarray | None, str, int, str]
"""``(model input, model input as a PNG data URL, HTTP status, message)``: the error message, or with
status 200 why the picture does not look like one digit ("" when it does)."""


def prepare(
    data: bytes, max_pixels: int = MAX_PIXELS, invert: Invert = "auto", image_input: ImageInput | None = None
) -> Prepared:
    """The model input for one upload, exactly as ``paddle-mnist predict`` makes it; or why not.

    ``image_input`` is the export's declared preprocessing (``Predictor.image_input``); None
    means the MNIST digit pipeline.

    The size is read from the header first: a picture over ``max_pixels`` is refused (413)
    without decoding a pixel. Every other unreadable upload is a 422 with
    :func:`~paddle_mnist_hapi.deploy.preprocess.load_image`'s message.
    """
    pixels = _pixels_in_header(data)
    if pixels is not None and pixels > max_pixels:
        shown = f"{pixels:,} pixels" if pixels < sys.maxsize else "more pixels than Pillow agrees to decode"
        message = f"The image is too large to decode safely: {shown}, at most {max_pixels:,} "
        return None, "", 413, message + "(decompression-bomb guard). Resize it first."
    try:
        if image_input is not None:
            image = image_input(data, max_pixels=max_pixels)
            return image, _picture_data_url(image_input.picture(image)), 200, ""
        image, digit = preprocess_digit(data, invert=invert, max_pixels=max_pixels)
    except ImageError as exc:
        message = " ".join(str(exc).split()).replace(f"<{len(data)} bytes>", "the upload")
        return None, "", 422, re.sub(r"\s*Received: image=.*$", "", message)
    return image, _png_data_url(image), 200, digit.problem or ""


def _pixels_in_header(data: bytes) -> int | None:
    """Width x height from the image header alone (no pixel decoded); None when Pillow cannot tell."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return image.width * image.height
    except Image.DecompressionBombError:
        return sys.maxsize
    except Exception:  # not an image, truncated header: preprocessing says what is wrong
        return None


def _png_data_url(image: np.ndarray) -> str:
    """The normalized ``(1, 1, 28, 28)`` model input as a grayscale PNG data URL."""
    pixels = np.clip(np.round(image.reshape(28, 28) * STD + MEAN), 0, 255).astype(np.uint8)
    return _picture_data_url(pixels)


def _picture_data_url(pixels: np.ndarray) -> str:
    """uint8 ``(H, W)`` or ``(H, W, 3)`` pixels as a PNG data URL."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L" if pixels.ndim == 2 else "RGB").save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _warm_up() -> bool:
    """Run once in each worker at start, so that the first requests do not pay for imports."""
    prepare(b"")
    return True


class Decoders:
    """Where :func:`prepare` runs: ``processes`` worker processes, or threads when it is 0.

    Args:
        processes (int): worker processes (spawned, so no lock or thread of the server is copied);
            0 decodes in 4 threads of this process.
        max_pixels (int, optional): passed to :func:`prepare`. Default: 50,000,000.
        invert (bool|str, optional): passed to :func:`prepare`. Default: ``'auto'``.
        image_input (ImageInput, optional): passed to :func:`prepare`. Default: None (MNIST digits).

    Examples:
        >>> decoders = Decoders(0)
        >>> asyncio.run(decoders.prepare(b""))[2:]
        (422, 'the upload is empty (0 bytes), expected an image file (PNG, JPEG, BMP, ...).')
        >>> decoders.close()
    """

    def __init__(
        self,
        processes: int,
        max_pixels: int = MAX_PIXELS,
        invert: Invert = "auto",
        image_input: ImageInput | None = None,
    ) -> None:
        self.processes = processes
        self.max_pixels = max_pixels
        self.invert = invert
        self.image_input = image_input
        self._executor = self._start()

    def _start(self) -> Executor:
        if not self.processes:
            return ThreadPoolExecutor(4, thread_name_prefix="paddle-mnist-decode")
        executor = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"))
        for future in [executor.submit(_warm_up) for _ in range(self.processes)]:
            future.result(timeout=300)
        return executor

    async def prepare(self, data: bytes) -> Prepared:
        """:func:`prepare` for ``data`` in a worker; a crashed worker pool is rebuilt (the request gets 500)."""
        loop = asyncio.get_running_loop()
        executor = self._executor
        try:
            return await loop.run_in_executor(executor, prepare, data, self.max_pixels, self.invert, self.image_input)
        except BrokenProcessPool:
            log.error("a decoding process died (on a %d-byte upload); starting new ones", len(data))
            if self._executor is executor:
                executor.shutdown(wait=False, cancel_futures=True)
                self._executor = await loop.run_in_executor(None, self._start)
            return None, "", 500, "The image decoder crashed on this upload. The service goes on."

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
