"""``Augment``: random handwriting variation for whole batches, in numpy, seeded.

MNIST digits are size-normalized and centred, written with one kind of pen;
digits users photograph are slanted, squashed, thicker or thinner, blurred. A
model that only ever saw MNIST learns MNIST. :class:`Augment` varies each
training image the way handwriting varies:

* an affine warp: rotation, isotropic scale and aspect, shear (slant), translation;
* an elastic distortion in the spirit of Simard, Steinkraus and Platt (2003):
  a smooth random displacement field, drawn on a coarse grid and upsampled;
* stroke width: a fractional grey-level dilation or erosion, and an extra
  dilation of up to a few pixels (``thicken``: a marker's strokes);
* blur: a fractional 3x3 binomial blur;
* soften: a Gaussian blur of a random width (a photo out of focus);
* lowres: resampling through a coarser grid and back (a small scan enlarged).

The two warps are one bilinear gather over the whole batch (no per-image PIL,
no Python loop over images); stroke and blur are shifted-slice maxima, minima
and sums; soften and lowres are small matrix products. For a batch of 128 this
costs a few percent of a LeNet-5 training step on CPU (``python
bench/augment_cost.py`` measures the ratio).

Randomness comes only from the ``numpy.random.Generator`` passed in: the
global RNGs are never touched. :class:`~paddle_mnist_hapi.data.InMemoryLoader`
seeds one generator per batch from ``(seed, epoch, the batch's sample
indices)``, so a batch is augmented the same way whenever it is replayed, for
example by ``ResumeCkpt`` after a kill, with no RNG state to save.

Examples:
    >>> import numpy as np
    >>> from paddle_mnist_hapi.data import MNIST
    >>> images = MNIST("test", limit=8).images
    >>> out = Augment()(images, np.random.default_rng(0))
    >>> out.shape, out.dtype, bool(out.min() >= -1.0 and out.max() <= 1.0)
    ((8, 1, 28, 28), dtype('float32'), True)
    >>> bool((Augment()(images, np.random.default_rng(0)) == out).all())  # same generator seed, same batch
    True
"""

from __future__ import annotations

import math
from dataclasses import Field, dataclass, fields, replace

import numpy as np

from paddle_mnist_hapi.data.dataset import MEAN, STD
from paddle_mnist_hapi.errors import ConfigError

__all__ = ["Augment"]

SIZE = 28
_CENTRE = (SIZE - 1) / 2.0


def _upsample_matrix(coarse: int, size: int = SIZE) -> np.ndarray:
    """``(size, coarse)`` bilinear interpolation weights from a coarse grid spanning the image."""
    positions = np.linspace(0.0, coarse - 1.0, size)
    low = np.clip(np.floor(positions).astype(np.int64), 0, coarse - 2)
    frac = positions - low
    matrix = np.zeros((size, coarse), dtype=np.float32)
    matrix[np.arange(size), low] = 1.0 - frac
    matrix[np.arange(size), low + 1] = frac
    return matrix


def _strengths() -> list[Field]:
    return [f for f in fields(Augment) if f.name not in ("start_epoch", "ramp_epochs")]


def _neighbour_stack(ink: np.ndarray, fill: float) -> np.ndarray:
    """The image and its four neighbours (a plus-shaped window), stacked on a new first axis."""
    padded = np.pad(ink, ((0, 0), (1, 1), (1, 1)), constant_values=fill)
    return np.stack(
        [
            padded[:, 1:-1, 1:-1],
            padded[:, :-2, 1:-1],
            padded[:, 2:, 1:-1],
            padded[:, 1:-1, :-2],
            padded[:, 1:-1, 2:],
        ]
    )


@dataclass(frozen=True)
class Augment:
    """Random affine + elastic + stroke-width + blur + resolution variation of normalized MNIST batches.

    Each field is the largest change drawn, uniformly (elastic: the standard
    deviation of the displacement). ``Augment(0, 0, 0, 0, 0, 0, 0, 0)`` changes nothing.

    Args:
        rotate (float, optional): rotation in degrees, +-. Default: 10.
        scale (float, optional): relative size change, +- (0.1 is 90%..110%). Default: 0.05.
        aspect (float, optional): relative width/height change, +-. Default: 0.1.
        shear (float, optional): horizontal shear (slant) as a slope, +-. Default: 0.25.
        translate (float, optional): shift in pixels, +-, each axis. Default: 1.0.
        elastic (float, optional): displacement in pixels (standard deviation
            on a 4x4 control grid, bilinearly upsampled: smooth, local). Default: 0.8.
        stroke (float, optional): stroke-width change in one-pixel dilations (thicker) or
            erosions (thinner), +-; fractions blend, above 1 the dilation is repeated
            (erosion stops at one pixel: more would erase MNIST's strokes). Default: 0.6.
        blur (float, optional): largest blend towards a 3x3 binomial blur, 0..1. Default: 0.5.
        start_epoch (int, optional): no augmentation before this epoch. Default: 0.
        ramp_epochs (int, optional): reach full strength this many epochs after
            ``start_epoch``, growing linearly (see :meth:`at_epoch`). Default: 0.
        thicken (float, optional): extra dilation in pixels, 0..``thicken``, added to
            the ``stroke`` change (a marker's strokes, without thinner ones). Default: 0.
        soften (float, optional): largest Gaussian blur, its sigma in pixels (out of focus). Default: 0.
        lowres (float, optional): largest resolution loss: the image is resampled
            through a grid of ``28 * (1 - lowres)`` pixels at the smallest and enlarged back
            (bilinear), below 1. Default: 0.

    Raises:
        ConfigError: a negative or non-finite strength, ``blur`` above 1, or a bad ``start_epoch``/``ramp_epochs``.

    Examples:
        >>> Augment(rotate=15).rotate, Augment.none().elastic
        (15, 0.0)
        >>> [Augment(start_epoch=2, ramp_epochs=1).at_epoch(e).rotate for e in range(5)]
        [0.0, 0.0, 5.0, 10.0, 10.0]
        >>> digit = np.full((1, 1, 28, 28), -1.0, np.float32)  # normalized like MNIST: paper -1, ink 1
        >>> digit[0, 0, 6:22, 13:15] = 1.0  # a thin vertical stroke: a 1
        >>> marker = replace(Augment.none(), thicken=2.0, soften=1.0, lowres=0.5)  # thick, soft, coarse
        >>> out = marker(digit, np.random.default_rng(0))
        >>> int((out > 0).sum()) > int((digit > 0).sum()), bool(np.isclose(out.max(), digit.max(), atol=1e-3))
        (True, True)
    """

    rotate: float = 10.0
    scale: float = 0.05
    aspect: float = 0.1
    shear: float = 0.25
    translate: float = 1.0
    elastic: float = 0.8
    stroke: float = 0.6
    blur: float = 0.5
    start_epoch: int = 0
    ramp_epochs: int = 0
    thicken: float = 0.0
    soften: float = 0.0
    lowres: float = 0.0

    def __post_init__(self) -> None:
        for name in ("start_epoch", "ramp_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"Augment.{name} must be an integer >= 0. Received: {name}={value!r}")
        for field in _strengths():
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(
                    f"Augment.{field.name} must be a finite number >= 0 (0 turns it off). "
                    f"Received: {field.name}={value!r}"
                )
        if self.scale >= 1 or self.aspect >= 1 or self.lowres >= 1:
            raise ConfigError(
                f"Augment.scale, Augment.aspect and Augment.lowres must be below 1 (a relative change). "
                f"Received: scale={self.scale!r}, aspect={self.aspect!r}, lowres={self.lowres!r}"
            )
        if self.blur > 1:
            raise ConfigError(f"Augment.blur is a blend weight from 0 to 1. Received: blur={self.blur!r}")

    @classmethod
    def none(cls) -> Augment:
        """An ``Augment`` that changes nothing (every strength 0)."""
        return cls(**{field.name: 0.0 for field in _strengths()})

    def at_epoch(self, epoch: int) -> Augment:
        """The strengths used in ``epoch``: 0 before ``start_epoch``, then ``(epoch - start_epoch + 1) /
        (ramp_epochs + 1)`` of each, up to full.

        Examples:
            >>> [Augment(start_epoch=1).at_epoch(e).shear for e in (0, 1, 5)]
            [0.0, 0.25, 0.25]
        """
        factor = min(1.0, max(0, epoch - self.start_epoch + 1) / (self.ramp_epochs + 1))
        if factor == 1.0:
            return self
        scaled = {f.name: getattr(self, f.name) * factor for f in _strengths()}
        return replace(self, **scaled, start_epoch=0, ramp_epochs=0)

    @property
    def is_identity(self) -> bool:
        """True when every strength is 0 (the batch passes through unchanged)."""
        return all(getattr(self, f.name) == 0 for f in _strengths())

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The augmented copy of a float32 ``(B, 1, 28, 28)`` batch normalized like ``MNIST`` (background -1).

        Draws from ``rng`` only; the input is not modified.
        """
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1:] != (1, SIZE, SIZE):
            raise ConfigError(f"Augment takes (B, 1, 28, 28) image batches. Received: shape={images.shape}")
        batch = len(images)
        if batch == 0 or self.is_identity:
            return images.copy()
        ink = images.reshape(batch, SIZE, SIZE) * (STD / 255.0) + (MEAN / 255.0)  # 0 background .. 1 ink
        ink = self._warp(ink, rng)
        ink = self._stroke(ink, rng)
        ink = self._blur(ink, rng)
        ink = self._soften(ink, rng)
        ink = self._lowres(ink, rng)
        out = np.clip(ink, 0.0, 1.0) * (255.0 / STD) - (MEAN / STD)
        return out.astype(np.float32).reshape(batch, 1, SIZE, SIZE)

    # ----------------------------------------------------------------- parts
    def _warp(self, ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        batch = len(ink)

        def uniform(limit: float) -> np.ndarray:
            values = rng.uniform(-limit, limit, batch) if limit else np.zeros(batch)
            return values.astype(np.float32)

        angle = np.deg2rad(uniform(self.rotate))
        scale, aspect = 1.0 + uniform(self.scale), 1.0 + uniform(self.aspect)
        shear, shift = uniform(self.shear), (uniform(self.translate), uniform(self.translate))
        coarse = rng.standard_normal((batch, 2, 4, 4)) * self.elastic if self.elastic else None

        # the inverse map: for each output pixel, where to read the input (y, x around the centre)
        def per_image(values: np.ndarray) -> np.ndarray:
            return values[:, None, None]

        grid = np.arange(SIZE, dtype=np.float32) - np.float32(_CENTRE)
        y = grid[None, :, None] / per_image(scale / aspect)  # undo the size change (height, width)
        x = grid[None, None, :] / per_image(scale * aspect)
        x = x + per_image(shear) * y  # undo the slant: x shifts with the row
        cos, sin = per_image(np.cos(angle)), per_image(np.sin(angle))
        src_y = cos * y - sin * x + _CENTRE - per_image(shift[0])
        src_x = sin * y + cos * x + _CENTRE - per_image(shift[1])
        if coarse is not None:
            up = _upsample_matrix(4)
            field = up @ coarse.astype(np.float32) @ up.T  # (B, 2, 28, 28)
            src_y = src_y + field[:, 0]
            src_x = src_x + field[:, 1]
        return _bilinear(ink, src_y, src_x)

    def _stroke(self, ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not self.stroke and not self.thicken:
            return ink
        amount = rng.uniform(-self.stroke, self.stroke, len(ink))
        if self.thicken:
            amount = amount + rng.uniform(0.0, self.thicken, len(ink))
        amount = np.maximum(amount, -1.0)[:, None, None]  # at most one erosion
        while True:  # whole dilations first, then the fraction that is left
            window = _neighbour_stack(ink, 0.0)
            target = np.where(amount > 0, window.max(axis=0), window.min(axis=0))
            step = np.minimum(np.abs(amount), 1.0)
            ink = ink + step * (target - ink)
            amount = np.where(amount > 1.0, amount - 1.0, 0.0)
            if not amount.any():
                return ink

    def _blur(self, ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not self.blur:
            return ink
        amount = rng.uniform(0.0, self.blur, len(ink))[:, None, None]
        padded = np.pad(ink, ((0, 0), (1, 1), (1, 1)))
        rows = 0.25 * padded[:, :-2] + 0.5 * padded[:, 1:-1] + 0.25 * padded[:, 2:]
        blurred = 0.25 * rows[:, :, :-2] + 0.5 * rows[:, :, 1:-1] + 0.25 * rows[:, :, 2:]
        return ink + amount * (blurred - ink)

    def _soften(self, ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not self.soften:
            return ink
        sigma = rng.uniform(0.0, self.soften, len(ink))
        offsets = np.arange(SIZE, dtype=np.float32)
        distance = offsets[:, None] - offsets[None, :]
        kernel = np.exp(-0.5 * (distance[None] / np.maximum(sigma, 1e-3)[:, None, None]) ** 2)
        kernel /= kernel.sum(axis=2, keepdims=True)  # (B, 28, 28): rows of a Gaussian, zero outside
        return _same_peak(ink, kernel @ ink @ kernel.transpose(0, 2, 1))

    def _lowres(self, ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not self.lowres:
            return ink
        sides = np.round(SIZE * (1.0 - rng.uniform(0.0, self.lowres, len(ink)))).astype(int)
        out = ink.copy()
        for side in np.unique(sides):
            if side >= SIZE:
                continue
            chosen = sides == side
            down, up = _area_matrix(side), _upsample_matrix(side)  # (side, 28) and (28, side)
            out[chosen] = up @ (down @ ink[chosen] @ down.T) @ up.T
        return _same_peak(ink, out)


def _same_peak(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """``after`` scaled so each image's brightest ink is as bright as ``before``'s (as preprocessing
    stretches a picture's contrast, a softened digit is not a fainter one)."""
    peak = after.max(axis=(1, 2), keepdims=True)
    return (after * (before.max(axis=(1, 2), keepdims=True) / np.maximum(peak, 1e-6))).astype(np.float32)


def _area_matrix(side: int, size: int = SIZE) -> np.ndarray:
    """``(side, size)`` weights that average ``size`` pixels into ``side`` (a box filter, as a scanner)."""
    edges = np.linspace(0.0, size, side + 1)
    starts, ends = edges[:-1, None], edges[1:, None]
    pixels = np.arange(size, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(ends, pixels + 1) - np.maximum(starts, pixels), 0.0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def _bilinear(ink: np.ndarray, src_y: np.ndarray, src_x: np.ndarray) -> np.ndarray:
    """Sample ``ink`` (B, 28, 28) at fractional positions, zero outside: one gather for the whole batch.

    The images get a zero border; positions are clipped onto it, so every
    read is in bounds and reads outside the image are 0 with no masks.
    """
    batch = len(ink)
    side = SIZE + 3  # one zero row/column before, two after
    padded = np.zeros((batch, side, side), dtype=np.float32)
    padded[:, 1 : SIZE + 1, 1 : SIZE + 1] = ink
    src_y = np.clip(src_y, -1.0, float(SIZE))
    src_x = np.clip(src_x, -1.0, float(SIZE))
    y0, x0 = np.floor(src_y), np.floor(src_x)
    wy, wx = src_y - y0, src_x - x0
    base = (np.arange(batch)[:, None, None] * side + (y0.astype(np.int64) + 1)) * side + (x0.astype(np.int64) + 1)
    flat = padded.reshape(-1)
    top = flat[base] + wx * (flat[base + 1] - flat[base])
    bottom = flat[base + side] + wx * (flat[base + side + 1] - flat[base + side])
    return top + wy * (bottom - top)
