"""How MNIST framed a digit: 20 pixels on its longest side, centred by mass in a 28x28 field.

Both sides of the library frame digits this way: the recipe's glyph copies
(:mod:`paddle_mnist_hapi.data.glyphs`) and the preprocessing of a picture for
``predict`` and ``serve`` (:mod:`paddle_mnist_hapi.deploy.mnist_digit`). One
definition keeps what the network is trained on and what it is shown in the
same place of the field.

Examples:
    >>> from PIL import Image
    >>> bar = Image.fromarray(np.full((40, 10), 255, np.uint8))   # 40 px tall, 10 wide
    >>> small = scale_to_box(bar)
    >>> small.shape                                             # 20 px on the longest side
    (20, 5)
    >>> field = place_by_mass(small)
    >>> field.shape, [round(float(c), 1) for c in mass_centre(field)]   # 14.0 to the nearest pixel
    ((28, 28), [13.5, 14.0])
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["CENTRE", "DIGIT_BOX", "SIZE", "mass_centre", "place_by_mass", "scale_to_box"]

#: MNIST's field, and the box its digits were scaled to fit (aspect ratio kept).
SIZE, DIGIT_BOX = 28, 20
#: Where MNIST digits have their centre of mass (row and column of the training set: 13.99, 14.00).
CENTRE = 14.0


def scale_to_box(image: Image.Image) -> np.ndarray:
    """``image`` (mode ``L``) resized with Lanczos so its longest side is :data:`DIGIT_BOX` pixels; float32,
    clipped at 0 (Lanczos rings below it)."""
    longest = max(image.size)
    size = (max(1, round(image.width * DIGIT_BOX / longest)), max(1, round(image.height * DIGIT_BOX / longest)))
    return np.clip(np.asarray(image.resize(size, Image.Resampling.LANCZOS), dtype=np.float32), 0, None)


def mass_centre(image: np.ndarray) -> tuple[float, float]:
    """The centre of mass ``(row, column)`` of a non-blank 2-D image."""
    rows, cols = np.indices(image.shape)
    total = float(image.sum())
    return float((rows * image).sum()) / total, float((cols * image).sum()) / total


def place_by_mass(small: np.ndarray, centre: float = CENTRE) -> np.ndarray:
    """uint8 ``(28, 28)``: ``small`` (0..255, at most 28 a side) placed so that its centre of mass falls on
    ``centre`` (row and column; MNIST's by default), to the nearest pixel and inside the field; an empty
    field when ``small`` is blank.

    Examples:
        >>> int(place_by_mass(np.zeros((20, 20))).sum())
        0
    """
    height, width = small.shape
    if not small.any():
        return np.zeros((SIZE, SIZE), dtype=np.uint8)
    row, col = mass_centre(small)
    top = int(np.clip(round(centre - row), 0, SIZE - height))
    left = int(np.clip(round(centre - col), 0, SIZE - width))
    out = np.zeros((SIZE, SIZE), dtype=np.float32)
    out[top : top + height, left : left + width] = small
    return np.uint8(np.round(out))
