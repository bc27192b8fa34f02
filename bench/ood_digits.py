"""Digits that are not MNIST, as a matrix of picture kinds: a seeded generator, and a model's accuracy
per cell through the real ``paddle-mnist predict --json``.

    python bench/ood_digits.py write DIR [--n 2160] [--seed 0]               # the image files + labels.json
    python bench/ood_digits.py eval --model PREFIX [--n 2160] [--seed 0]     # accuracy per cell, through the CLI
    python bench/ood_digits.py eval --model PREFIX --markdown                # the same as Markdown tables

What users photograph is not MNIST. Each picture here is made from scratch
(never from MNIST pixels) and must never be trained on. Every picture is one
point of seven explicit axes (``AXES``):

* ``framing``: ``page`` (the digit is 20-35% of the picture's height on a large
  page, 240-480 px), ``margin`` (35-70%, off-centre), ``tight`` (a crop: 70-95%);
* ``stroke``: ``hairline`` (1.5-4% of the digit's height, at least one pixel),
  ``pen`` (6-13%), ``marker`` (18-33%: a blob; narrowed only as far as needed to
  keep the digit's holes open, so a 0, 6, 8 or 9 stays readable to a person);
* ``softness``: ``sharp`` (anti-aliased edges only), ``lowres`` (the picture
  scanned with the digit 8-64 px tall and enlarged back), ``blur`` (Gaussian,
  sigma 3-8% of the digit's height: out of focus);
* ``polarity``: ``dark-on-light`` (ink on paper) or ``light-on-dark`` (chalk on a board);
* ``lighting``: ``flat`` or ``uneven`` (a light gradient, vignetting, blotches,
  sometimes a shadow edge or faint ruled lines);
* ``colour``: ``grey`` (an 'L' image) or ``colour`` (coloured ink, tinted paper and light);
* ``format``: ``png`` or ``jpeg`` (quality 40-90).

Every combination of the first three (27 cells) gets ``n / 27`` pictures, and
inside each of them the 16 combinations of the last four are balanced (exactly,
when ``n / 27`` is a multiple of 16), as are the ten classes (a multiple of 10).
The digit itself is drawn by a pen-stroke model (3 in 4: per class several
skeletons, a smooth random warp of the plane, slant, rotation, aspect) or set
in a TrueType font (1 in 4; not at hairline width), with uneven ink and noise.

The set is a pure function of ``(n, seed)`` (and of the fonts installed: the
manifest names each picture's font). ``eval`` writes the set to a temporary
directory, runs ``python -m paddle_mnist_hapi.cli predict --json --model PREFIX``
on the files and prints one JSON object: the accuracy overall, per cell of the
27-cell grid (``cells``), per combination of the other four axes
(``conditions``), per level of every axis (``levels``), per class, the worst
cell, and the expected calibration error of the confidences the CLI printed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from paddle_mnist_hapi.deploy.calibrate import expected_calibration_error  # noqa: E402
from paddle_mnist_hapi.deploy.mnist_digit import components as _components  # noqa: E402
from paddle_mnist_hapi.deploy.mnist_digit import stroke_width as _stroke_width  # noqa: E402

FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype/liberation")
FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSansMono.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansCondensed.ttf", "DejaVuSans-ExtraLight.ttf",
    "LiberationSans-Regular.ttf", "LiberationSans-Italic.ttf", "LiberationSerif-Regular.ttf",
    "LiberationMono-Regular.ttf", "LiberationSansNarrow-Regular.ttf", "LiberationSerif-BoldItalic.ttf",
)  # fmt: skip

#: The axes of the matrix and their levels.
AXES: dict[str, tuple[str, ...]] = {
    "framing": ("page", "margin", "tight"),
    "stroke": ("hairline", "pen", "marker"),
    "softness": ("sharp", "lowres", "blur"),
    "polarity": ("dark-on-light", "light-on-dark"),
    "lighting": ("flat", "uneven"),
    "colour": ("grey", "colour"),
    "format": ("png", "jpeg"),
}
#: Every combination of these is a cell of the grid (27 cells).
GRID = ("framing", "stroke", "softness")
#: Every combination of these is balanced inside each grid cell (16 conditions).
BALANCED = ("polarity", "lighting", "colour", "format")
GRID_CELLS = list(itertools.product(*(AXES[a] for a in GRID)))
CONDITIONS = list(itertools.product(*(AXES[a] for a in BALANCED)))
#: The default set: 80 pictures per grid cell (5 of each condition, 8 of each class).
DEFAULT_N = len(GRID_CELLS) * 80
SUPERSAMPLE = 4

Point = tuple[float, float]
Stroke = list[Point]


# --------------------------------------------------------------------------- pen-stroke skeletons
def _arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, n: int = 24) -> Stroke:
    """Points on an ellipse; angles in degrees, y down (0 right, 90 bottom, -90 top)."""
    angles = np.deg2rad(np.linspace(start, end, n))
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


def _bezier(p0: Point, p1: Point, p2: Point, n: int = 16) -> Stroke:
    t = np.linspace(0.0, 1.0, n)[:, None]
    points = (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(p1) + t**2 * np.asarray(p2)
    return [tuple(p) for p in points]


# Each digit: a list of variants, each a list of strokes in a unit box (x right, y down, height 1).
SKELETONS: dict[int, list[list[Stroke]]] = {
    0: [[_arc(0.5, 0.5, 0.3, 0.48, -95, 275)], [_arc(0.5, 0.5, 0.36, 0.48, -60, 305)]],
    1: [
        [[(0.5, 0.0), (0.5, 1.0)]],
        [[(0.28, 0.22), (0.52, 0.0), (0.52, 1.0)]],
        [[(0.3, 0.2), (0.52, 0.0), (0.52, 1.0)], [(0.3, 1.0), (0.74, 1.0)]],
    ],
    2: [
        [[*_arc(0.5, 0.3, 0.3, 0.28, 195, 375), (0.18, 1.0), (0.84, 1.0)]],
        [_arc(0.48, 0.28, 0.3, 0.27, 200, 390) + _bezier((0.75, 0.42), (0.3, 0.75), (0.18, 1.0)) + [(0.85, 0.98)]],
        [[*_arc(0.5, 0.3, 0.3, 0.28, 195, 375), (0.2, 0.96), *_arc(0.3, 0.92, 0.1, 0.08, 270, 0, 8)[1:], (0.85, 1.0)]],
    ],
    3: [
        [_arc(0.48, 0.26, 0.28, 0.25, 200, 450) + _arc(0.48, 0.75, 0.32, 0.25, -90, 160)],
        [[(0.2, 0.0), (0.78, 0.0), (0.42, 0.42), *_arc(0.48, 0.7, 0.32, 0.29, -100, 160)]],
    ],
    4: [
        [[(0.62, 0.0), (0.12, 0.66), (0.88, 0.66)], [(0.64, 0.3), (0.64, 1.0)]],
        [[(0.22, 0.0), (0.2, 0.6), (0.85, 0.6)], [(0.68, 0.05), (0.68, 1.0)]],
    ],
    5: [
        [[(0.8, 0.0), (0.28, 0.0), (0.24, 0.45)], _arc(0.48, 0.68, 0.32, 0.3, -150, 150)],
        [[(0.26, 0.0), (0.22, 0.46), *_arc(0.48, 0.68, 0.32, 0.3, -150, 150)], [(0.26, 0.0), (0.82, 0.0)]],
    ],
    6: [
        [_bezier((0.75, 0.02), (0.18, 0.25), (0.2, 0.72)) + _arc(0.48, 0.72, 0.28, 0.26, 180, 530)],
        [[(0.7, 0.0), (0.25, 0.55), *_arc(0.5, 0.74, 0.27, 0.25, 210, 560)]],
    ],
    7: [
        [[(0.15, 0.0), (0.85, 0.0), (0.38, 1.0)]],
        [[(0.15, 0.0), (0.85, 0.0), (0.4, 1.0)], [(0.34, 0.52), (0.78, 0.52)]],
        [[(0.14, 0.16), (0.16, 0.0), (0.86, 0.02), *_bezier((0.86, 0.02), (0.55, 0.4), (0.5, 1.0))]],
    ],
    8: [
        [_arc(0.5, 0.26, 0.24, 0.25, 0, 360), _arc(0.5, 0.74, 0.3, 0.26, 0, 360)],
        [_arc(0.5, 0.25, 0.25, 0.25, 90, 450)[::-1] + _arc(0.5, 0.74, 0.3, 0.26, -90, 270)],
    ],
    9: [
        [_arc(0.46, 0.3, 0.28, 0.28, 0, 365), [(0.74, 0.28), (0.7, 1.0)]],
        [_arc(0.46, 0.3, 0.28, 0.28, 10, 370) + _bezier((0.74, 0.34), (0.78, 0.85), (0.38, 1.0))],
    ],
}


class Sample(NamedTuple):
    """One generated picture, what it shows and where it sits in the matrix."""

    image: Image.Image
    label: int
    conditions: dict[str, str]  # one level of every axis in AXES
    kind: str  # "pen" or "font"
    font: str | None
    quality: int | None  # JPEG quality; None for PNG
    fill: float  # the digit's height / the picture's height
    stroke_ratio: float  # stroke width / the digit's height


def _fonts() -> list[str]:
    found = [os.path.join(d, f) for d in FONT_DIRS for f in FONT_FILES if os.path.exists(os.path.join(d, f))]
    return sorted(set(found))


def cell_name(conditions: dict[str, str], axes: tuple[str, ...] = GRID) -> str:
    """``'page/hairline/sharp'``: the levels of ``axes``, joined.

    Examples:
        >>> cell_name(conditions(0, 0))
        'page/hairline/sharp'
    """
    return "/".join(conditions[a] for a in axes)


def conditions(index: int, seed: int) -> dict[str, str]:
    """The levels of every axis for the ``index``-th picture of the set ``seed``.

    Pictures go round the 27 grid cells; the ``k``-th picture of a cell takes the
    ``k``-th condition of a seeded shuffle of the 16, reshuffled every 16.

    Examples:
        >>> [conditions(i, 0)["framing"] for i in (0, 9, 18, 27)]
        ['page', 'margin', 'tight', 'page']
    """
    cell = index % len(GRID_CELLS)
    k = index // len(GRID_CELLS)
    order = np.random.default_rng([seed, cell, k // len(CONDITIONS), 1]).permutation(len(CONDITIONS))
    condition = CONDITIONS[int(order[k % len(CONDITIONS)])]
    return dict(zip(GRID, GRID_CELLS[cell], strict=True)) | dict(zip(BALANCED, condition, strict=True))


def label_of(index: int, seed: int) -> int:
    """The class of the ``index``-th picture: the classes go round inside every grid cell."""
    cell = index % len(GRID_CELLS)
    offset = int(np.random.default_rng([seed, cell, 2]).integers(10))
    return (index // len(GRID_CELLS) + offset) % 10


# --------------------------------------------------------------------------- the digit's shape


def _distort(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Slant, rotation, aspect and a smooth random warp of the unit-box skeleton (the hand's variation)."""
    centred = points - 0.5
    slant = rng.uniform(-0.35, 0.35)
    angle = math.radians(rng.uniform(-12, 12))
    aspect = rng.uniform(0.7, 1.3)
    x, y = centred[:, 0] * aspect, centred[:, 1]
    x = x - slant * y
    x, y = x * math.cos(angle) - y * math.sin(angle), x * math.sin(angle) + y * math.cos(angle)
    for _ in range(2):  # low-frequency wobble: the hand is not a plotter
        fx, fy, px, py = rng.uniform(1.5, 4.0), rng.uniform(1.5, 4.0), rng.uniform(0, 6.3), rng.uniform(0, 6.3)
        amplitude = rng.uniform(0.0, 0.035)
        x, y = x + amplitude * np.sin(fy * y * 6.3 + py), y + amplitude * np.sin(fx * x * 6.3 + px)
    return np.stack([x, y], axis=1)


def _pen_layer(strokes: list[np.ndarray], height: float, width: float) -> Image.Image:
    """An 'L' layer with the strokes (centred unit-height coordinates) drawn ``height`` px tall, ``width`` px wide."""
    pad = width + 4
    points = [s * height for s in strokes]
    low = np.min([p.min(axis=0) for p in points], axis=0) - pad
    high = np.max([p.max(axis=0) for p in points], axis=0) + pad
    layer = Image.new("L", (math.ceil(high[0] - low[0]), math.ceil(high[1] - low[1])), 0)
    draw = ImageDraw.Draw(layer)
    for stroke in points:
        xy = [tuple(p - low) for p in stroke]
        draw.line(xy, fill=255, width=max(1, round(width)), joint="curve")
        r = width / 2
        for px, py in (xy[0], xy[-1]):  # round pen ends
            draw.ellipse([px - r, py - r, px + r, py + r], fill=255)
    return layer


def _font_layer(
    label: int, font_path: str | None, height: float, width: float, rng: np.random.Generator
) -> Image.Image:
    """An 'L' layer with the digit set in a font, about ``height`` px tall, strokes about ``width`` px wide."""
    probe = 200
    font = ImageFont.truetype(font_path, probe) if font_path else ImageFont.load_default(probe)
    box = font.getbbox(str(label), anchor="mm")
    size = max(8, round(probe * height / max(1, box[3] - box[1])))
    font = ImageFont.truetype(font_path, size) if font_path else ImageFont.load_default(size)
    canvas = size * 2
    layer = Image.new("L", (canvas, canvas), 0)
    ImageDraw.Draw(layer).text((size, size), str(label), fill=255, font=font, anchor="mm")
    natural = _stroke_width(np.asarray(layer) > 127)
    if width > natural + 1:  # thicker than the font: an outline of the missing width
        layer = Image.new("L", (canvas, canvas), 0)
        outline = round((width - natural) / 2)
        ImageDraw.Draw(layer).text(
            (size, size), str(label), fill=255, font=font, anchor="mm", stroke_width=outline, stroke_fill=255
        )
    layer = layer.crop(layer.getbbox() or (0, 0, 1, 1))
    if width < 0.8 * natural:  # thinner: erode (only from pen-width fonts; hairline cells have no fonts)
        layer = ImageOps.expand(layer, 2, 0)
        strokes = _shape(np.asarray(layer) / 255.0, 0.5)[0]
        for _ in range(round((natural - width) / 2)):  # only as far as the glyph stays whole
            thinner = layer.filter(ImageFilter.MinFilter(3))
            if _shape(np.asarray(thinner) / 255.0, 0.5)[0] > strokes:  # a bold font's hairlines would vanish
                break
            layer = thinner
    slant, angle = rng.uniform(-0.3, 0.3), rng.uniform(-10, 10)
    pad = layer.height // 2 + 2  # room to slant and rotate into
    layer = ImageOps.expand(layer, pad, 0)
    centre = layer.height / 2
    layer = layer.transform(layer.size, Image.Transform.AFFINE, (1, slant, -slant * centre, 0, 1, 0))
    layer = layer.rotate(angle, resample=Image.Resampling.BILINEAR)
    return layer.crop(layer.getbbox() or (0, 0, 1, 1))


def _holes(layer: Image.Image, smallest: int) -> int:
    """Background regions enclosed by ink (the holes of a 0, 6, 8, 9 ...) of at least ``smallest`` pixels."""
    paper = np.pad(np.asarray(layer) <= 127, 1, constant_values=True)
    labels, count = _components(paper)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    outside = labels[0, 0]
    return int(sum(1 for k in range(1, count + 1) if k != outside and sizes[k] >= smallest))


def _shape(coverage: np.ndarray, level: float) -> tuple[int, int]:
    """``(strokes, holes)`` a person sees in ``coverage`` (0..1) at ``level``, on a copy at most 96 px a
    side: the connected marks and the enclosed background regions, each counted when it has at least 1%
    of the digit's box area (specks and pinholes are not seen)."""
    coverage = np.asarray(coverage, dtype=np.float32)
    factor = min(1.0, 96 / max(coverage.shape))
    if factor < 1:
        size = (max(1, round(coverage.shape[1] * factor)), max(1, round(coverage.shape[0] * factor)))
        coverage = np.asarray(Image.fromarray(coverage, "F").resize(size, Image.Resampling.BOX))
    mask = coverage >= level
    if not mask.any():
        return 0, 0
    rows, cols = np.nonzero(mask)
    smallest = max(2, int(0.01 * (np.ptp(rows) + 1) * (np.ptp(cols) + 1)))
    labels, count = _components(mask)
    strokes = int((np.bincount(labels.ravel(), minlength=count + 1)[1:] >= smallest).sum())
    paper = np.pad(~mask, 1, constant_values=True)
    labels, count = _components(paper)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    holes = sum(1 for k in range(1, count + 1) if k != labels[0, 0] and sizes[k] >= smallest)
    return strokes, holes


def _legible_softness(coverage: np.ndarray, soften: Any, amount: float, limit: float, step: float) -> float:
    """The ``amount`` of softening, moved towards ``limit`` by ``step`` until the digit's holes stay open.

    ``soften(picture, amount)`` softens a float picture; seen at half of its own peak, the softened digit
    must show the holes the sharp digit shows at half contrast: a marker's 8 whose holes fill in is a
    blob, not an 8 (the holes the ``marker`` level keeps open for a person, ``_legible_width``).
    """
    factor = min(1.0, 64 / max(coverage.shape))  # a copy with the digit at most 64 px
    size = (max(1, round(coverage.shape[1] * factor)), max(1, round(coverage.shape[0] * factor)))
    small = np.asarray(Image.fromarray(np.float32(coverage), "F").resize(size, Image.Resampling.BOX))
    picture = np.pad(small, int(np.ceil(0.5 * max(small.shape))))
    wanted = _shape(picture, 0.5)[1]
    scale = factor if soften is _gaussian else 1.0  # a blur's sigma is in pixels, a rescan's factor relative
    for _ in range(40):
        soft = soften(picture, amount * scale)
        if wanted == 0 or _shape(soft, 0.5 * float(soft.max()))[1] >= wanted or abs(amount - limit) < 1e-6:
            return amount
        amount = limit + (amount - limit) * step
    return amount


def _gaussian(picture: np.ndarray, sigma: float) -> np.ndarray:
    image = Image.fromarray(np.uint8(np.round(255 * np.clip(picture, 0, 1))), "L")
    return np.asarray(image.filter(ImageFilter.GaussianBlur(sigma)), dtype=np.float32) / 255.0


def _rescan(picture: np.ndarray, factor: float) -> np.ndarray:
    image = Image.fromarray(np.uint8(np.round(255 * np.clip(picture, 0, 1))), "L")
    small = image.resize(
        (max(1, round(image.width * factor)), max(1, round(image.height * factor))), Image.Resampling.BOX
    )
    return np.asarray(small.resize(image.size, Image.Resampling.BILINEAR), dtype=np.float32) / 255.0


def _legible_width(draw: Any, ratio: float) -> float:
    """The largest stroke ratio up to ``ratio`` that keeps the holes a fine pen shows (at 64 px height)."""
    guard = 64
    smallest = int((0.05 * guard) ** 2)
    wanted = _holes(draw(guard, 0.05 * guard), smallest)
    while ratio > 0.08 and _holes(draw(guard, ratio * guard), smallest) != wanted:
        ratio *= 0.9
    return ratio


def _digit(label: int, kind: str, font: str | None, height: float, ratio: float, rng: np.random.Generator):
    """The digit's coverage (float 0..1, about ``height`` px tall), its stroke ratio after the legibility guard."""
    if kind == "pen":
        variants = SKELETONS[label]
        strokes = variants[int(rng.integers(len(variants)))]
        points = _distort(np.concatenate([np.asarray(s, dtype=np.float64) for s in strokes]), rng)
        split = np.cumsum([len(s) for s in strokes])[:-1]
        parts = np.split(points, split)

        def draw(h: float, w: float) -> Image.Image:
            return _pen_layer(parts, h, w)
    else:
        state = rng.bit_generator.state

        def draw(h: float, w: float) -> Image.Image:
            rng.bit_generator.state = state  # the same slant and rotation at every size
            return _font_layer(label, font, h, w, rng)

    if ratio > 0.15:
        ratio = _legible_width(draw, ratio)
    scale = min(SUPERSAMPLE, 256 / height) if height >= 24 else math.ceil(96 / height)  # anti-aliased edges
    layer = draw(height * scale, max(1.0, ratio * height) * scale)
    layer = layer.crop(layer.getbbox() or (0, 0, 1, 1))
    size = (max(1, round(layer.width / scale)), max(1, round(layer.height / scale)))
    coverage = np.asarray(layer.resize(size, Image.Resampling.BOX), dtype=np.float32) / 255.0
    return coverage, ratio


# --------------------------------------------------------------------------- the picture around it

#: Reflectances (R, G, B) of coloured inks, papers, boards and chalks.
INKS = [(0.08, 0.1, 0.25), (0.1, 0.2, 0.65), (0.65, 0.1, 0.12), (0.1, 0.4, 0.15), (0.3, 0.1, 0.45), (0.3, 0.3, 0.32)]
PAPERS = [(0.92, 0.92, 0.9), (0.95, 0.9, 0.75), (0.97, 0.92, 0.5), (0.8, 0.88, 0.95), (0.78, 0.78, 0.76)]
BOARDS = [(0.1, 0.25, 0.15), (0.07, 0.07, 0.08), (0.15, 0.18, 0.25), (0.2, 0.12, 0.1)]
CHALKS = [(0.9, 0.9, 0.88), (0.95, 0.9, 0.4), (0.95, 0.6, 0.7), (0.6, 0.8, 0.95)]
LIGHTS = [(1.0, 1.0, 1.0), (1.0, 0.9, 0.75), (0.85, 0.92, 1.0)]
LUMA = np.asarray([0.299, 0.587, 0.114])


def _smooth_noise(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    coarse = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    return np.asarray(coarse.resize((shape[1], shape[0]), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0


def _lighting(shape: tuple[int, int], uneven: bool, rng: np.random.Generator) -> np.ndarray:
    """How much light falls on each pixel (1 = full), ``(H, W)``."""
    height, width = shape
    if not uneven:
        return np.ones(shape, dtype=np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy, xx = yy / height, xx / width
    direction = rng.uniform(0, 2 * math.pi)
    ramp = np.cos(direction) * (xx - 0.5) + np.sin(direction) * (yy - 0.5)  # -0.7 .. 0.7
    light = 1.0 - rng.uniform(0.1, 0.45) * (ramp - ramp.min()) / max(1e-6, float(np.ptp(ramp)))
    light -= rng.uniform(0, 0.25) * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * 2  # vignetting
    light -= rng.uniform(0, 0.15) * (_smooth_noise(shape, 4, rng) - 0.5)  # blotches
    if rng.random() < 0.3:  # the edge of a shadow (a hand, a phone) across the page
        angle = rng.uniform(0, 2 * math.pi)
        side = np.cos(angle) * (xx - rng.uniform(0.2, 0.8)) + np.sin(angle) * (yy - rng.uniform(0.2, 0.8))
        light -= rng.uniform(0.1, 0.3) / (1 + np.exp(-side / rng.uniform(0.02, 0.08)))
    return np.clip(light, 0.4, 1.0).astype(np.float32)


def _materials(
    dark_on_light: bool, colour: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(background, ink, light colour)`` reflectances, 3 channels each (equal channels for grey)."""
    if not colour:
        if dark_on_light:
            paper, ink = rng.uniform(0.72, 0.95), rng.uniform(0.03, 0.3)
        else:
            paper, ink = rng.uniform(0.04, 0.25), rng.uniform(0.6, 0.95)
        return np.full(3, paper), np.full(3, ink), np.ones(3)
    while True:
        if dark_on_light:
            paper = np.asarray(PAPERS[int(rng.integers(len(PAPERS)))]) * rng.uniform(0.9, 1.03)
            ink = np.asarray(INKS[int(rng.integers(len(INKS)))]) * rng.uniform(0.6, 1.2)
        else:
            paper = np.asarray(BOARDS[int(rng.integers(len(BOARDS)))]) * rng.uniform(0.7, 1.3)
            ink = np.asarray(CHALKS[int(rng.integers(len(CHALKS)))]) * rng.uniform(0.85, 1.05)
        light = np.asarray(LIGHTS[int(rng.integers(len(LIGHTS)))])
        if abs(float(LUMA @ (paper * light)) - float(LUMA @ (ink * light))) >= 0.35:  # a person sees the digit
            return np.clip(paper, 0, 1), np.clip(ink, 0, 1), light


def make_sample(index: int, seed: int, fonts: list[str] | None = None) -> Sample:
    """The ``index``-th picture of the set ``seed``: a pure function of both (and the fonts).

    Examples:
        >>> a, b = make_sample(3, 0), make_sample(3, 0)
        >>> a.label == b.label and a.image.tobytes() == b.image.tobytes(), a.conditions["framing"]
        (True, 'page')
    """
    levels = conditions(index, seed)
    label = label_of(index, seed)
    rng = np.random.default_rng([seed, index])
    fonts = _fonts() if fonts is None else fonts
    framing, stroke = levels["framing"], levels["stroke"]
    # the digit's height in pixels and its share of the picture's height
    if framing == "page":
        fill, canvas_height = rng.uniform(0.2, 0.35), rng.uniform(240, 480)
    elif framing == "margin":
        fill, canvas_height = rng.uniform(0.35, 0.7), rng.uniform(64, 240)
    else:
        fill = rng.uniform(0.7, 0.95)
        canvas_height = rng.uniform(40, 200) / fill
    digit_height = fill * canvas_height
    low, high = {"hairline": (0.015, 0.04), "pen": (0.06, 0.13), "marker": (0.18, 0.33)}[stroke]
    ratio = rng.uniform(low, high)
    kind = "font" if stroke != "hairline" and rng.random() < 0.25 else "pen"
    font = fonts[int(rng.integers(len(fonts)))] if kind == "font" and fonts else None
    coverage, ratio = _digit(label, kind, font, digit_height, ratio, rng)
    digit_h, digit_w = coverage.shape
    # the canvas, and where the digit sits on it
    height = max(digit_h + 2, round(digit_h / fill))
    if framing == "tight":  # a crop around the digit (a narrow 1 still gets some paper beside it)
        width = max(round(digit_w + rng.uniform(0.04, 0.4) * digit_h), round(digit_h * rng.uniform(0.45, 0.9)))
        margin = 0
    else:  # off-centre, but never closer to the edge than 6% of the picture (a tilted camera keeps it whole)
        width = max(round(height * rng.uniform(0.75, 1.4)), round(digit_w * 1.3) + 4)
        margin = round(0.06 * max(height, width)) + 1
        height, width = max(height, digit_h + 2 * margin), max(width, digit_w + 2 * margin)
    top = int(rng.integers(margin, height - digit_h - margin + 1))
    left = int(rng.integers(margin, width - digit_w - margin + 1))
    alpha = np.zeros((height, width), dtype=np.float32)
    alpha[top : top + digit_h, left : left + digit_w] = coverage
    alpha *= 0.75 + 0.25 * _smooth_noise((height, width), 3, rng)  # uneven ink
    # paper and ink under the light, as a camera would record them
    dark_on_light, in_colour = levels["polarity"] == "dark-on-light", levels["colour"] == "colour"
    paper, ink, tint = _materials(dark_on_light, in_colour, rng)
    uneven = levels["lighting"] == "uneven"
    reflect = paper[None, None] * (1 - alpha[..., None]) + ink[None, None] * alpha[..., None]
    if uneven and dark_on_light and rng.random() < 0.25:  # faint ruled lines on the paper
        spacing = rng.uniform(0.2, 0.35) * height
        yy = np.arange(height, dtype=np.float32)[:, None]
        lines = (np.mod(yy + rng.uniform(0, spacing), spacing) < max(1.0, height / 150)).astype(np.float32)
        reflect = reflect * (1 - rng.uniform(0.04, 0.1) * lines[..., None] * (1 - alpha[..., None]))
    exposure = 255.0 * rng.uniform(0.85, 1.02) / float(max(paper.max(), ink.max()))
    pixels = exposure * _lighting((height, width), uneven, rng)[..., None] * reflect * tint[None, None]
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    if framing != "tight" and rng.random() < 0.4:  # the camera was not square to the page
        d = rng.uniform(0, 0.06, 8) * np.array([width, height] * 4)
        quad = (d[0], d[1], d[2], height - d[3], width - d[4], height - d[5], width - d[6], d[7])
        fill_colour = tuple(int(v) for v in np.median(np.asarray(image).reshape(-1, 3), axis=0))
        image = image.transform((width, height), Image.Transform.QUAD, quad, Image.Resampling.BILINEAR,
                                fillcolor=fill_colour)  # fmt: skip
    softness = levels["softness"]
    # a stroke is never softened below a third of its contrast (a person could no longer see it)
    stroke_px = max(1.0, ratio * digit_h)
    if softness == "lowres":  # scanned small (the digit 8-64 px tall, the stroke >= 0.35 px), enlarged back
        smallest = max(8.0, 0.35 * digit_h / stroke_px)
        largest = max(smallest + 0.5, min(64.0, 0.75 * digit_h))
        scan_height = math.exp(rng.uniform(math.log(smallest), math.log(largest)))
        factor = scan_height / digit_h
        if stroke == "marker":  # rescanned larger if its holes would fill in
            factor = _legible_softness(coverage, _rescan, factor, 1.0, 0.9)
        small = image.resize((max(1, round(width * factor)), max(1, round(height * factor))), Image.Resampling.BOX)
        method = Image.Resampling.BICUBIC if rng.random() < 0.5 else Image.Resampling.BILINEAR
        image = small.resize((width, height), method)
    elif softness == "blur":  # out of focus: sigma 3-8% of the digit's height, at most 1.3 strokes
        sigma = min(digit_h * rng.uniform(0.03, 0.08), 1.3 * stroke_px)
        if stroke == "marker":  # less out of focus if its holes would fill in
            sigma = _legible_softness(coverage, _gaussian, sigma, 0.0, 0.85)
        image = image.filter(ImageFilter.GaussianBlur(sigma))
    noisy = np.asarray(image, dtype=np.float32)
    grain = rng.uniform(1, 6)
    noisy = noisy + rng.normal(0, grain, noisy.shape[:2])[..., None] + rng.normal(0, grain / 3, noisy.shape)
    noisy = np.clip(noisy, 0, 255).astype(np.uint8)
    image = Image.fromarray(noisy, "RGB") if in_colour else Image.fromarray(noisy, "RGB").convert("L")
    quality = int(rng.integers(40, 91)) if levels["format"] == "jpeg" else None
    return Sample(image, label, levels, kind, os.path.basename(font) if font else None, quality,
                  round(digit_h / height, 3), round(ratio, 3))  # fmt: skip


def write(directory: str | os.PathLike[str], n: int = DEFAULT_N, seed: int = 0) -> list[dict[str, Any]]:
    """Write ``n`` pictures and ``labels.json`` (one entry per file) to ``directory``; return the entries."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    fonts = _fonts()
    entries = []
    for index in range(n):
        sample = make_sample(index, seed, fonts)
        name = f"{index:05d}-{sample.label}.{'jpg' if sample.quality else 'png'}"
        if sample.quality:
            sample.image.save(out / name, "JPEG", quality=sample.quality)
        else:
            sample.image.save(out / name, "PNG")
        entries.append(
            {"file": name, "label": sample.label, **sample.conditions, "kind": sample.kind, "font": sample.font,
             "fill": sample.fill, "stroke_ratio": sample.stroke_ratio}
        )  # fmt: skip
    (out / "labels.json").write_text(json.dumps({"seed": seed, "n": n, "images": entries}, indent=1) + "\n")
    return entries


# --------------------------------------------------------------------------- evaluation through the CLI


def predict_files(model: str, files: list[str], env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The CLI's records: ``python -m paddle_mnist_hapi.cli predict --json --model MODEL FILE...``.

    The files go 200 at a time; when the CLI refuses a batch (it stops at the first picture it cannot
    read), the batch is split in halves until the refused picture is found, which counts as not read:
    ``{"label": -1, "confidence": 0.0, "error": ...}``.
    """
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])

    def cli(chunk: list[str]) -> tuple[list[dict[str, Any]] | None, str]:
        command = [sys.executable, "-m", "paddle_mnist_hapi.cli", "predict", "--json", "--model", model, *chunk]
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800, check=False)
        if proc.returncode == 2:
            return None, proc.stderr.strip()[-500:]
        if proc.returncode != 0:
            raise RuntimeError(f"paddle-mnist predict failed ({proc.returncode}): {proc.stderr[-2000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])["predictions"], ""

    def read(chunk: list[str]) -> list[dict[str, Any]]:
        got, error = cli(chunk)
        if got is not None:
            return got
        if len(chunk) == 1:
            return [{"source": chunk[0], "label": -1, "confidence": 0.0, "error": error}]
        half = len(chunk) // 2  # find the refused picture by halves
        return read(chunk[:half]) + read(chunk[half:])

    return [record for start in range(0, len(files), 200) for record in read(files[start : start + 200])]


def _share(flags: np.ndarray) -> float | None:
    return round(float(flags.mean()), 4) if len(flags) else None


def summarize(entries: list[dict[str, Any]], records: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy overall, per grid cell, per condition, per axis level and per class; the worst cell; ECE."""
    labels = np.asarray([e["label"] for e in entries])
    predicted = np.asarray([int(r["label"]) for r in records])
    right = predicted == labels
    confidence = np.asarray([float(r["confidence"]) for r in records])
    uncertain = np.asarray([bool(r.get("uncertain", False)) for r in records])
    result: dict[str, Any] = {"n": len(entries), "accuracy": _share(right)}

    def table(axes: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        names = np.asarray([cell_name(e, axes) for e in entries])
        rows = {}
        for combo in itertools.product(*(AXES[a] for a in axes)):
            chosen = names == "/".join(combo)
            if chosen.any():
                rows["/".join(combo)] = {"accuracy": _share(right[chosen]), "n": int(chosen.sum())}
        return rows

    result["cells"] = table(GRID)
    result["conditions"] = table(BALANCED)
    result["levels"] = {f"{axis}={level}": row for axis in AXES for level, row in table((axis,)).items()}
    every = {**result["cells"], **result["conditions"]}
    worst = min(every, key=lambda name: (every[name]["accuracy"], name))
    result["worst_cell"] = {"cell": worst, **every[worst]}
    result["refused"] = sum(1 for r in records if r.get("error"))
    result["kinds"] = {kind: _share(right[[e["kind"] == kind for e in entries]]) for kind in ("pen", "font")}
    result["per_class_accuracy"] = [_share(right[labels == c]) for c in range(10)]
    result["ece"] = round(expected_calibration_error(confidence, right), 4)
    result["mean_confidence"] = round(float(confidence.mean()), 4)
    result["uncertain"] = _share(uncertain)
    result["accuracy_when_sure"] = _share(right[~uncertain])
    result["errors_flagged_uncertain"] = _share(uncertain[~right])
    return result


def evaluate(model: str, n: int = DEFAULT_N, seed: int = 0, directory: str | None = None) -> dict[str, Any]:
    """The matrix for the exported ``model`` on the set ``(n, seed)``, through ``paddle-mnist predict``."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(directory or tmp)
        manifest = folder / "labels.json"
        written = json.loads(manifest.read_text()) if manifest.is_file() else {}
        if (written.get("seed"), written.get("n")) == (seed, n):  # the same set, written before (--keep DIR)
            entries = written["images"]
        else:
            entries = write(folder, n, seed)
        records = predict_files(model, [str(folder / e["file"]) for e in entries])
    return {"model": model, "set": "bench/ood_digits.py matrix", "seed": seed, **summarize(entries, records)}


def markdown(result: dict[str, Any]) -> str:
    """The grid (framing x stroke rows, softness columns), the conditions and the levels as Markdown tables."""

    def pct(row: dict[str, Any] | None) -> str:
        return "" if not row else f"{100 * row['accuracy']:.1f}"

    softness = AXES["softness"]
    lines = [f"| framing / stroke | {' | '.join(softness)} |", "|---|" + "---:|" * len(softness)]
    for framing, stroke in itertools.product(AXES["framing"], AXES["stroke"]):
        cells = [pct(result["cells"].get(f"{framing}/{stroke}/{s}")) for s in softness]
        lines.append(f"| {framing} / {stroke} | {' | '.join(cells)} |")
    lines += ["", "| polarity / lighting | " + " | ".join(f"{c} {f}" for c, f in itertools.product(
        AXES["colour"], AXES["format"])) + " |", "|---|" + "---:|" * 4]  # fmt: skip
    for polarity, lighting in itertools.product(AXES["polarity"], AXES["lighting"]):
        cells = [pct(result["conditions"].get(f"{polarity}/{lighting}/{c}/{f}"))
                 for c, f in itertools.product(AXES["colour"], AXES["format"])]  # fmt: skip
        lines.append(f"| {polarity} / {lighting} | {' | '.join(cells)} |")
    levels = result["levels"]
    lines += ["", "| axis | " + " | ".join(["level", "accuracy"] * 3) + " |", "|---|" + "---|---:|" * 3]
    for axis, values in AXES.items():
        row = [f"{v} | {pct(levels.get(f'{axis}={v}'))}" for v in values] + [" | "] * (3 - len(values))
        lines.append(f"| {axis} | {' | '.join(row)} |")
    worst = result["worst_cell"]
    classes = ", ".join(f"{100 * a:.1f}" for a in result["per_class_accuracy"])
    lines += [
        "",
        f"Whole matrix {100 * result['accuracy']:.2f}% of {result['n']:,} pictures; worst cell "
        f"{worst['cell']} {100 * worst['accuracy']:.1f}% (n={worst['n']}); per class 0-9: {classes}; "
        f"ECE {100 * result['ece']:.2f}%.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write the pictures and labels.json")
    w.add_argument("directory")
    e = sub.add_parser("eval", help="accuracy of an exported model per cell, through paddle-mnist predict")
    e.add_argument("--model", required=True, help="export prefix or run directory")
    e.add_argument(
        "--keep",
        default=None,
        help="write the pictures here, or reuse the same set written there (default: a temp dir)",
    )
    e.add_argument("--markdown", action="store_true", help="print Markdown tables (to stderr) as well")
    for p in (w, e):
        p.add_argument("--n", type=int, default=DEFAULT_N)
        p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "write":
        entries = write(args.directory, args.n, args.seed)
        print(json.dumps({"directory": args.directory, "n": len(entries)}))
    else:
        result = evaluate(args.model, args.n, args.seed, args.keep)
        if args.markdown:
            print(markdown(result), file=sys.stderr)
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
