"""Turn image files and photos of handwriting into MNIST-style model input.

MNIST digits are light strokes on a black background, scaled so the digit
fits a 20x20 box (aspect ratio kept) and centred by centre of mass in a 28x28
field. :func:`mnist_style` does the same to any grayscale picture:

1. detect the polarity (a light border means dark ink on paper) and invert
   dark-on-light pictures to MNIST's light-on-dark;
2. subtract the background level and stretch the ink to 0..255, so a grey
   sheet of paper in a photo becomes black; in photos the background is
   measured locally (:func:`local_background`), so uneven lighting, shadows
   and blotches on the paper are removed instead of becoming "ink";
3. crop to the digit's bounding box, thicken thin pen strokes to MNIST's
   stroke width, scale the longest side to 20 pixels (aspect ratio kept);
4. place it in 28x28 so its centre of mass is the centre, as MNIST was made.

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
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from paddle_mnist_hapi.data.dataset import MEAN, STD
from paddle_mnist_hapi.errors import ConfigError, ImageError

__all__ = [
    "DIGIT_BOX",
    "MAX_PIXELS",
    "ImageSource",
    "Invert",
    "load_image",
    "local_background",
    "mnist_style",
    "needs_inversion",
    "preprocess",
    "to_grayscale",
]

log = logging.getLogger(__name__)

#: Largest image accepted, in pixels (50 megapixels: a 48 MP phone photo fits;
#: anything larger is refused before it is decoded, as a decompression bomb).
MAX_PIXELS = 50_000_000
#: MNIST scaled each digit to fit this box, then centred it in 28x28.
DIGIT_BOX = 20
SIZE = 28
#: Larger pictures are first scaled down to this longest side.
WORK_SIZE = 1024
#: Where MNIST digits have their centre of mass (row and column; measured: 13.99, 14.00).
CENTRE = 14.0
#: MNIST's mean stroke width in pixels of the 28x28 image, as ``_stroke_width`` measures it.
STROKE_WIDTH = 2.9

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


def needs_inversion(gray: np.ndarray) -> bool:
    """True when ``gray`` looks like dark ink on a light background.

    The border (outer 10% frame) is background in a picture of a digit; when
    it is brighter than the middle of the range, the ink is dark.

    Examples:
        >>> paper = np.full((50, 50), 240.0); paper[20:30, 20:30] = 10
        >>> needs_inversion(paper), needs_inversion(255 - paper)
        (True, False)
    """
    height, width = gray.shape
    band = max(1, min(height, width) // 10)
    border = np.concatenate(
        [gray[:band].ravel(), gray[-band:].ravel(), gray[:, :band].ravel(), gray[:, -band:].ravel()]
    )
    low, high = float(gray.min()), float(gray.max())
    return float(np.median(border)) > (low + high) / 2


def _stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width of a binary mask: 2 * area / boundary length."""
    area = int(ink.sum())
    if area == 0:
        return 0.0
    padded = np.pad(ink, 1)
    interior = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    boundary = max(1, area - int(interior.sum()))
    return 2.0 * area / boundary


def local_background(ink: np.ndarray, grid: int = 24, window: int = 7) -> np.ndarray:
    """The paper's own level under each pixel of an ink image (ink bright): a low percentile around it.

    The picture is shrunk to ``grid`` pixels on its longest side; there, the
    25th percentile of each ``window`` x ``window`` neighbourhood (about a third
    of the picture) is paper wherever at least a quarter of it is, so pen
    strokes do not count; it is smoothly enlarged back.

    Examples:
        >>> yy, xx = np.mgrid[0:100, 0:100]
        >>> page = xx * 0.6                    # lighting: 0 on the left, 60 on the right
        >>> page[40:60, 48:52] += 150          # a stroke
        >>> flat = page - local_background(page)
        >>> float(np.abs(flat[:, :30]).max()) < 10, float(flat[50, 50]) > 120
        (True, True)
    """
    height, width = ink.shape
    factor = grid / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small = Image.fromarray(np.asarray(ink, dtype=np.float32), mode="F").resize(size, Image.Resampling.BOX)
    low = small.filter(ImageFilter.RankFilter(window, window * window // 4))
    return np.asarray(low.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def mnist_style(gray: np.ndarray, *, invert: Invert = "auto") -> np.ndarray:
    """uint8 ``(28, 28)`` MNIST-style pixels from a float ``(H, W)`` grayscale picture.

    Args:
        gray (np.ndarray): luminance in 0..255, any size (see :func:`to_grayscale`).
        invert (bool|str, optional): ``'auto'`` detects dark-on-light pictures
            (:func:`needs_inversion`); ``True``/``False`` force it. Default: ``'auto'``.

    Raises:
        ImageError: the picture is blank (no digit to find).

    Examples:
        >>> digit = np.zeros((28, 28)); digit[4:24, 12:16] = 255     # an MNIST-style "1"
        >>> out = mnist_style(digit)
        >>> out.shape, int(out[:, 14].max())
        ((28, 28), 255)
    """
    if invert not in ("auto", True, False):
        raise ConfigError(f"invert must be 'auto', True or False. Received: invert={invert!r}")
    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2:
        raise ImageError(f"Expected a 2-D grayscale array. Received: shape={gray.shape}")
    if max(gray.shape) > WORK_SIZE:  # a 12 MP photo holds no more digit than 1024 px do
        factor = WORK_SIZE / max(gray.shape)
        size = (max(1, round(gray.shape[1] * factor)), max(1, round(gray.shape[0] * factor)))
        gray = np.asarray(Image.fromarray(gray, mode="F").resize(size, Image.Resampling.BOX), dtype=np.float32)
    if invert == "auto":
        invert = needs_inversion(gray)
    ink = 255.0 - gray if invert else gray.copy()
    if min(ink.shape) >= 64:  # photos: remove sensor/paper speckle before measuring
        ink = np.asarray(Image.fromarray(ink, mode="F").filter(ImageFilter.MedianFilter(3)), dtype=np.float32)
    if min(ink.shape) >= 64:  # photos: lighting falls off across the page
        ink = np.clip(ink - local_background(ink), 0.0, None)
    background = float(np.median(ink))
    level = float(ink.max())  # robust: speckle was median-filtered away
    if level - background < 16:
        raise ImageError(
            "No digit found: the image is blank or has almost no contrast "
            f"(ink {level:.0f} vs background {background:.0f} of 255). Expected one digit, darker or lighter "
            "than its background."
        )
    ink = np.clip((ink - background) / (level - background), 0.0, 1.0)
    ink[ink < 0.2] = 0.0  # paper texture, shadows
    rows, cols = np.nonzero(ink >= 0.35)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    crop_image = Image.fromarray(np.uint8(np.round(ink[top:bottom, left:right] * 255)), mode="L")
    if max(crop_image.size) > 4 * DIGIT_BOX:  # measure and thicken strokes at 4x the final size
        factor = 4 * DIGIT_BOX / max(crop_image.size)
        size = (max(1, round(crop_image.width * factor)), max(1, round(crop_image.height * factor)))
        crop_image = crop_image.resize(size, Image.Resampling.LANCZOS)
    crop = np.asarray(crop_image, dtype=np.float32) / 255.0
    width = _stroke_width(crop >= 0.5)
    wanted = STROKE_WIDTH * max(crop.shape) / DIGIT_BOX  # MNIST's stroke width, in pixels of the crop
    if width and width < 0.6 * wanted:  # a thin pen: grow the strokes (a max filter of odd size)
        grow = min(round(wanted - width) | 1, 2 * (max(crop.shape) // 8) + 1)
        if grow >= 3:
            crop_image = ImageOps.expand(crop_image, grow // 2, 0).filter(ImageFilter.MaxFilter(grow))
    new_w = max(1, round(crop_image.width * DIGIT_BOX / max(crop_image.size)))
    new_h = max(1, round(crop_image.height * DIGIT_BOX / max(crop_image.size)))
    small = np.asarray(crop_image.resize((new_w, new_h), Image.Resampling.LANCZOS), dtype=np.float32)
    small = np.clip(small, 0, None)
    if small.max() > 0:
        small = np.clip(small * (255.0 / small.max()), 0, 255)
    total = small.sum()
    ys, xs = np.indices(small.shape)
    cy, cx = (ys * small).sum() / total, (xs * small).sum() / total
    top = int(np.clip(round(CENTRE - cy), 0, SIZE - new_h))
    left = int(np.clip(round(CENTRE - cx), 0, SIZE - new_w))
    out = np.zeros((SIZE, SIZE), dtype=np.float32)
    out[top : top + new_h, left : left + new_w] = small
    return np.uint8(np.round(out))


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
    pixels = mnist_style(to_grayscale(image), invert=invert)
    return ((pixels.astype(np.float32) - MEAN) / STD).reshape(1, 1, SIZE, SIZE)
