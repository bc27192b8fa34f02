"""Turn image files and photos of handwriting into MNIST-style model input.

MNIST digits are light strokes on a black background, scaled so the digit
fits a 20x20 box (aspect ratio kept) and centred by centre of mass in a 28x28
field. :func:`mnist_style` does the same to any grayscale picture; the
algorithm (polarity, the paper's level, the digit's marks, stroke width) lives
in :mod:`paddle_mnist_hapi.deploy.mnist_digit`, which measures each picture
before choosing what to do with it.

:func:`load_image` opens files defensively: missing, empty, truncated,
non-image and oversized files (decompression bombs) raise one clear
:class:`~paddle_mnist_hapi.errors.ImageError`; palette, transparent (composited
on white), 16-bit and EXIF-rotated images are read correctly.

Examples:
    >>> from PIL import Image, ImageDraw
    >>> photo = Image.new("L", (200, 300), 255)          # white paper
    >>> ImageDraw.Draw(photo).line([(100, 40), (100, 260)], fill=0, width=20)  # a dark "1"
    >>> pixels = mnist_style(to_grayscale(photo))
    >>> pixels.shape, pixels.dtype, int(pixels[14, 14]) > 200, int(pixels[0, 0])
    ((28, 28), dtype('uint8'), True, 0)
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from paddle_mnist_hapi.data.dataset import MEAN, STD
from paddle_mnist_hapi.data.framing import DIGIT_BOX, SIZE
from paddle_mnist_hapi.deploy.mnist_digit import Background, DigitPicture, find_digit, needs_inversion
from paddle_mnist_hapi.errors import ImageError

__all__ = [
    "DIGIT_BOX",
    "MAX_PIXELS",
    "ImageSource",
    "Invert",
    "load_image",
    "mnist_style",
    "needs_inversion",
    "preprocess",
    "preprocess_digit",
    "to_grayscale",
]

log = logging.getLogger(__name__)

#: Largest image accepted, in pixels (50 megapixels: a 48 MP phone photo fits;
#: anything larger is refused before it is decoded, as a decompression bomb).
MAX_PIXELS = 50_000_000

ImageSource = str | os.PathLike | bytes | Image.Image | np.ndarray
Invert = bool | Literal["auto"]


def _describe(source: Any) -> str:
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    if isinstance(source, Image.Image):
        return f"<PIL {source.mode} {source.width}x{source.height}>"
    return str(source)


def load_image(source: str | os.PathLike[str] | bytes | Image.Image, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image file (path or bytes); PIL images pass through.

    The size is checked against ``max_pixels`` before any pixel is decoded.
    EXIF orientation is applied, so a rotated phone photo comes out upright.

    Args:
        source (str|PathLike|bytes|PIL.Image.Image): an image file, its bytes, or an image.
        max_pixels (int, optional): the largest accepted ``width * height``. Default: 50,000,000.

    Raises:
        ImageError: the file is missing, empty, truncated, not an image, or too large.

    Examples:
        >>> load_image(b"not a picture")
        Traceback (most recent call last):
        ...
        paddle_mnist_hapi.errors.ImageError: Cannot read <13 bytes> as an image: ...
    """
    if isinstance(source, Image.Image):
        image = source
    else:
        label = _describe(source)
        if isinstance(source, bytes):
            data = source
        else:
            path = os.fspath(source)
            if not os.path.exists(path):
                raise ImageError(f"Image file not found: {path}. Check the path. Received: image={path!r}")
            if os.path.isdir(path):
                raise ImageError(
                    f"{path} is a directory, expected an image file (PNG, JPEG, BMP, ...). Received: image={path!r}"
                )
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                raise ImageError(f"Cannot read {path}: {exc.strerror or exc}. Received: image={path!r}") from exc
        if not data:
            raise ImageError(
                f"{label} is empty (0 bytes), expected an image file (PNG, JPEG, BMP, ...). Received: image={label!r}"
            )
        try:
            with warnings.catch_warnings():
                # PIL warns above ~89 MP and raises above ~179 MP; both mean "refuse".
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data))
                _check_size(image, label, max_pixels)
                image.load()
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(
                f"{label} is too large to decode safely ({exc}). Expected at most {max_pixels:,} pixels: "
                f"resize the image first. Received: image={label!r}"
            ) from exc
        except UnidentifiedImageError as exc:
            raise ImageError(
                f"Cannot read {label} as an image: not a format Pillow recognizes. Expected a PNG, JPEG, BMP, "
                f"GIF, TIFF or WebP file. Received: image={label!r}"
            ) from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt pixel data
            raise ImageError(
                f"{label} is truncated or corrupt: {exc}. Re-save or re-export the image. Received: image={label!r}"
            ) from exc
    _check_size(image, _describe(source), max_pixels)
    try:
        return ImageOps.exif_transpose(image) or image
    except Exception:  # a broken EXIF block must not hide a readable picture
        return image


def _check_size(image: Image.Image, label: str, max_pixels: int) -> None:
    if image.width * image.height > max_pixels:
        raise ImageError(
            f"{label} is too large: {image.width}x{image.height} = {image.width * image.height:,} pixels, "
            f"expected at most {max_pixels:,} (decompression-bomb guard). Resize the image first. "
            f"Received: image={label!r}"
        )
    if image.width < 1 or image.height < 1:
        raise ImageError(f"{label} has no pixels ({image.width}x{image.height}). Received: image={label!r}")


def to_grayscale(image: Image.Image) -> np.ndarray:
    """float32 ``(H, W)`` luminance in 0..255 for any PIL mode.

    Transparent pixels (RGBA, LA, palette with transparency) are composited on
    white, as a viewer shows them; 16-bit images (``I;16``, ``I``) are scaled
    from 0..65535, not clipped; float images in 0..1 are scaled by 255.

    Examples:
        >>> to_grayscale(Image.new("I;16", (2, 2), 65535)).max()
        np.float32(255.0)
        >>> to_grayscale(Image.new("RGBA", (2, 2), (0, 0, 0, 0))).min()  # fully transparent -> white
        np.float32(255.0)
    """
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("L"), dtype=np.float32)
    if mode.startswith("I;16"):
        return np.asarray(image, dtype=np.float32) * (255.0 / 65535.0)
    if mode == "I":
        pixels = np.asarray(image, dtype=np.float32)
        return pixels * (255.0 / 65535.0) if pixels.max() > 255 else pixels
    if mode == "F":
        pixels = np.asarray(image, dtype=np.float32)
        return np.clip(pixels * 255.0 if pixels.max() <= 1.0 else pixels, 0, 255)
    return np.asarray(image.convert("L"), dtype=np.float32)


def mnist_style(gray: np.ndarray, *, invert: Invert = "auto", background: Background = "auto") -> np.ndarray:
    """uint8 ``(28, 28)`` MNIST-style pixels from a float ``(H, W)`` grayscale picture.

    The pixels of :func:`~paddle_mnist_hapi.deploy.mnist_digit.find_digit` (see there for ``background``).

    Args:
        gray (np.ndarray): luminance in 0..255, any size (see :func:`to_grayscale`).
        invert (bool|str, optional): ``'auto'`` detects dark-on-light pictures
            (:func:`needs_inversion`); ``True``/``False`` force it. Default: ``'auto'``.
        background (str, optional): ``'auto'``, ``'global'`` or ``'local'``. Default: ``'auto'``.

    Raises:
        ImageError: the picture is blank (no digit to find).

    Examples:
        >>> digit = np.zeros((28, 28)); digit[4:24, 12:16] = 255     # an MNIST-style "1"
        >>> out = mnist_style(digit)
        >>> out.shape, int(out[:, 14].max())
        ((28, 28), 255)
    """
    return find_digit(gray, invert=invert, background=background).pixels


def preprocess(source: ImageSource, *, invert: Invert = "auto", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """float32 ``(1, 1, 28, 28)`` model input from an image file, bytes, PIL image or pixel array.

    Pixel arrays (integer dtype, ``(H, W)`` or ``(H, W, 3|4)``) are treated like
    images. The result is normalized like the training data:
    ``(pixel - MEAN) / STD``.

    Examples:
        >>> from PIL import Image, ImageDraw
        >>> img = Image.new("RGB", (64, 64), "white")
        >>> ImageDraw.Draw(img).ellipse([16, 8, 48, 56], outline="black", width=5)
        >>> x = preprocess(img)
        >>> x.shape, x.dtype, float(x.min()), float(x.max())
        ((1, 1, 28, 28), dtype('float32'), -1.0, 1.0)
    """
    return preprocess_digit(source, invert=invert, max_pixels=max_pixels)[0]


def preprocess_digit(
    source: ImageSource, *, invert: Invert = "auto", max_pixels: int = MAX_PIXELS
) -> tuple[np.ndarray, DigitPicture]:
    """:func:`preprocess`'s model input, and what :func:`~paddle_mnist_hapi.deploy.mnist_digit.find_digit` found.

    ``DigitPicture.problem`` says when the picture does not look like one digit
    (several digits side by side, a line, a solid block, ink all over).

    Examples:
        >>> from PIL import Image, ImageDraw
        >>> two = Image.new("L", (160, 80), 255)
        >>> ImageDraw.Draw(two).line([(40, 10), (40, 70)], fill=0, width=6)
        >>> ImageDraw.Draw(two).line([(120, 10), (120, 70)], fill=0, width=6)
        >>> preprocess_digit(two)[1].problem
        'several separate marks side by side (2): write one digit per picture'
    """
    if isinstance(source, np.ndarray):
        if not np.issubdtype(source.dtype, np.integer) or source.ndim not in (2, 3):
            raise ImageError(
                "Expected a pixel array: integer dtype, shape (H, W) or (H, W, 3|4). For model input that is "
                "already normalized use Predictor.predict_batch. "
                f"Received: dtype={source.dtype}, shape={source.shape}"
            )
        if source.dtype == np.uint16 and source.ndim == 2:
            source = Image.fromarray(source)  # mode I;16, scaled by to_grayscale
        else:
            source = Image.fromarray(np.clip(source, 0, 255).astype(np.uint8))
    image = load_image(source, max_pixels=max_pixels)
    digit = find_digit(to_grayscale(image), invert=invert)
    return ((digit.pixels.astype(np.float32) - MEAN) / STD).reshape(1, 1, SIZE, SIZE), digit
