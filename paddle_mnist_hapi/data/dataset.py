"""``MNIST``: the real MNIST as an in-memory ``paddle.io.Dataset``.

Images are float32 ``[1, 28, 28]`` normalized as in Paddle's MNIST tutorial,
``(x - 127.5) / 127.5`` (range -1..1); labels are int64 ``[1]``. The whole
split is normalized once, at construction, so ``__getitem__`` is a slice.

Examples:
    >>> from paddle_mnist_hapi.data import MNIST
    >>> test = MNIST("test")
    >>> len(test), test[0][0].shape, test[0][1]
    (10000, (1, 28, 28), array([7]))
    >>> len(MNIST("train", split="course")), len(MNIST("val", split="course"))
    (50000, 10000)
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Literal

import numpy as np
import paddle

from paddle_mnist_hapi.data.sources import load_arrays
from paddle_mnist_hapi.errors import ConfigError

__all__ = ["MEAN", "MNIST", "STD", "as_mnist", "normalize"]

#: Pixel normalization shared by training, export metadata and the predictor.
MEAN = 127.5
STD = 127.5
#: The classic Paddle MNIST course keeps the first 50,000 training images for
#: training and the last 10,000 for validation.
COURSE_TRAIN_SIZE = 50000

# ``fit(dataset)`` makes hapi build a DataLoader, which yields tensors; hapi's train_batch then
# calls ``paddle.to_tensor`` on those tensors again (paddle/hapi/model.py), and Paddle warns once
# per process "To copy construct from a tensor, it is recommended to use
# sourceTensor.clone().detach() ...". It comes from hapi's own code, for every Dataset (Paddle's
# MNIST too), and the user can do nothing about it. Paddle attributes it to its own
# ``to_tensor`` (paddle.tensor.creation) whoever calls it, so this filter cannot tell hapi's call
# from a user's; it hides that one message only.
warnings.filterwarnings(
    "ignore", message="To copy construct from a tensor", category=UserWarning, module=r"paddle\.tensor\.creation"
)

Mode = Literal["train", "val", "test"]
Split = Literal["full", "course"]


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 ``(N, 28, 28)`` pixels to float32 ``(N, 1, 28, 28)`` in -1..1.

    Examples:
        >>> normalize(np.full((1, 28, 28), 255, np.uint8)).max()
        np.float32(1.0)
    """
    out = images.astype(np.float32).reshape(-1, 1, 28, 28)
    out -= MEAN
    out /= STD
    return out


class MNIST(paddle.io.Dataset):
    """One split of the real MNIST, held in memory.

    Args:
        mode (str, optional): ``'train'``, ``'val'`` or ``'test'``. Default: ``'train'``.
        split (str, optional): ``'full'``: train is all 60,000 training images
            (no val); ``'course'``: the classic course's deterministic split,
            train = the first 50,000, val = the last 10,000. Default: ``'full'``.
        data_dir (str, optional): a directory with the IDX files; see
            :func:`paddle_mnist_hapi.data.sources.load_arrays`. Default: None.
        limit (int, optional): keep only the first ``limit`` samples. Default: None.

    Attributes:
        images (np.ndarray): float32 ``(N, 1, 28, 28)``, normalized.
        labels (np.ndarray): int64 ``(N, 1)``.
        raw_images (np.ndarray): the uint8 ``(N, 28, 28)`` pixels.

    Examples:
        >>> ds = MNIST("train", limit=256)
        >>> ds.images.shape, ds.labels.dtype
        ((256, 1, 28, 28), dtype('int64'))
    """

    def __init__(
        self,
        mode: Mode = "train",
        *,
        split: Split = "full",
        data_dir: str | os.PathLike[str] | None = None,
        limit: int | None = None,
    ) -> None:
        super().__init__()
        if mode not in ("train", "val", "test"):
            raise ConfigError(f"mode must be 'train', 'val' or 'test'. Received: mode={mode!r}")
        if split not in ("full", "course"):
            raise ConfigError(f"split must be 'full' or 'course'. Received: split={split!r}")
        if mode == "val" and split != "course":
            raise ConfigError(
                "mode='val' needs split='course' (train = first 50,000, val = last 10,000); with "
                "split='full' every training image is used for training. Received: mode='val', split='full'"
            )
        if limit is not None and limit <= 0:
            raise ConfigError(f"limit must be a positive number of samples. Received: limit={limit!r}")
        arrays = load_arrays(data_dir)
        if mode == "test":
            images, labels = arrays.test_images, arrays.test_labels
        elif split == "full":
            images, labels = arrays.train_images, arrays.train_labels
        elif mode == "train":
            images, labels = arrays.train_images[:COURSE_TRAIN_SIZE], arrays.train_labels[:COURSE_TRAIN_SIZE]
        else:
            images, labels = arrays.train_images[COURSE_TRAIN_SIZE:], arrays.train_labels[COURSE_TRAIN_SIZE:]
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        self.mode, self.split, self.source = mode, split, arrays.source
        self.raw_images = images
        self.images = normalize(images)
        self.labels = labels.astype(np.int64).reshape(-1, 1)

    @classmethod
    def from_arrays(cls, raw_images: np.ndarray, labels: np.ndarray, *, mode: str = "train") -> MNIST:
        """Wrap uint8 ``(N, 28, 28)`` images and ``(N,)`` labels without loading files.

        Examples:
            >>> ds = MNIST.from_arrays(np.zeros((3, 28, 28), np.uint8), np.arange(3))
            >>> len(ds), ds[2][1]
            (3, array([2]))
        """
        self = cls.__new__(cls)
        paddle.io.Dataset.__init__(self)
        self.mode, self.split, self.source = mode, "full", "arrays"
        self.raw_images = np.asarray(raw_images, dtype=np.uint8).reshape(-1, 28, 28)
        self.images = normalize(self.raw_images)
        self.labels = np.asarray(labels).astype(np.int64).reshape(-1, 1)
        if len(self.images) != len(self.labels):
            raise ConfigError(
                f"images and labels must have the same length. Received: {len(self.images)} images, "
                f"{len(self.labels)} labels"
            )
        return self

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.images[index], self.labels[index]

    def __len__(self) -> int:
        return len(self.labels)


def as_mnist(dataset: Any) -> MNIST:
    """Return ``dataset`` as an in-memory :class:`MNIST`.

    Accepts this library's ``MNIST`` (returned as is),
    ``paddle.vision.datasets.MNIST`` objects (their raw pixels are taken,
    their transform is ignored and replaced by the library's normalization),
    and ``paddle.io.Subset`` of either (nested too), in the subset's order.

    Raises:
        ConfigError: any other kind of data set.

    Examples:
        >>> ds = MNIST("test", limit=10)
        >>> as_mnist(ds) is ds
        True
        >>> as_mnist(paddle.io.Subset(ds, [3, 1])).labels.ravel().tolist()
        [0, 2]
    """
    if isinstance(dataset, MNIST):
        return dataset
    from paddle.vision.datasets import MNIST as PaddleMNIST

    if isinstance(dataset, paddle.io.Subset):
        inner = as_mnist(dataset.dataset)
        index = np.asarray(dataset.indices, dtype=np.int64)
        return MNIST.from_arrays(inner.raw_images[index], inner.labels[index], mode=inner.mode)
    if isinstance(dataset, PaddleMNIST):
        images = np.asarray(dataset.images, dtype=np.float32).reshape(-1, 28, 28)
        return MNIST.from_arrays(images.astype(np.uint8), np.asarray(dataset.labels), mode=dataset.mode)
    raise ConfigError(
        "Expected paddle_mnist_hapi.data.MNIST, paddle.vision.datasets.MNIST or a paddle.io.Subset of one. "
        f"Received: {type(dataset).__name__}"
    )
