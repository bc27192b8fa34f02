"""Ways of writing a digit that MNIST rarely shows, drawn onto copies of its own training digits.

MNIST's 1s are nearly all a bare stroke. Much of the world writes a 1 with a
flag at the top: a network that saw MNIST alone reads such a 1 as a 7 or a 9
(``docs/generalisation.md``). :func:`flagged_ones` gives copies of a share of
the training 1s a flag (a short stroke down to the left from the top of the
stem, as wide as the stem; optionally a foot too) and frames them as MNIST
framed a digit: 20 pixels on the longest side, centred by mass in 28x28. The
recipe adds the copies to its training set (``TrainConfig.flag_ones``);
MNIST's own 1s stay as they are (flagging them in place lost MNIST's thick
bare 1s, read as 8 afterwards).

Examples:
    >>> from paddle_mnist_hapi.data import MNIST
    >>> data = MNIST("train", limit=200)
    >>> images, labels = flagged_ones(data.raw_images, data.labels, share=0.5, seed=0)
    >>> images.shape[1:], images.dtype, bool((labels == 1).all()), bool(0 < len(images) < (data.labels == 1).sum())
    ((28, 28), dtype('uint8'), True, True)
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from paddle_mnist_hapi.data.framing import SIZE, place_by_mass, scale_to_box
from paddle_mnist_hapi.errors import ConfigError

__all__ = ["FLAG_SEED", "add_flagged_ones", "flag_one", "flagged_ones"]

FLAG_SEED = 123  # the copies are data, the same in every run (the training seed varies the training, not them)
_SCALE = 4  # strokes are drawn at 4x and brought back down with the rest of the digit
_FLAG_LENGTH = (0.18, 0.35)  # of the stem's height
_FLAG_ANGLE = (30.0, 65.0)  # degrees below the horizontal, towards the left
_FOOT_LENGTH = (0.15, 0.3)  # of the stem's height, each side of the stem's foot
# The copies' centre of mass: the field's middle, half a pixel up and left of MNIST's own (14.0). Moved to
# 14.0 the recipe's model read the picture matrix 0.4 points worse, mean of two training seeds
# (docs/generalisation.md, round 4), so the copies stay where round 3 measured them.
_COPY_CENTRE = (SIZE - 1) / 2


def flag_one(image: np.ndarray, rng: np.random.Generator, foot: float = 0.0) -> np.ndarray | None:
    """A copy of the 28x28 ``image`` of a 1 (uint8, light on dark) with a flag, and with probability ``foot``
    a foot; None if it has too little ink to find the stem.

    Examples:
        >>> one = np.zeros((28, 28), np.uint8); one[4:24, 13:16] = 255
        >>> flagged = flag_one(one, np.random.default_rng(0))
        >>> int(flagged[:10, :12].sum()) > int(one[:10, :12].sum())  # ink up and to the left: the flag
        True
    """
    size = SIZE * _SCALE
    big = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    ys, xs = np.nonzero(big > 128)
    if len(ys) < 20:
        return None
    top, bottom = int(ys.min()), int(ys.max())
    height = bottom - top
    x_top, x_bottom = xs[ys < top + 2 * _SCALE].mean(), xs[ys > bottom - 2 * _SCALE].mean()
    middle = (ys > top + 0.3 * height) & (ys < top + 0.7 * height)
    width = max(float(_SCALE), middle.sum() / max(1, len(np.unique(ys[middle]))))  # ink per row: the stem
    layer = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(layer)
    length = rng.uniform(*_FLAG_LENGTH) * height
    angle = math.radians(rng.uniform(*_FLAG_ANGLE))
    end_x, end_y = x_top - length * math.cos(angle), top + length * math.sin(angle)
    draw.line([(x_top, top + width / 2), (end_x, end_y)], fill=255, width=round(width))
    draw.ellipse([end_x - width / 2, end_y - width / 2, end_x + width / 2, end_y + width / 2], fill=255)
    if rng.random() < foot:
        half, foot_y = rng.uniform(*_FOOT_LENGTH) * height, bottom - width / 2
        draw.line([(x_bottom - half, foot_y), (x_bottom + half, foot_y)], fill=255, width=round(width))
    strokes = np.asarray(layer.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float32)  # MNIST's soft edges
    ink = np.maximum(big, strokes)
    ys, xs = np.nonzero(ink > 25)
    return _mnist_frame(ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] / 255.0)


def _mnist_frame(crop: np.ndarray) -> np.ndarray:
    """``crop`` (0..1) framed as MNIST framed a digit (:mod:`~paddle_mnist_hapi.data.framing`), its ink as it
    is, its centre of mass on ``_COPY_CENTRE``."""
    image = Image.fromarray(np.uint8(np.round(np.clip(crop, 0, 1) * 255)))
    return place_by_mass(np.minimum(scale_to_box(image), 255), centre=_COPY_CENTRE)


def flagged_ones(
    images: np.ndarray, labels: np.ndarray, share: float, seed: int = FLAG_SEED, foot: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Flagged copies (:func:`flag_one`) of a ``share`` of the 1s among ``images`` (uint8 ``(N, 28, 28)``),
    chosen and drawn from ``seed``; returns ``(images, labels)`` of the copies alone, in the order of the
    originals.

    Raises:
        ConfigError: ``share`` or ``foot`` is not between 0 and 1.
    """
    for name, value in (("share", share), ("foot", foot)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name} must be a fraction between 0 and 1. Received: {name}={value!r}")
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    copies = []
    for index in np.nonzero(labels == 1)[0]:
        if rng.random() < share and (flagged := flag_one(images[index], rng, foot)) is not None:
            copies.append(flagged)
    out = np.stack(copies) if copies else np.zeros((0, SIZE, SIZE), np.uint8)
    return out, np.ones(len(out), dtype=labels.dtype)


def add_flagged_ones(images: np.ndarray, labels: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
    """``images`` and ``labels`` (flat) with :func:`flagged_ones`' copies appended; unchanged when ``share`` is 0.

    Examples:
        >>> images, labels = np.zeros((4, 28, 28), np.uint8), np.array([0, 1, 2, 3])
        >>> [len(part) for part in add_flagged_ones(images, labels, 0.5)]  # this 1 has no ink: no copy
        [4, 4]
    """
    copies, copy_labels = flagged_ones(images, labels, share)
    labels = np.asarray(labels).reshape(-1)
    if not len(copies):
        return images, labels
    return np.concatenate([images, copies]), np.concatenate([labels, copy_labels])
