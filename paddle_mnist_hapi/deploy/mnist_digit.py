"""Find the one handwritten digit in a picture and draw it as MNIST did (28x28, light on dark).

MNIST digits are light strokes on a black background, scaled so the digit
fits a 20x20 box (aspect ratio kept) and centred by centre of mass in a 28x28
field. :func:`find_digit` does the same to any grayscale picture, measuring
each picture before choosing what to do with it:

1. **polarity**: the outer rim of a picture of a digit is paper; when it is
   lighter than the middle of the range, the ink is dark and the picture is
   inverted to MNIST's light-on-dark (:func:`needs_inversion`);
2. **paper level**: the level of the paper under every pixel is estimated
   from paper pixels only, ink masked out (:func:`paper_level`), so a digit that
   fills the frame with thick soft strokes is never taken for paper. Where that
   level is the same all over (``varies`` False: flat lighting), one level is
   subtracted; where it varies (a lighting gradient, a shadow, blotches), the
   level under every pixel is subtracted (that estimate, or where the light
   changes in a step, such as a shadow's edge, a grey opening wider than the
   strokes: :func:`sharp_paper_level`) and the ink's contrast divided by the
   light that fell on it;
3. **marks**: the ink is split into connected marks (:func:`find_marks`); the
   digit is the largest mark with the marks close to it (a 5's detached flag);
   specks and marks far away are left out. Several digit-sized marks side by
   side, a mark that is a line or a solid block, or ink that covers the
   picture are reported in :attr:`DigitPicture.problem`;
4. **stroke and size**: a thin pen is thickened and a marker thinned to
   MNIST's stroke width, the longest side scaled to 20 pixels, and the digit
   placed so that its centre of mass is the centre of the 28x28 field.

Examples:
    >>> from PIL import Image, ImageDraw
    >>> photo = Image.new("L", (200, 300), 255)          # white paper
    >>> ImageDraw.Draw(photo).line([(100, 40), (100, 260)], fill=0, width=20)  # a dark "1"
    >>> digit = find_digit(np.asarray(photo, dtype=np.float32))
    >>> digit.pixels.shape, int(digit.pixels[14, 14]) > 200, int(digit.pixels[0, 0]), digit.inverted, digit.problem
    ((28, 28), True, 0, True, None)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from paddle_mnist_hapi.data.framing import DIGIT_BOX, place_by_mass, scale_to_box
from paddle_mnist_hapi.errors import ConfigError, ImageError

__all__ = [
    "DIGIT_BOX",
    "Background",
    "DigitPicture",
    "Marks",
    "components",
    "find_digit",
    "find_marks",
    "needs_inversion",
    "paper_level",
    "sharp_paper_level",
    "stroke_width",
]

#: Larger pictures are first scaled down to this longest side.
WORK_SIZE = 1024
#: MNIST's mean stroke width in pixels of the 28x28 image, as ``stroke_width`` measures it.
STROKE_WIDTH = 2.9
THIN_ABOVE = 1.6
THIN_TO = 1.3
#: The paper level "varies" when its estimate spans more than this share of the ink's contrast.
VARIES = 0.08
#: The paper's level is measured pixel by pixel only when ink covers less than this share of the picture.
LOCAL_INK_BELOW = 0.3
#: Ink at or above this share of the ink's contrast belongs to a mark.
MARK_LEVEL = 0.35
#: The window of the grey opening that follows sharp changes of light: this many stroke widths, plus 3 px.
OPENING_STROKES = 2.5

Background = Literal["auto", "global", "local"]
Invert = bool | Literal["auto"]


@dataclass(frozen=True)
class DigitPicture:
    """What :func:`find_digit` made of a picture: the MNIST-style pixels and what it measured.

    Attributes:
        pixels (np.ndarray): uint8 ``(28, 28)``, light digit on black.
        inverted (bool): the picture was dark ink on light paper.
        background (str): ``'global'`` (one paper level) or ``'local'`` (the level under every pixel).
        ink_fraction (float): the share of the picture covered by the digit's marks.
        marks (int): digit-sized marks found side by side (1 for one digit).
        problem (str|None): why the picture does not look like one digit, or None.
    """

    pixels: np.ndarray
    inverted: bool
    background: str
    ink_fraction: float
    marks: int
    problem: str | None = None


def needs_inversion(gray: np.ndarray) -> bool:
    """True when ``gray`` looks like dark ink on a light background (see :func:`polarity`).

    Examples:
        >>> paper = np.full((50, 50), 240.0); paper[20:30, 20:30] = 10
        >>> needs_inversion(paper), needs_inversion(255 - paper)
        (True, False)
        >>> lit = paper * np.linspace(0.3, 1.0, 50)[None, :]   # the left side in shadow, darker than the ink
        >>> needs_inversion(lit)
        True
    """
    return polarity(gray) > 0


def polarity(gray: np.ndarray) -> float:
    """How clearly ``gray`` is dark ink on light paper (> 0) or light ink on a dark ground (< 0); -1..1.

    Two independent cues, each -1..1, averaged:

    - *most of a picture is paper*: after the lighting is flattened (a Gaussian
      average of a sixth of the picture subtracted), the ink is the far tail on
      the other side of the median from the paper;
    - *the rim is paper*: the picture departs furthest from the level
      interpolated from its rim (:func:`rim_surface`) on the ink's side.

    Examples:
        >>> paper = np.full((50, 50), 240.0); paper[20:30, 20:30] = 10
        >>> round(polarity(paper), 2), round(polarity(255 - paper), 2)
        (0.82, -0.82)
    """
    small = _thumbnail(np.asarray(gray, dtype=np.float32), 64)
    sigma = 0.15 * max(small.shape)
    flat = small - _blur(small, sigma) / _blur(np.ones_like(small), sigma)
    middle = float(np.median(flat))
    low, high = np.percentile(flat, [0.5, 99.5])
    majority = ((middle - low) - (high - middle)) / max(1e-6, high - low)
    departure = small - rim_surface(small)
    low, high = np.percentile(departure, [0.5, 99.5])
    rim = (-low - high) / max(1e-6, high - low)
    return float((majority + rim) / 2)


def _thumbnail(image: np.ndarray, longest: int) -> np.ndarray:
    """``image`` shrunk (box filter) to at most ``longest`` pixels on its longest side, float64."""
    height, width = image.shape
    factor = min(1.0, longest / max(height, width))
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return _resize(image, size, Image.Resampling.BOX).astype(np.float64)


def rim_surface(image: np.ndarray) -> np.ndarray:
    """The paper's level inside a picture, interpolated from its rim (a Coons patch).

    Each side's profile is the median across the outer 3% (at least one
    pixel), smoothed by a running median over a fifth of the side, so a digit
    that touches the edge in a few places does not count; the four profiles
    are blended bilinearly, which reproduces a linear lighting gradient exactly.

    Examples:
        >>> ramp = np.tile(np.linspace(50, 200, 40), (30, 1))
        >>> bool(np.abs(rim_surface(ramp) - ramp).max() < 1e-6)
        True
    """
    image = np.asarray(image, dtype=np.float64)
    height, width = image.shape
    band = max(1, round(0.03 * min(height, width)))
    top = _running_median(np.median(image[:band], axis=0))
    bottom = _running_median(np.median(image[-band:], axis=0))
    left = _running_median(np.median(image[:, :band], axis=1))
    right = _running_median(np.median(image[:, -band:], axis=1))
    corners = [
        (top[0] + left[0]) / 2,
        (top[-1] + right[0]) / 2,
        (bottom[0] + left[-1]) / 2,
        (bottom[-1] + right[-1]) / 2,
    ]
    u = np.linspace(0.0, 1.0, width)[None, :]
    v = np.linspace(0.0, 1.0, height)[:, None]
    return (
        (1 - v) * top[None, :] + v * bottom[None, :] + (1 - u) * left[:, None] + u * right[:, None]
        - ((1 - u) * (1 - v) * corners[0] + u * (1 - v) * corners[1] + (1 - u) * v * corners[2] + u * v * corners[3])
    )  # fmt: skip


def _running_median(profile: np.ndarray) -> np.ndarray:
    """The median of every window of a fifth of the profile (at least 3 values), centred, edges repeated."""
    window = max(3, len(profile) // 5) | 1
    if len(profile) < window:
        return np.full(len(profile), float(np.median(profile)))
    half = window // 2
    padded = np.pad(profile, half, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, window), axis=1)


def stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width of a binary mask: 2 * area / boundary length.

    Examples:
        >>> ink = np.zeros((20, 20), dtype=bool); ink[2:18, 8:12] = True  # a bar 4 pixels wide
        >>> round(stroke_width(ink), 2)
        3.56
    """
    area = int(ink.sum())
    if area == 0:
        return 0.0
    padded = np.pad(ink, 1)
    interior = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    boundary = max(1, area - int(interior.sum()))
    return 2.0 * area / boundary


def _resize(image: np.ndarray, size: tuple[int, int], method: Image.Resampling) -> np.ndarray:
    """A float image resized to ``size`` = (width, height)."""
    return np.asarray(Image.fromarray(np.asarray(image, dtype=np.float32), mode="F").resize(size, method), np.float32)


def _blur(values: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a small array (zero outside), as two matrix products."""

    def kernel(n: int) -> np.ndarray:
        index = np.arange(n, dtype=np.float64)
        return np.exp(-0.5 * ((index[:, None] - index[None, :]) / sigma) ** 2)

    return kernel(values.shape[0]) @ values @ kernel(values.shape[1]).T


def _grow(mask: np.ndarray) -> np.ndarray:
    """The mask grown by one pixel (8 neighbours)."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= grown[:, :-1].copy()
    grown[:, :-1] |= grown[:, 1:].copy()
    return grown


def _threshold(values: np.ndarray) -> float:
    """Otsu's threshold: the level that best splits ``values`` into two classes."""
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-6:
        return high
    counts, edges = np.histogram(values, bins=64, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)
    mean = np.cumsum(counts * centres)
    total, total_mean = weight[-1], mean[-1]
    below, above = weight[:-1], total - weight[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mean * below / total - mean[:-1]) ** 2 / (below * above)
    return float(edges[1:][np.nanargmax(np.where((below > 0) & (above > 0), between, np.nan))])


def paper_level(ink: np.ndarray, grid: int = 48, smooth: float = 12) -> tuple[np.ndarray, bool, float]:
    """The paper's own level under each pixel of an ink image (ink bright), and whether it varies.

    Estimated on a ``grid``-pixel thumbnail from paper pixels only: pixels that
    stand out of a first guess of the paper (Otsu's split of the whole
    thumbnail, then of what stands above the estimate) are ink, and they and
    their neighbours are left out of a Gaussian-weighted average of the rest
    (a normalized convolution, sigma a sixth of the picture). However much of
    the picture the ink covers, ink never becomes "paper" this way, so a
    frame-filling marker digit is not hollowed. ``varies`` is True when the
    estimate spans more than ``VARIES`` (8%) of the ink's contrast.

    Examples:
        >>> yy, xx = np.mgrid[0:100, 0:100]
        >>> page = xx * 0.6                    # lighting: 0 on the left, 60 on the right
        >>> page[40:60, 48:52] += 150          # a stroke
        >>> level, varies, ink_share = paper_level(page)
        >>> flat = page - level
        >>> float(np.abs(flat[:, :30]).max()) < 10, float(flat[50, 50]) > 120, varies, ink_share < 0.1
        (True, True, True, True)
        >>> blob = np.zeros((60, 40)); blob[3:57, 4:36] = 200        # ink fills the frame
        >>> level, varies, ink_share = paper_level(blob)
        >>> float(level.max()) < 20, varies, ink_share > 0.5
        (True, False, True)
    """
    ink = np.asarray(ink, dtype=np.float32)
    height, width = ink.shape
    small = _thumbnail(ink, grid)
    sigma = max(small.shape) / smooth
    level = rim_surface(small)  # a first guess that no ink can reach: the rim is paper
    rim = np.ones(small.shape, dtype=bool)
    band = max(1, round(0.03 * min(small.shape)))
    rim[band:-band, band:-band] = False
    for _ in range(2):
        above = small - level
        paper_rim = above[rim]
        spread = 1.4826 * float(np.median(np.abs(paper_rim - np.median(paper_rim))))  # the paper's own texture
        is_ink = above > max(0.3 * float(np.percentile(above, 99.5)), 4 * spread, 2.0)
        paper = ~_grow(is_ink)
        if paper.sum() < 0.05 * paper.size:  # almost no paper left: keep the pixels furthest from the ink
            paper = ~is_ink if (~is_ink).any() else small <= np.percentile(small, 10)
        weight = _blur(paper.astype(np.float64), sigma)
        level = _blur(np.where(paper, small, 0.0), sigma) / np.maximum(weight, 1e-12)
    contrast = max(1.0, float(np.percentile(small, 99.5)) - float(np.median(level)))
    spread = float(np.percentile(level, 97) - np.percentile(level, 3))
    full = _resize(level, (width, height), Image.Resampling.BILINEAR)
    return full, spread > VARIES * contrast, float(is_ink.mean())


def sharp_paper_level(ink: np.ndarray, smooth: np.ndarray) -> np.ndarray:
    """The paper's level under each pixel of an ink image (ink bright), also where the light changes sharply.

    ``smooth`` (:func:`paper_level`'s estimate) cannot follow a step in the
    light: beside a shadow's edge it leaves a band that reads as ink, and joins
    a faint digit. A grey opening of the ink image (a minimum, then a maximum
    filter, over a square ``OPENING_STROKES`` stroke widths + 3 px wide) removes
    every stroke narrower than its window and keeps a step of any sharpness;
    where the light curves (a vignette) it falls below the paper, and there
    ``smooth`` is right. The larger of the two is the level.

    Examples:
        >>> page = np.zeros((120, 120), np.float32); page[:, 60:] = 80   # a shadow's edge (ink bright)
        >>> page[30:90, 30:34] += 150; page[30:90, 86:90] += 150         # a stroke on each side
        >>> smooth = paper_level(page)[0]
        >>> float((page - smooth)[:, 50:70].max()) > 20     # the smooth level leaves a band of "ink" at the edge
        True
        >>> flat = page - sharp_paper_level(page, smooth)
        >>> float(flat[:, 50:70].max()) < 1, float(flat[60, 31]) > 140, float(flat[60, 87]) > 140
        (True, True, True)
    """
    from scipy import ndimage  # here: only pictures whose light varies need it

    above = ink - smooth
    width = stroke_width(above > MARK_LEVEL * max(1.0, float(np.percentile(above, 99.9)))) or 3.0
    size = int(OPENING_STROKES * width + 3) | 1
    opened = ndimage.maximum_filter(ndimage.minimum_filter(ink, size), size)
    return np.maximum(opened, smooth)


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels (1..n; 0 outside the mask) of the 4-connected regions of a boolean mask, and n.

    Examples:
        >>> labels, count = components(np.array([[1, 1, 0, 1], [0, 0, 0, 1]], dtype=bool))
        >>> labels.tolist(), count
        ([[1, 1, 0, 2], [0, 0, 0, 2]], 2)
    """
    mask = np.asarray(mask, dtype=bool)
    size = mask.size
    labels = np.where(mask, np.arange(size).reshape(mask.shape), size)
    down, right = mask[:-1, :] & mask[1:, :], mask[:, :-1] & mask[:, 1:]
    while True:  # every pixel takes the smallest label among its neighbours, then that label's label
        low = labels.copy()
        np.minimum(low[1:, :], np.where(down, labels[:-1, :], size), out=low[1:, :])
        np.minimum(low[:-1, :], np.where(down, labels[1:, :], size), out=low[:-1, :])
        np.minimum(low[:, 1:], np.where(right, labels[:, :-1], size), out=low[:, 1:])
        np.minimum(low[:, :-1], np.where(right, labels[:, 1:], size), out=low[:, :-1])
        flat = low.ravel()
        inside = flat < size
        flat[inside] = flat[flat[inside]]
        if np.array_equal(low, labels):
            break
        labels = low
    roots, dense = np.unique(labels[mask], return_inverse=True)
    out = np.zeros(mask.shape, dtype=np.int32)
    out[mask] = dense.reshape(-1) + 1
    return out, len(roots)


@dataclass(frozen=True)
class Marks:
    """The ink of a picture split into marks: which pixels are the digit, and what else was seen.

    Attributes:
        digit (np.ndarray): boolean mask of the digit's marks (the picture's size).
        box (tuple): ``(top, bottom, left, right)`` of the digit, bottom/right exclusive.
        side_by_side (int): digit-sized groups of marks beside one another (1 for one digit).
        ink_fraction (float): the share of the picture the digit's marks cover.
        problem (str|None): why this does not look like one digit, or None.
    """

    digit: np.ndarray
    box: tuple[int, int, int, int]
    side_by_side: int
    ink_fraction: float
    problem: str | None


def find_marks(ink: np.ndarray, level: float = MARK_LEVEL) -> Marks:
    """Split normalized ink (0..1) into marks and pick the digit's.

    Marks are the connected regions at or above ``level``, found on a copy of
    at most 256 pixels a side; specks (under 2% of the largest mark's size) are
    dropped. Marks whose boxes lie within a fifth of the tallest mark's height
    of each other form one group; the digit is the group with the most ink,
    among the groups inside the picture when one of them has a tenth of the
    ink of the heaviest (a group cut by the picture's edge is then a shadow's
    edge or the page's corner, not the digit).
    Other groups on the same line, at least half as tall and with a fifth of
    its ink, are more digits; a group that is a line (more than 3 times wider
    than tall) or a solid block is not a digit.

    Raises:
        ImageError: nothing reaches ``level``.

    Examples:
        >>> ink = np.zeros((40, 80)); ink[5:35, 10:14] = 1; ink[5:35, 50:54] = 1   # "1 1"
        >>> marks = find_marks(ink)
        >>> marks.side_by_side, marks.problem
        (2, 'several separate marks side by side (2): write one digit per picture')
        >>> ink = np.zeros((100, 100)); ink[:, 94:] = 1; ink[40:70, 30:34] = 1   # a shadow's edge, and a "1"
        >>> marks = find_marks(ink)
        >>> marks.box, marks.problem   # the 1, not the heavier band the picture's edge cuts
        ((40, 70, 30, 34), None)
    """
    height, width = ink.shape
    step = max(1, int(np.ceil(max(height, width) / 256)))
    padded = np.pad(ink, ((0, -height % step), (0, -width % step)))
    blocks = padded.reshape(padded.shape[0] // step, step, padded.shape[1] // step, step)
    mask = (blocks > 0).any(axis=(1, 3))  # any ink in a block keeps it: no connection is lost
    labels, count = components(mask)
    strong = np.zeros(count + 1, dtype=bool)  # hysteresis: a mark must reach ``level`` somewhere
    strong[np.unique(labels[(blocks >= level).any(axis=(1, 3))])] = True
    strong[0] = False
    labels = np.where(strong[labels], labels, 0)
    labels, count = components(labels > 0)
    if count == 0:
        raise ImageError("No digit found: no ink stands out of the background. Expected one digit.")
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    mass = np.bincount(labels.ravel(), weights=blocks.mean(axis=(1, 3)).ravel(), minlength=count + 1)[1:]
    kept = np.nonzero(sizes >= 0.02 * sizes.max())[0]  # specks are noise
    rows, cols = np.nonzero(labels)
    which = labels[rows, cols] - 1
    top, bottom = np.full(count, mask.shape[0]), np.zeros(count, dtype=int)
    left, right = np.full(count, mask.shape[1]), np.zeros(count, dtype=int)
    np.minimum.at(top, which, rows)
    np.maximum.at(bottom, which, rows + 1)
    np.minimum.at(left, which, cols)
    np.maximum.at(right, which, cols + 1)
    top, bottom, left, right, mass = top[kept], bottom[kept], left[kept], right[kept], mass[kept]
    # marks within reach of each other are parts of one digit (a 5's flag, a 4 in two strokes)
    reach = 0.2 * float((bottom - top).max())
    gap_y = np.maximum(top[:, None], top[None, :]) - np.minimum(bottom[:, None], bottom[None, :])
    gap_x = np.maximum(left[:, None], left[None, :]) - np.minimum(right[:, None], right[None, :])
    near = np.maximum(gap_x, gap_y) <= reach
    group = np.arange(len(kept))
    for _ in range(len(kept)):  # each pass joins neighbours' groups; stops when nothing changes
        joined = np.where(near, group[None, :], len(kept)).min(axis=1)
        if np.array_equal(joined, group):
            break
        group = joined[joined]
    names = np.unique(group)
    group_mass = np.array([mass[group == g].sum() for g in names])
    boxes = [(top[group == g].min(), bottom[group == g].max(), left[group == g].min(), right[group == g].max())
             for g in names]  # fmt: skip
    # a group cut by the picture's edge (a shadow's edge, the page's corner) is the digit only when no
    # group inside the picture has a tenth of its ink; then it is not counted as another digit either
    cut = np.array([t0 == 0 or l0 == 0 or b0 >= mask.shape[0] or r0 >= mask.shape[1] for t0, b0, l0, r0 in boxes])
    inside = np.where(cut, 0.0, group_mass)
    main = int(np.argmax(inside)) if inside.max() >= 0.1 * group_mass.max() else int(np.argmax(group_mass))
    t, b = boxes[main][:2]
    beside = 1 + sum(
        1
        for k, (t2, b2, _, _) in enumerate(boxes)
        if k != main
        and (cut[main] or not cut[k])
        and b2 - t2 >= 0.5 * (b - t)
        and group_mass[k] >= 0.2 * group_mass[main]
        and min(b, b2) - max(t, t2) >= 0.3 * min(b - t, b2 - t2)  # on the same line
    )
    chosen = np.isin(labels, kept[group == names[main]] + 1)
    digit = np.repeat(np.repeat(chosen, step, axis=0), step, axis=1)[:height, :width] & (ink > 0)
    strong = digit & (ink >= level)
    rows, cols = np.nonzero(strong if strong.any() else digit)
    box = (int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1)
    box_h, box_w = box[1] - box[0], box[3] - box[2]
    ink_fraction = float(strong.sum()) / strong.size
    solid = float(strong[box[0] : box[1], box[2] : box[3]].mean())
    problem = None
    if beside > 1:
        problem = f"several separate marks side by side ({beside}): write one digit per picture"
    elif box_w > 3 * box_h:
        problem = f"the ink is a wide line ({box_w}x{box_h} px), not a digit"
    elif solid > 0.9 and box_h < 2.5 * box_w:
        problem = f"the ink is a solid block ({solid:.0%} filled), not a digit"
    elif ink_fraction > 0.6:
        problem = f"ink covers {ink_fraction:.0%} of the picture, not one digit on a background"
    return Marks(digit, box, beside, round(ink_fraction, 4), problem)


def find_digit(gray: np.ndarray, *, invert: Invert = "auto", background: Background = "auto") -> DigitPicture:
    """The MNIST-style digit in a float ``(H, W)`` grayscale picture, and what was measured on the way.

    Args:
        gray (np.ndarray): luminance in 0..255, any size.
        invert (bool|str, optional): ``'auto'`` detects dark-on-light pictures
            (:func:`needs_inversion`); ``True``/``False`` force it. Default: ``'auto'``.
        background (str, optional): ``'auto'`` subtracts one paper level where it is
            the same all over and the level under every pixel where it varies
            (:func:`paper_level`); ``'global'`` always subtracts the median of the
            picture (the plain method, kept for comparison), ``'local'`` always the
            level under every pixel. Default: ``'auto'``.

    Raises:
        ImageError: the picture is blank (no digit to find).

    Examples:
        >>> digit = np.zeros((28, 28)); digit[4:24, 12:16] = 255     # an MNIST-style "1"
        >>> out = find_digit(digit).pixels
        >>> out.shape, int(out[:, 14].max())
        ((28, 28), 255)
    """
    if invert not in ("auto", True, False):
        raise ConfigError(f"invert must be 'auto', True or False. Received: invert={invert!r}")
    if background not in ("auto", "global", "local"):
        raise ConfigError(f"background must be 'auto', 'global' or 'local'. Received: background={background!r}")
    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2:
        raise ImageError(f"Expected a 2-D grayscale array. Received: shape={gray.shape}")
    if max(gray.shape) > WORK_SIZE:  # a 12 MP photo holds no more digit than 1024 px do
        factor = WORK_SIZE / max(gray.shape)
        size = (max(1, round(gray.shape[1] * factor)), max(1, round(gray.shape[0] * factor)))
        gray = _resize(gray, size, Image.Resampling.BOX)
    inverted = polarity(gray) > 0 if invert == "auto" else bool(invert)
    return _find_digit_as(gray, inverted, background)


def _find_digit_as(gray: np.ndarray, inverted: bool, background: Background) -> DigitPicture:
    ink = 255.0 - gray if inverted else gray.copy()
    if min(ink.shape) >= 64:  # photos: remove sensor/paper speckle before measuring
        ink = np.asarray(Image.fromarray(ink, mode="F").filter(ImageFilter.MedianFilter(3)), dtype=np.float32)
    level = float(np.percentile(ink, 99.9))  # the ink (speckle was median-filtered away)
    if background == "global":
        paper, used = np.float32(np.median(ink)), "global"
    else:
        estimate, varies, ink_share = paper_level(ink)
        # the level under every pixel only where it varies and the ink leaves enough paper to measure it
        local = background == "local" or (varies and ink_share < LOCAL_INK_BELOW)
        if local:
            paper, used = sharp_paper_level(ink, estimate), "local"
        else:
            paper, used = np.float32(np.median(estimate)), "global"
    contrast = level - float(np.median(paper))
    if contrast < 16:
        raise ImageError(
            "No digit found: the image is blank or has almost no contrast "
            f"(ink {level:.0f} vs background {float(np.median(paper)):.0f} of 255). Expected one digit, darker "
            "or lighter than its background."
        )
    above = ink - paper
    if used == "local" and inverted:  # dark ink: its contrast is proportional to the light on the paper
        above = above / np.maximum(255.0 - paper, 16.0) * (255.0 - float(np.median(paper)))
    ink = np.clip(above / max(1.0, float(np.percentile(above, 99.9))), 0.0, 1.0)
    ink[ink < 0.2] = 0.0  # paper texture, shadows
    marks = find_marks(ink)
    ink = np.where(marks.digit, ink, 0.0)
    top, bottom, left, right = marks.box
    pixels = _mnist_box(ink[top:bottom, left:right])
    return DigitPicture(pixels, inverted, used, marks.ink_fraction, marks.side_by_side, marks.problem)


def _mnist_box(crop: np.ndarray) -> np.ndarray:
    """The cropped digit (0..1) at MNIST's stroke width, 20 px on its longest side, centred by mass in 28x28."""
    crop_image = Image.fromarray(np.uint8(np.round(crop * 255)), mode="L")
    if max(crop_image.size) > 4 * DIGIT_BOX:  # measure and thicken strokes at 4x the final size
        factor = 4 * DIGIT_BOX / max(crop_image.size)
        size = (max(1, round(crop_image.width * factor)), max(1, round(crop_image.height * factor)))
        crop_image = crop_image.resize(size, Image.Resampling.LANCZOS)
    crop = np.asarray(crop_image, dtype=np.float32) / 255.0
    width = stroke_width(crop >= 0.5)
    wanted = STROKE_WIDTH * max(crop.shape) / DIGIT_BOX  # MNIST's stroke width, in pixels of the crop
    if width and width < 0.6 * wanted:  # a thin pen: grow the strokes (a max filter of odd size)
        grow = min(round(wanted - width) | 1, 2 * (max(crop.shape) // 8) + 1)
        if grow >= 3:
            crop_image = ImageOps.expand(crop_image, grow // 2, 0).filter(ImageFilter.MaxFilter(grow))
    elif width > THIN_ABOVE * wanted:  # a marker: thin the strokes (a min filter of odd size)
        shrink = round(width - THIN_TO * wanted) | 1
        if shrink >= 3:
            crop_image = crop_image.filter(ImageFilter.MinFilter(shrink))
    small = scale_to_box(crop_image)
    if small.max() > 0:
        small = np.clip(small * (255.0 / small.max()), 0, 255)
    return place_by_mass(small)
