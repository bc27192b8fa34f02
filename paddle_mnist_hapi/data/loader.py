"""``InMemoryLoader``: the fast data path for ``paddle.Model.fit``.

The classic tutorial hands ``fit`` a ``paddle.vision.datasets.MNIST`` with a
per-sample transform: every image goes through PIL, ``ToTensor`` and
``Normalize`` one at a time, and a ``DataLoader`` then stacks 64 small tensors
per batch. ``InMemoryLoader`` normalizes the whole split once (see
:class:`~paddle_mnist_hapi.data.MNIST`), keeps it as two contiguous numpy
arrays and yields each batch with one fancy-indexing copy.

Design points:

* Batches are numpy arrays, not tensors: hapi calls ``paddle.to_tensor`` on
  whatever it gets, which copies a tensor again and warns "To copy construct
  from a tensor ..."; from numpy it is one copy and no warning.
* The order comes from ``self.batch_sampler``, a
  ``paddle.io.DistributedBatchSampler``, read at iteration time. Its shuffle is
  seeded only by its epoch counter (``set_epoch(n)`` replays epoch ``n``
  exactly), and under ``paddle.distributed.launch`` it gives every rank its own
  disjoint share. ``ResumeCkpt`` swaps ``batch_sampler`` for a wrapper that
  sets the epoch and skips the batches already done.
* It is a ``paddle.io.DataLoader`` (without worker processes), so hapi's
  distributed evaluation trims the padding ``DistributedBatchSampler`` adds
  when the data set does not split evenly across ranks.
* ``augment=Augment()`` varies every training batch (affine, elastic, stroke
  width, blur; see :mod:`~paddle_mnist_hapi.data.augment`), vectorised over
  the batch. Its randomness is a pure function of ``(seed, epoch, the batch's
  sample indices)``: one ``numpy.random.Generator`` per batch, the global RNGs
  untouched, so a run resumed mid-epoch by ``ResumeCkpt`` replays the same
  augmented batches with no RNG state to save.

Examples:
    >>> from paddle_mnist_hapi.data import MNIST, InMemoryLoader
    >>> loader = InMemoryLoader(MNIST("test", limit=100), batch_size=32, shuffle=False)
    >>> len(loader), [images.shape for images, labels in loader][-1]
    (4, (4, 1, 28, 28))
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import paddle

from paddle_mnist_hapi._private.checks import check_int
from paddle_mnist_hapi.data.augment import Augment
from paddle_mnist_hapi.data.dataset import as_mnist
from paddle_mnist_hapi.errors import ConfigError

__all__ = ["InMemoryLoader"]


class InMemoryLoader(paddle.io.DataLoader):
    """Ready ``[images, labels]`` batches of an in-memory MNIST for ``fit``/``evaluate``/``predict``.

    Args:
        dataset (MNIST|paddle.vision.datasets.MNIST): the data. A Paddle vision
            MNIST is converted with :func:`~paddle_mnist_hapi.data.as_mnist`
            (its raw pixels, the library's normalization; its transform is ignored).
        batch_size (int, optional): samples per batch and per rank. Default: 64.
        shuffle (bool, optional): a new order every epoch, seeded by the
            sampler's epoch counter. Default: True.
        drop_last (bool, optional): drop the last incomplete batch. Default: False.
        num_replicas (int, optional): number of ranks sharing the data; None
            means ``paddle.distributed.ParallelEnv().nranks``. Default: None.
        rank (int, optional): this process's share; None means
            ``ParallelEnv().local_rank``. Default: None.
        augment (Augment, optional): random variation applied to each batch
            (training loaders only). Default: None (the images as they are).
        seed (int, optional): seeds the augmentation, together with the epoch
            and the batch's sample indices. Default: 0.

    Attributes:
        batch_sampler (paddle.io.DistributedBatchSampler): the batch order.
        images (np.ndarray): float32 ``(N, 1, 28, 28)``, normalized.
        labels (np.ndarray): int64 ``(N, 1)``.

    Raises:
        ConfigError: a data set of another kind, or a bad ``batch_size``, ``num_replicas``, ``rank``,
            ``augment`` or ``seed``.

    Examples:
        >>> import paddle
        >>> from paddle_mnist_hapi import MNIST, create_model, specs_for
        >>> model = paddle.Model(create_model("linear"), *specs_for("linear"))
        >>> model.prepare(paddle.optimizer.Adam(parameters=model.parameters()),
        ...               paddle.nn.CrossEntropyLoss(), paddle.metric.Accuracy())
        >>> model.fit(InMemoryLoader(MNIST("train", limit=256)), epochs=1, verbose=0)
        >>> sorted(model.evaluate(InMemoryLoader(MNIST("test", limit=64), shuffle=False), verbose=0))
        ['acc', 'loss']
        >>> from paddle_mnist_hapi.data import Augment
        >>> augmented = InMemoryLoader(MNIST("train", limit=256), augment=Augment(), seed=1)
        >>> model.fit(augmented, epochs=1, verbose=0)
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 64,
        shuffle: bool = True,
        drop_last: bool = False,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        augment: Augment | None = None,
        seed: int = 0,
    ) -> None:
        # paddle.io.DataLoader.__init__ is not called on purpose: it sets up
        # worker processes and a collate pipeline this loader does not need.
        check_int("batch_size", batch_size, 1)
        for name, value in (("shuffle", shuffle), ("drop_last", drop_last)):
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be True or False. Received: {name}={value!r}")
        if num_replicas is not None and (not isinstance(num_replicas, int) or num_replicas < 1):
            raise ConfigError(
                f"num_replicas must be a positive integer or None. Received: num_replicas={num_replicas!r}"
            )
        if rank is not None:
            replicas = num_replicas if num_replicas is not None else paddle.distributed.ParallelEnv().nranks
            if not isinstance(rank, int) or not 0 <= rank < replicas:
                raise ConfigError(
                    f"rank must be an integer in [0, {replicas}) (one of the num_replicas ranks). "
                    f"Received: rank={rank!r}, num_replicas={replicas}"
                )
        if augment is not None and not isinstance(augment, Augment):
            raise ConfigError(
                "augment must be a paddle_mnist_hapi.data.Augment (e.g. Augment()) or None. "
                f"Received: augment={augment!r}"
            )
        check_int("seed", seed, 0)
        try:
            mnist = as_mnist(dataset)
        except ConfigError as exc:
            raise ConfigError(
                "InMemoryLoader takes paddle_mnist_hapi.data.MNIST or paddle.vision.datasets.MNIST; for another "
                "paddle.io.Dataset pass it to fit directly or use paddle.io.DataLoader. "
                f"Received: {type(dataset).__name__}"
            ) from exc
        self.dataset = mnist
        self.images = np.ascontiguousarray(mnist.images, dtype=np.float32)
        self.labels = np.ascontiguousarray(mnist.labels, dtype=np.int64)
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.augment = augment
        self.seed = seed
        self.return_list = True
        self.num_workers = 0
        self.batch_sampler = paddle.io.DistributedBatchSampler(
            mnist, batch_size, num_replicas=num_replicas, rank=rank, shuffle=shuffle, drop_last=drop_last
        )

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[list[np.ndarray]]:  # type: ignore[override]
        sampler = self.batch_sampler
        # the epoch this pass draws (DistributedBatchSampler and ResumeCkpt's wrapper both say it before iterating)
        epoch = int(getattr(sampler, "epoch", 0) or 0)
        augment = self.augment.at_epoch(epoch) if self.augment is not None else None
        for indices in sampler:
            index = np.asarray(indices, dtype=np.int64)
            images = self.images[index]
            if augment is not None:
                images = augment(images, self.batch_rng(epoch, index))
            yield [images, self.labels[index]]
        if self.augment is not None and not getattr(sampler, "shuffle", True) and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch + 1)  # an unshuffled sampler keeps its epoch; the augmentation must not repeat

    def batch_rng(self, epoch: int, indices: np.ndarray) -> np.random.Generator:
        """The generator that augments the batch of ``indices`` in ``epoch``: the same whenever the batch is replayed.

        Examples:
            >>> from paddle_mnist_hapi.data import MNIST
            >>> loader = InMemoryLoader(MNIST("test", limit=10), seed=3)
            >>> a = loader.batch_rng(1, np.arange(4)).random()
            >>> a == loader.batch_rng(1, np.arange(4)).random(), a == loader.batch_rng(2, np.arange(4)).random()
            (True, False)
        """
        key = zlib.crc32(np.ascontiguousarray(indices, dtype=np.int64).tobytes())
        return np.random.default_rng([self.seed, epoch, len(indices), key])

    def __call__(self) -> Iterator[list[np.ndarray]]:  # type: ignore[override]
        return self.__iter__()

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration use the shuffle order of ``epoch`` (as ``DistributedBatchSampler.set_epoch``).

        Examples:
            >>> from paddle_mnist_hapi.data import MNIST
            >>> loader = InMemoryLoader(MNIST("test", limit=10), batch_size=10)
            >>> first = next(iter(loader))[1].ravel().tolist()
            >>> loader.set_epoch(0); next(iter(loader))[1].ravel().tolist() == first
            True
        """
        self.batch_sampler.set_epoch(epoch)

    def __repr__(self) -> str:
        sampler = self.batch_sampler
        return (
            f"InMemoryLoader({len(self.labels)} samples, batch_size={self.batch_size}, "
            f"shuffle={getattr(sampler, 'shuffle', '?')}, drop_last={self.drop_last}, "
            f"rank {getattr(sampler, 'local_rank', 0)} of {getattr(sampler, 'nranks', 1)}"
            + (f", augment={self.augment}, seed={self.seed})" if self.augment is not None else ")")
        )
