"""What a picture must go through to become a model's input, declared at export and followed by every consumer.

An export's ``prefix_meta.json`` holds ``preprocessing["kind"]``, one of:

- ``"mnist_digits"``: the MNIST digit pipeline of :mod:`~paddle_mnist_hapi.deploy.preprocess`
  (polarity, crop, 20 px box, centre of mass); only for digit models whose input holds one
  28x28 grayscale picture (``[1, 28, 28]`` or ``[784]``). What ``export_model`` chooses by
  default for them: the behaviour of the MNIST models is unchanged.
- ``"image"``: an :class:`ImageInput`: resize, channel order, scale and mean/std
  normalisation, as declared by ``export_model(..., preprocessing=ImageInput(...))``.
- ``"none"``: arrays only. Pictures are refused (a model's normalisation is never guessed);
  the default for every other input shape.

:func:`resolve_preprocessing` turns ``export_model``'s ``preprocessing`` argument into that
metadata, :func:`preprocessing_kind` and :meth:`ImageInput.from_metadata` read it back.

Examples:
    >>> from PIL import Image
    >>> rgb = ImageInput(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)).for_input([3, 32, 32])
    >>> rgb.size, rgb.channels
    ((32, 32), 'RGB')
    >>> x = rgb(Image.new("RGB", (64, 48), (255, 0, 0)))     # a red picture, any size
    >>> x.shape, x[0, :, 0, 0].tolist()
    ((1, 3, 32, 32), [1.0, -1.0, -1.0])
    >>> ImageInput.from_metadata(rgb.to_metadata()) == rgb
    True
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from paddle_mnist_hapi.deploy.preprocess import MAX_PIXELS, ImageSource, load_image, to_grayscale
from paddle_mnist_hapi.errors import ConfigError, ExportError, ImageError

__all__ = [
    "IMAGE",
    "MNIST_DIGITS",
    "NONE",
    "ImageInput",
    "input_channels",
    "labelled_pictures",
    "preprocessing_kind",
    "refuse_pictures_message",
    "resolve_preprocessing",
]

MNIST_DIGITS = "mnist_digits"
IMAGE = "image"
NONE = "none"
KINDS = (MNIST_DIGITS, IMAGE, NONE)

_CHANNELS = {"RGB": 3, "BGR": 3, "L": 1}
_RESIZES = ("stretch", "center_crop")
_LAYOUTS = ("CHW", "HWC")


def _floats(name: str, values: Any) -> tuple[float, ...]:
    if isinstance(values, (int, float)):
        values = (values,)
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number or a sequence of numbers. Received: {name}={values!r}") from None
    if not out:
        raise ConfigError(f"{name} must hold at least one number. Received: {name}={values!r}")
    return out


@dataclass(frozen=True, kw_only=True)
class ImageInput:
    """A declared picture-to-input transform: decode, channel order, resize, ``(pixel * scale - mean) / std``.

    Give it to ``export_model(..., preprocessing=ImageInput(...))`` with the normalisation the
    model was trained with; the fields left out are taken from the model's ``InputSpec``
    (:meth:`for_input`). The export records it in ``prefix_meta.json``, and ``Predictor``,
    ``paddle-mnist predict`` / ``evaluate --images`` and ``serve`` apply it to every picture.

    Args:
        mean (float|Sequence[float], optional): per channel (or one for all), after ``scale``. Default: 0.
        std (float|Sequence[float], optional): per channel (or one for all), after ``scale``. Default: 1.
        scale (float, optional): pixels (0..255) are multiplied by it first; ``1/255`` gives 0..1
            as ``paddle.vision.transforms.ToTensor`` does, ``1.0`` keeps 0..255. Default: 1/255.
        channels (str, optional): ``'RGB'``, ``'BGR'`` (a model trained on ``cv2.imread`` arrays) or
            ``'L'`` (grayscale). Default: from the spec, ``'RGB'`` for 3 channels, ``'L'`` for 1.
        size (tuple[int, int], optional): ``(height, width)``. Default: from the spec.
        resize (str, optional): ``'stretch'`` to ``size`` (aspect ratio not kept; what a data set of
            same-size pictures needs), or ``'center_crop'``: scale to cover ``size``, keep the middle.
            Default: ``'stretch'``.
        layout (str, optional): ``'CHW'`` (Paddle's default ``NCHW``) or ``'HWC'`` (an ``NHWC`` model).
            Default: ``'CHW'``.

    Transparent pixels are composited on white, as a viewer shows them; EXIF orientation is
    applied; 16-bit pictures are scaled to 0..255.

    Examples:
        >>> spec = ImageInput(mean=0.5, std=0.5).for_input([1, 8, 8])
        >>> spec.channels, spec(np.full((8, 8), 255, np.uint8)).ravel()[:2].tolist()
        ('L', [1.0, 1.0])
        >>> ImageInput(channels="CMYK")
        Traceback (most recent call last):
        ...
        paddle_mnist_hapi.errors.ConfigError: channels must be one of 'RGB', 'BGR', 'L'. Received: channels='CMYK'
    """

    mean: float | Sequence[float] = 0.0
    std: float | Sequence[float] = 1.0
    scale: float = 1 / 255
    channels: Literal["RGB", "BGR", "L"] | None = None
    size: tuple[int, int] | None = None
    resize: Literal["stretch", "center_crop"] = "stretch"
    layout: Literal["CHW", "HWC"] = "CHW"

    def __post_init__(self) -> None:
        set_field = object.__setattr__  # frozen: normalise the given values once
        set_field(self, "mean", _floats("mean", self.mean))
        set_field(self, "std", _floats("std", self.std))
        if any(s == 0 for s in self.std):
            raise ConfigError(f"std must not contain 0 (it divides). Received: std={self.std!r}")
        if not isinstance(self.scale, (int, float)) or not self.scale > 0:
            raise ConfigError(f"scale must be a positive number (1/255 or 1.0). Received: scale={self.scale!r}")
        set_field(self, "scale", float(self.scale))
        if self.channels is not None and self.channels not in _CHANNELS:
            raise ConfigError(f"channels must be one of 'RGB', 'BGR', 'L'. Received: channels={self.channels!r}")
        if self.size is not None:
            size = tuple(self.size) if isinstance(self.size, Sequence) else ()
            if len(size) != 2 or not all(isinstance(d, int) and d > 0 for d in size):
                raise ConfigError(f"size must be (height, width), two positive integers. Received: size={self.size!r}")
            set_field(self, "size", size)
        if self.resize not in _RESIZES:
            raise ConfigError(f"resize must be 'stretch' or 'center_crop'. Received: resize={self.resize!r}")
        if self.layout not in _LAYOUTS:
            raise ConfigError(f"layout must be 'CHW' or 'HWC'. Received: layout={self.layout!r}")

    # ------------------------------------------------------------------ against the model's input

    def for_input(self, shape: Sequence[int]) -> ImageInput:
        """This declaration completed from an input shape without the batch (``[C, H, W]`` or ``[H, W, C]``).

        Raises:
            ExportError: the shape is not one picture, or contradicts a given field.

        Examples:
            >>> ImageInput(layout="HWC").for_input([24, 32, 3]).size
            (24, 32)
            >>> ImageInput().for_input([784])
            Traceback (most recent call last):
            ...
            paddle_mnist_hapi.errors.ExportError: An ImageInput needs a model input of one picture, [C, H, W] ...
        """
        dims = [int(d) for d in shape]
        if len(dims) != 3 or any(d <= 0 for d in dims):
            raise ExportError(
                "An ImageInput needs a model input of one picture, [C, H, W] (or [H, W, C] with layout='HWC') "
                "with fixed sizes: its InputSpec must be e.g. InputSpec([None, 3, 32, 32], 'float32', 'image'). "
                f"Give arrays only (preprocessing='none') for other inputs. Received: input shape {dims}"
            )
        count, height, width = (dims[0], dims[1], dims[2]) if self.layout == "CHW" else (dims[2], dims[0], dims[1])
        channels = self.channels or {3: "RGB", 1: "L"}.get(count)
        if channels is None or _CHANNELS[channels] != count:
            raise ExportError(
                f"The model's input has {count} channels ({self.layout} {dims}), but a picture gives 1 (channels "
                "'L') or 3 ('RGB', 'BGR'). Declare the channels the model was trained on, or the layout ('HWC' for "
                f"an NHWC model). Received: input shape {dims}, channels={self.channels!r}, layout={self.layout!r}"
            )
        if self.size is not None and tuple(self.size) != (height, width):
            raise ExportError(
                f"size={self.size} does not match the model's input, {height}x{width} ({self.layout} {dims}). "
                f"Leave size out to take it from the InputSpec. Received: size={self.size}"
            )
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, count):
                raise ExportError(
                    f"{name} has {len(values)} values but the model's input has {count} channels: give one per "
                    f"channel, or one for all. Received: {name}={list(values)}"
                )
        return dataclasses.replace(self, channels=channels, size=(height, width))

    # ------------------------------------------------------------------ metadata

    def to_metadata(self) -> dict[str, Any]:
        """The ``preprocessing`` section of ``prefix_meta.json`` (call on a completed declaration).

        Examples:
            >>> meta = ImageInput(mean=0.5, std=0.25).for_input([3, 4, 4]).to_metadata()
            >>> meta["kind"], meta["channels"], meta["size"], meta["mean"]
            ('image', 'RGB', [4, 4], [0.5])
        """
        return {
            "kind": IMAGE,
            "size": list(self.size or ()),
            "channels": self.channels,
            "layout": self.layout,
            "resize": self.resize,
            "interpolation": "bilinear (antialiased, PIL)",
            "scale": self.scale,
            "mean": list(self.mean),
            "std": list(self.std),
            "normalize": "(pixel * scale - mean) / std per channel, pixel in 0..255",
            "transparency": "composited on white",
            "reference": "paddle_mnist_hapi.deploy.image_input.ImageInput",
        }

    @classmethod
    def from_metadata(cls, section: Mapping[str, Any]) -> ImageInput:
        """The declaration an export recorded (``preprocessing`` with ``kind`` ``'image'``).

        Raises:
            ExportError: the section is not a readable image declaration.
        """
        try:
            return cls(
                mean=section["mean"],
                std=section["std"],
                scale=section.get("scale", 1 / 255),
                channels=section["channels"],
                size=tuple(section["size"]),
                resize=section.get("resize", "stretch"),
                layout=section.get("layout", "CHW"),
            )
        except (KeyError, TypeError, ConfigError) as exc:
            raise ExportError(
                f"The export's preprocessing section is not a readable ImageInput ({exc}). Re-export the model "
                f"with export_model(..., preprocessing=ImageInput(...)). Received: {dict(section)!r}"
            ) from exc

    # ------------------------------------------------------------------ pictures

    def pixels(self, source: ImageSource, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
        """uint8 ``(H, W, C)`` pixels in the declared channel order and size (before normalisation).

        Raises:
            ImageError: the picture cannot be read (see :func:`~paddle_mnist_hapi.deploy.preprocess.load_image`).
        """
        image = load_image(_as_image(source), max_pixels=max_pixels)
        if self.channels == "L":
            picture = Image.fromarray(np.uint8(np.round(to_grayscale(image))), "L")
        else:
            picture = _to_rgb(image)
        height, width = self.size or (picture.height, picture.width)
        if self.resize == "center_crop":  # the middle of the picture with the size's aspect ratio, then scaled
            factor = min(picture.width / width, picture.height / height)
            crop_w, crop_h = max(1, round(width * factor)), max(1, round(height * factor))
            left, top = (picture.width - crop_w) // 2, (picture.height - crop_h) // 2
            picture = picture.crop((left, top, left + crop_w, top + crop_h))
        if picture.size != (width, height):
            picture = picture.resize((width, height), Image.Resampling.BILINEAR)
        out = np.asarray(picture, dtype=np.uint8).reshape(height, width, -1)
        return out[:, :, ::-1] if self.channels == "BGR" else out

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """float32 model input, batch of one, from :meth:`pixels`' output.

        Examples:
            >>> ImageInput(scale=1.0, mean=100, std=2).normalize(np.full((1, 1, 1), 104, np.uint8)).tolist()
            [[[[2.0]]]]
        """
        scaled = np.asarray(pixels, np.float32) * np.float32(self.scale)
        values = (scaled - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return (values.transpose(2, 0, 1) if self.layout == "CHW" else values)[None].astype(np.float32)

    def __call__(self, source: ImageSource, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
        """The model input for one picture (a file path, its bytes, a PIL image or a uint8 array)."""
        return self.normalize(self.pixels(source, max_pixels=max_pixels))

    def picture(self, batch: np.ndarray) -> np.ndarray:
        """uint8 ``(H, W)`` or ``(H, W, 3)`` RGB pixels of the first input of ``batch``: what the model saw.

        Examples:
            >>> spec = ImageInput(mean=0.5, std=0.5).for_input([3, 2, 2])
            >>> red = np.zeros((2, 2, 3), np.uint8); red[..., 0] = 255
            >>> spec.picture(spec.normalize(red))[0, 0].tolist()
            [255, 0, 0]
        """
        values = np.asarray(batch, np.float32)[0]
        values = values.transpose(1, 2, 0) if self.layout == "CHW" else values
        std, mean = np.asarray(self.std, np.float32), np.asarray(self.mean, np.float32)
        pixels = np.clip(np.round((values * std + mean) / np.float32(self.scale)), 0, 255)
        pixels = pixels.astype(np.uint8)
        if self.channels == "BGR":
            pixels = pixels[:, :, ::-1]
        return pixels[:, :, 0] if pixels.shape[-1] == 1 else pixels


def _as_image(source: ImageSource) -> str | os.PathLike[str] | bytes | Image.Image:
    """Pixel arrays (integer dtype, ``(H, W)`` or ``(H, W, 3|4)``) as PIL images; anything else as it is."""
    if not isinstance(source, np.ndarray):
        return source
    if not np.issubdtype(source.dtype, np.integer) or source.ndim not in (2, 3):
        raise ImageError(
            "Expected a pixel array: integer dtype, shape (H, W) or (H, W, 3|4). For model input that is "
            f"already normalized use Predictor.predict_batch. Received: dtype={source.dtype}, shape={source.shape}"
        )
    if source.dtype == np.uint16 and source.ndim == 2:
        return Image.fromarray(source)  # mode I;16, scaled by to_grayscale
    return Image.fromarray(np.clip(source, 0, 255).astype(np.uint8))


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB for any PIL mode: transparency composited on white, 16-bit and float pictures scaled to 0..255."""
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":  # one channel, wider than 8 bits
        return Image.fromarray(np.uint8(np.round(to_grayscale(image))), "L").convert("RGB")
    return image.convert("RGB")


# ---------------------------------------------------------------------- export and load


def _holds_one_digit(shape: Sequence[int]) -> bool:
    """A 28x28 grayscale picture: ``[1, 28, 28]``, ``[28, 28]`` or ``[784]`` (the MNIST models' inputs)."""
    return [int(d) for d in shape] in ([1, 28, 28], [28, 28], [784])


def resolve_preprocessing(preprocessing: Any, shape: Sequence[int]) -> dict[str, Any] | None:
    """The metadata ``preprocessing`` section for ``export_model``'s argument; None for the MNIST digit one.

    Args:
        preprocessing: None (MNIST digits for a 28x28 grayscale input, else ``'none'``),
            ``'mnist_digits'``, ``'none'``, an :class:`ImageInput` or a dict of its fields.
        shape (Sequence[int]): the model's input shape without the batch.

    Raises:
        ConfigError: an unknown value.
        ExportError: a preprocessing the input shape cannot take.

    Examples:
        >>> resolve_preprocessing(None, [1, 28, 28]) is None           # the MNIST digit pipeline
        True
        >>> resolve_preprocessing(None, [3, 32, 32])["kind"]
        'none'
        >>> resolve_preprocessing({"mean": [0.5] * 3, "std": [0.5] * 3}, [3, 32, 32])["size"]
        [32, 32]
    """
    if preprocessing is None:
        preprocessing = MNIST_DIGITS if _holds_one_digit(shape) else NONE
    if isinstance(preprocessing, Mapping):
        fields = {f.name for f in dataclasses.fields(ImageInput)}
        unknown = sorted(set(preprocessing) - fields)
        if unknown:
            raise ConfigError(
                f"Unknown ImageInput field(s) {unknown}; the fields are {sorted(fields)}. "
                f"Received: preprocessing={dict(preprocessing)!r}"
            )
        preprocessing = ImageInput(**preprocessing)
    if isinstance(preprocessing, ImageInput):
        return preprocessing.for_input(shape).to_metadata()
    if preprocessing == MNIST_DIGITS:
        if not _holds_one_digit(shape):
            raise ExportError(
                "The MNIST digit preprocessing makes one 28x28 grayscale picture, but the model's input is "
                f"{list(shape)}. Declare the model's own with preprocessing=ImageInput(mean=..., std=...), or "
                f"'none' for arrays only. Received: preprocessing='mnist_digits', input shape {list(shape)}"
            )
        return None
    if preprocessing == NONE:
        return {
            "kind": NONE,
            "note": "arrays only: no picture preprocessing was declared at export; Predictor.predict_batch takes "
            "model input arrays. Re-export with export_model(..., preprocessing=ImageInput(...)) for pictures.",
        }
    raise ConfigError(
        "preprocessing must be None, 'mnist_digits', 'none', an ImageInput or a dict of its fields. "
        f"Received: preprocessing={preprocessing!r}"
    )


def preprocessing_kind(metadata: Mapping[str, Any], shape: Sequence[int]) -> str:
    """``'mnist_digits'``, ``'image'`` or ``'none'``: what an export's metadata says pictures need.

    An export without metadata, or from a release that wrote no ``kind`` (it described the MNIST
    digit pipeline for every model), gets the digit pipeline only when its input is one 28x28 picture.

    Examples:
        >>> preprocessing_kind({}, [1, 28, 28]), preprocessing_kind({"preprocessing": {"grayscale": True}}, [3, 32, 32])
        ('mnist_digits', 'none')
    """
    section = metadata.get("preprocessing")
    kind = section.get("kind") if isinstance(section, Mapping) else None
    if kind in KINDS:
        return str(kind)
    if kind is not None:
        raise ExportError(
            f"The export's preprocessing kind {kind!r} is not one this release knows ({', '.join(KINDS)}). "
            "Upgrade paddle-mnist-hapi or re-export the model."
        )
    return MNIST_DIGITS if _holds_one_digit(shape) else NONE


def refuse_pictures_message(prefix: str, shape: Sequence[int]) -> str:
    """Why an arrays-only export cannot take pictures, and how to export one that can."""
    example = "ImageInput(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))" if len(shape) == 3 else "ImageInput(...)"
    return (
        f"The model {prefix} takes arrays only: its export declares no picture preprocessing (input {list(shape)}), "
        "and its resize and normalisation are not guessed. Re-export it with the normalisation it was trained "
        f"with, e.g. export_model(model, prefix, preprocessing={example}) (from paddle_mnist_hapi import ImageInput; "
        "docs/your-own-model.md), or pass model input arrays to Predictor.predict_batch."
    )


def input_channels(shape: Sequence[int], section: Mapping[str, Any] | None) -> int | None:
    """The colour channels of one input: the declared picture's, 1 for a digit model, ``C`` of a
    ``[C, H, W]`` input; None when the input is not a picture (a vector of features).

    Examples:
        >>> input_channels([3, 32, 32], None), input_channels([784], None), input_channels([20], {"kind": "none"})
        (3, 1, None)
    """
    if section is None:
        return 1 if _holds_one_digit(shape) else (int(shape[0]) if len(shape) == 3 else None)
    if section.get("kind") == IMAGE:
        return _CHANNELS[str(section["channels"])]
    return int(shape[0]) if len(shape) == 3 else None


#: The picture files ``labelled_pictures`` reads (what Pillow decodes).
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def labelled_pictures(
    directory: str | os.PathLike[str], class_names: Sequence[str], *, limit: int | None = None
) -> tuple[list[str], np.ndarray]:
    """``(files, labels)`` of a folder with one subfolder of pictures per class name (``DIR/cat/1.png``),
    the layout of ``paddle.vision.datasets.ImageFolder``; sorted by class id, then file name.

    Raises:
        ConfigError: not a directory, a subfolder that names no class, or no picture at all.

    Examples:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> for name in ("square/a.png", "square/b.png", "circle/c.png"):
        ...     (root / name).parent.mkdir(exist_ok=True); Image.new("RGB", (4, 4)).save(root / name)
        >>> files, labels = labelled_pictures(root, ["circle", "square"])
        >>> [Path(f).name for f in files], labels.tolist()
        (['c.png', 'a.png', 'b.png'], [0, 1, 1])
    """
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory of labelled pictures (DIR/<class name>/*.png). Received: {root}")
    folders = {p.name: p for p in root.iterdir() if p.is_dir()}
    unknown = sorted(set(folders) - set(class_names))
    if unknown:
        raise ConfigError(
            f"{root} has folders that name no class of the model: {unknown}. Each subfolder must be one of its "
            f"class names {list(class_names)}. Received: {sorted(folders)}"
        )
    files: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(class_names):
        if name in folders:
            found = sorted(p for p in folders[name].iterdir() if p.suffix.lower() in PICTURE_SUFFIXES)
            files += [str(p) for p in found]
            labels += [label] * len(found)
    if not files:
        raise ConfigError(
            f"No pictures in {root}: expected {root}/<class name>/*.png (or .jpg, ...) with class names "
            f"{list(class_names)[:5]}. Received: {root}"
        )
    if limit is not None:
        files, labels = files[:limit], labels[:limit]
    return files, np.asarray(labels, dtype=np.int64)
