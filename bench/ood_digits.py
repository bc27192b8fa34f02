"""Digits that are not MNIST: a seeded generator, and the accuracy of a model on them through ``paddle-mnist predict``.

    python bench/ood_digits.py write DIR [--n 1000] [--seed 0]          # the image files + labels.json
    python bench/ood_digits.py eval --model PREFIX [--n 1000] [--seed 0]  # accuracy through the real CLI

What users photograph is not MNIST: a different pen, slant and size, paper
that is not black, a digit that is not centred. Each image here is made from
scratch (never from MNIST pixels) and must never be trained on:

* ``pen`` (3 in 4): a digit drawn by a pen-stroke model: per class one of
  several skeletons (a 1 with or without flag and base, a 7 with or without a
  crossbar, an open or closed 4, a straight or curved 9 ...), a smooth random
  distortion of the plane, slant, rotation, aspect, a stroke width from a fine
  pen to a marker;
* ``font`` (1 in 4): a digit in one of the TrueType fonts found on the machine
  (DejaVu, Liberation; Pillow's own font when none is), slanted and rotated;
* then a picture around it: uneven paper (lighting gradient, blotches, grain,
  sometimes faint ruled lines) with dark ink, or a dark board with light chalk
  (1 in 4); off-centre with margins, a canvas of 64-240 pixels, not square;
  sometimes colour, a perspective tilt, blur, noise, JPEG compression.

The set is a pure function of ``(n, seed)`` (and of the fonts installed: the
manifest names each image's font). ``eval`` writes the set to a temporary
directory, runs ``python -m paddle_mnist_hapi.cli predict --json --model
PREFIX`` on the files, and prints one JSON object: ``accuracy`` and the
accuracy per kind (``pen``/``font``, ``paper``/``board``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parents[1]
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype/liberation")
FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSansMono.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansCondensed.ttf", "DejaVuSans-ExtraLight.ttf",
    "LiberationSans-Regular.ttf", "LiberationSans-Italic.ttf", "LiberationSerif-Regular.ttf",
    "LiberationMono-Regular.ttf", "LiberationSansNarrow-Regular.ttf", "LiberationSerif-BoldItalic.ttf",
)  # fmt: skip

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
    """One generated picture and what it shows."""

    image: Image.Image
    label: int
    kind: str  # "pen" or "font"
    background: str  # "paper" or "board"
    font: str | None
    fmt: str  # "png" or "jpeg"


def _fonts() -> list[str]:
    found = [os.path.join(d, f) for d in FONT_DIRS for f in FONT_FILES if os.path.exists(os.path.join(d, f))]
    return sorted(set(found))


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


def _pen_mask(
    label: int, size: tuple[int, int], box: tuple[float, float, float], rng: np.random.Generator
) -> Image.Image:
    """An 'L' mask of a pen-drawn digit: ``box`` = (centre x, centre y, digit height) in pixels."""
    variants = SKELETONS[label]
    strokes = variants[int(rng.integers(len(variants)))]
    all_points = _distort(np.concatenate([np.asarray(s, dtype=np.float64) for s in strokes]), rng)
    cx, cy, height = box
    width = max(1, round(height * rng.uniform(0.05, 0.16)))  # fine pen .. marker
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    start = 0
    for stroke in strokes:
        pts = all_points[start : start + len(stroke)] * height + (cx, cy)
        start += len(stroke)
        xy = [tuple(p) for p in pts]
        draw.line(xy, fill=255, width=width, joint="curve")
        r = width / 2
        for px, py in (xy[0], xy[-1]):  # round pen ends
            draw.ellipse([px - r, py - r, px + r, py + r], fill=255)
    return mask


def _font_mask(
    label: int, size: tuple[int, int], box: tuple[float, float, float], font_path: str | None, rng: np.random.Generator
) -> Image.Image:
    cx, cy, height = box
    font_size = max(8, round(height * 1.35))
    font = ImageFont.truetype(font_path, font_size) if font_path else ImageFont.load_default(font_size)
    layer = Image.new("L", (font_size * 2, font_size * 2), 0)
    ImageDraw.Draw(layer).text((font_size, font_size), str(label), fill=255, font=font, anchor="mm")
    slant, angle = rng.uniform(-0.3, 0.3), rng.uniform(-10, 10)
    layer = layer.transform(layer.size, Image.Transform.AFFINE, (1, slant, -slant * font_size, 0, 1, 0))
    layer = layer.rotate(angle, resample=Image.Resampling.BILINEAR)
    mask = Image.new("L", size, 0)
    mask.paste(layer, (round(cx - font_size), round(cy - font_size)))
    return mask


def _smooth_noise(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    coarse = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    return np.asarray(coarse.resize((shape[1], shape[0]), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0


def _background(shape: tuple[int, int], board: bool, rng: np.random.Generator) -> np.ndarray:
    height, width = shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    direction = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(direction) * xx / width + np.sin(direction) * yy / height) - 0.5
    if board:
        level = rng.uniform(15, 70) + rng.uniform(0, 30) * ramp
    else:
        level = rng.uniform(175, 245) + rng.uniform(0, 60) * ramp  # lighting falls off across the page
    level = level + rng.uniform(0, 25) * (_smooth_noise(shape, 4, rng) - 0.5)  # blotches, shadows
    if not board and rng.random() < 0.2:  # faint ruled lines
        spacing = rng.uniform(0.2, 0.35) * height
        lines = (np.mod(yy + rng.uniform(0, spacing), spacing) < max(1.0, height / 100)).astype(np.float32)
        level = level - rng.uniform(10, 30) * lines
    return level


def make_sample(index: int, seed: int, fonts: list[str] | None = None) -> Sample:
    """The ``index``-th picture of the set ``seed``: a pure function of both (and the fonts).

    Examples:
        >>> a, b = make_sample(3, 0), make_sample(3, 0)
        >>> a.label == b.label and a.image.tobytes() == b.image.tobytes()
        True
    """
    rng = np.random.default_rng([seed, index])
    fonts = _fonts() if fonts is None else fonts
    label = int(rng.integers(10))
    width, height = int(rng.integers(64, 241)), int(rng.integers(64, 241))
    digit_height = min(height / 1.4, width / 1.2) * rng.uniform(0.5, 1.0)
    margin_x, margin_y = 0.6 * digit_height + 2, 0.7 * digit_height + 2
    cx = rng.uniform(margin_x, max(margin_x, width - margin_x))  # off-centre, with margins
    cy = rng.uniform(margin_y, max(margin_y, height - margin_y))
    kind = "font" if rng.random() < 0.25 else "pen"
    font = None
    if kind == "font":
        font = fonts[int(rng.integers(len(fonts)))] if fonts else None
        mask = _font_mask(label, (width, height), (cx, cy, digit_height), font, rng)
    else:
        mask = _pen_mask(label, (width, height), (cx, cy, digit_height), rng)
    if rng.random() < 0.5:  # soft pen edges
        mask = mask.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    board = rng.random() < 0.25
    background = _background((height, width), board, rng)
    ink_level = rng.uniform(180, 250) if board else rng.uniform(10, 90)
    pressure = 0.75 + 0.25 * _smooth_noise((height, width), 3, rng)  # uneven ink
    alpha = np.asarray(mask, dtype=np.float32) / 255.0 * pressure
    gray = background * (1 - alpha) + ink_level * alpha
    gray = gray + rng.normal(0, rng.uniform(1, 10), gray.shape)  # sensor and paper grain
    if rng.random() < 0.4:  # colour: blue ink on warm paper, or a tinted board
        tint = np.asarray([rng.uniform(0.85, 1.1), rng.uniform(0.85, 1.05), rng.uniform(0.8, 1.15)])
        pixels = np.clip(gray[..., None] * tint, 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels, "RGB")
    else:
        image = Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8), "L")
    if rng.random() < 0.5:  # the camera was not square to the page
        d = rng.uniform(0, 0.06, 8) * np.array([width, height] * 4)
        quad = (d[0], d[1], d[2], height - d[3], width - d[4], height - d[5], width - d[6], d[7])
        fill = int(np.median(np.asarray(image.convert("L"))))
        image = image.transform(
            (width, height), Image.Transform.QUAD, quad, Image.Resampling.BILINEAR, fillcolor=fill if image.mode == "L"
            else (fill, fill, fill)
        )  # fmt: skip
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.2) * max(width, height) / 100))
    fmt = "jpeg" if rng.random() < 0.4 else "png"
    return Sample(image, label, kind, "board" if board else "paper", os.path.basename(font) if font else None, fmt)


def write(directory: str | os.PathLike[str], n: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """Write ``n`` pictures and ``labels.json`` (one entry per file) to ``directory``; return the entries."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    fonts = _fonts()
    entries = []
    for index in range(n):
        sample = make_sample(index, seed, fonts)
        name = f"{index:05d}-{sample.label}.{'jpg' if sample.fmt == 'jpeg' else 'png'}"
        if sample.fmt == "jpeg":
            quality = int(np.random.default_rng([seed, index, 1]).integers(40, 91))
            sample.image.save(out / name, "JPEG", quality=quality)
        else:
            sample.image.save(out / name, "PNG")
        entries.append(
            {"file": name, "label": sample.label, "kind": sample.kind, "background": sample.background,
             "font": sample.font}
        )  # fmt: skip
    (out / "labels.json").write_text(json.dumps({"seed": seed, "n": n, "images": entries}, indent=1) + "\n")
    return entries


def predict_files(model: str, files: list[str], env: dict[str, str] | None = None) -> list[int]:
    """Labels from the real CLI: ``python -m paddle_mnist_hapi.cli predict --json --model MODEL FILE...``."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "paddle_mnist_hapi.cli", "predict", "--json", "--model", model, *files]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"paddle-mnist predict failed ({proc.returncode}): {proc.stderr[-2000:]}")
    predictions = json.loads(proc.stdout.strip().splitlines()[-1])["predictions"]
    return [int(p["label"]) for p in predictions]


def evaluate(model: str, n: int = 1000, seed: int = 0, directory: str | None = None) -> dict[str, Any]:
    """Accuracy of the exported ``model`` on the set ``(n, seed)``, through ``paddle-mnist predict``."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(directory or tmp)
        entries = write(folder, n, seed)
        predicted = predict_files(model, [str(folder / e["file"]) for e in entries])
    right = np.asarray([p == e["label"] for p, e in zip(predicted, entries, strict=True)])
    result: dict[str, Any] = {"model": model, "n": n, "seed": seed, "accuracy": round(float(right.mean()), 4)}
    for key in ("kind", "background"):
        for value in sorted({e[key] for e in entries}):
            chosen = np.asarray([e[key] == value for e in entries])
            result[f"accuracy_{value}"] = round(float(right[chosen].mean()), 4)
            result[f"count_{value}"] = int(chosen.sum())
    confusion = np.zeros((10, 10), dtype=int)
    for p, e in zip(predicted, entries, strict=True):
        confusion[e["label"], p] += 1
    result["per_class_accuracy"] = [round(float(confusion[i, i] / max(1, confusion[i].sum())), 3) for i in range(10)]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write the pictures and labels.json")
    w.add_argument("directory")
    e = sub.add_parser("eval", help="accuracy of an exported model through paddle-mnist predict")
    e.add_argument("--model", required=True, help="export prefix or run directory")
    e.add_argument("--keep", default=None, help="write the pictures here (default: a temporary directory)")
    for p in (w, e):
        p.add_argument("--n", type=int, default=1000)
        p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "write":
        entries = write(args.directory, args.n, args.seed)
        print(json.dumps({"directory": args.directory, "n": len(entries)}))
    else:
        print(json.dumps(evaluate(args.model, args.n, args.seed, args.keep)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
