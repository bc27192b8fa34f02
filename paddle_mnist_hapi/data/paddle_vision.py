"""``paddle_mnist``: Paddle's own ``paddle.vision.datasets.MNIST``, offline, from the library's verified data.

Every classic tutorial starts with ``paddle.vision.datasets.MNIST(mode='train',
transform=...)``. Offline that line fails after three download retries, and
copying files into Paddle's cache does not help: Paddle checks the MD5 of the
original ``.gz`` files, which a re-compressed copy never matches. What Paddle
does accept is ``image_path=`` / ``label_path=`` with ``download=False``.

``paddle_mnist(mode, transform)`` writes the library's checksum-verified arrays
(see :func:`~paddle_mnist_hapi.data.load_arrays`) once as gzip IDX files under
``~/.cache/paddle_mnist_hapi/paddle_idx/`` (atomically; ``PADDLE_MNIST_IDX_DIR``
overrides the folder) and returns Paddle's class built from them: the same
object, samples and ``transform`` the tutorial's reader knows.

Paddle's parser reads 100 records at a time and fails with ``struct.error`` on
a file whose count is not a multiple of 100, so a ``limit`` is written rounded
up to the next hundred and the dataset is trimmed after parsing.

Examples:
    >>> from paddle.vision.transforms import ToTensor
    >>> ds = paddle_mnist("test", transform=ToTensor(), limit=5)
    >>> type(ds).__module__, len(ds), tuple(ds[0][0].shape), int(ds[0][1][0])
    ('paddle.vision.datasets.mnist', 5, (1, 28, 28), 7)
"""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from paddle_mnist_hapi.data.sources import IDX_FILES, _idx_bytes, load_arrays
from paddle_mnist_hapi.errors import ConfigError

__all__ = ["ENV_IDX_DIR", "paddle_mnist"]

ENV_IDX_DIR = "PADDLE_MNIST_IDX_DIR"
_PADDLE_CHUNK = 100  # records per read in paddle.vision.datasets.MNIST._parse_dataset


def _idx_dir() -> Path:
    override = os.environ.get(ENV_IDX_DIR)
    return Path(override) if override else Path("~/.cache/paddle_mnist_hapi/paddle_idx").expanduser()


def _write_gz(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as a gzip IDX file, atomically (a reader never sees half a file)."""
    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        with gzip.GzipFile(fileobj=tmp, mode="wb", compresslevel=1, mtime=0) as gz:
            gz.write(_idx_bytes(array))
    os.replace(tmp.name, path)


def paddle_mnist(
    mode: str = "train",
    transform: Any = None,
    *,
    limit: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    backend: str | None = None,
) -> Any:
    """``paddle.vision.datasets.MNIST(mode, transform)`` built from the verified MNIST, without internet.

    Args:
        mode (str, optional): ``'train'`` (60,000 images) or ``'test'`` (10,000). Default: ``'train'``.
        transform (callable, optional): Paddle's ``transform``, applied per sample
            as in the tutorials (e.g. ``ToTensor()``, ``Normalize``). Default: None.
        limit (int, optional): keep only the first ``limit`` samples. Default: None.
        data_dir (str|PathLike, optional): where to find the MNIST; see
            :func:`~paddle_mnist_hapi.data.load_arrays`. Default: None.
        backend (str, optional): Paddle's image backend, ``'pil'`` or ``'cv2'``;
            None means ``paddle.vision.get_image_backend()``. Default: None.

    Returns:
        paddle.vision.datasets.MNIST: Paddle's class, ``download=False``.

    Raises:
        ConfigError: a ``mode`` other than train/test, or a bad ``limit``.
        DataNotFoundError: no source of the MNIST works (see ``load_arrays``).

    Examples:
        >>> ds = paddle_mnist("train", limit=3)
        >>> type(ds[0][0]).__name__, [int(label[0]) for _, label in (ds[i] for i in range(3))]
        ('Image', [5, 0, 4])
    """
    from paddle.vision.datasets import MNIST as PaddleMNIST

    if mode not in ("train", "test"):
        raise ConfigError(
            "paddle.vision.datasets.MNIST has mode='train' or 'test'; for the course's 50k/10k split use "
            f"paddle.io.Subset or paddle_mnist_hapi.data.MNIST('val', split='course'). Received: mode={mode!r}"
        )
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise ConfigError(f"limit must be a positive number of samples. Received: limit={limit!r}")
    arrays = load_arrays(data_dir)
    images = arrays.train_images if mode == "train" else arrays.test_images
    labels = arrays.train_labels if mode == "train" else arrays.test_labels
    count = len(labels)
    if limit is not None and limit < count:
        count = min(count, -(-limit // _PADDLE_CHUNK) * _PADDLE_CHUNK)
    folder = _idx_dir()
    stem = "train" if mode == "train" else "test"
    paths = {}
    for kind, array in (("images", images[:count]), ("labels", labels[:count])):
        standard = IDX_FILES[f"{stem}_{kind}"]
        paths[kind] = folder / f"{standard}-{count}.gz"
        _write_gz(paths[kind], array)
    dataset = PaddleMNIST(
        image_path=str(paths["images"]),
        label_path=str(paths["labels"]),
        mode=mode,
        transform=transform,
        download=False,
        backend=backend,
    )
    if limit is not None and limit < len(dataset.labels):
        del dataset.images[limit:], dataset.labels[limit:]
    return dataset
