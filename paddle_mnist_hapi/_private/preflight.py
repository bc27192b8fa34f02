"""Fail fast: check what ``paddle.Model.fit`` was given, once, when training starts.

Mistakes the classic tutorials' readers make hang or fail late under hapi:

* samples that are PIL images (Paddle's MNIST without a ``transform``): the
  loader's thread dies in ``default_collate_fn`` and ``fit`` blocks forever;
* float labels for ``CrossEntropyLoss`` (as the course builds them for
  ``square_error_cost``): a raw "not implemented for data type float32" error
  from the backward pass;
* an ``InputSpec`` that does not fit the network (the MLP's ``[None, 784]`` on
  a LeNet): accepted through all of training, then ``model.save(...,
  training=False)`` fails with Paddle's raw shape error;
* samples the network cannot take (``[28, 28]`` arrays from
  ``set_image_backend('cv2')``, float64): Paddle's raw error in the first step;
* samples that are Paddle tensors in a ``DataLoader`` with workers: Paddle's
  workers crash intermittently with shared memory, so it is turned off (a warning says so).

:func:`check_fit` runs from the ``on_train_begin`` of every callback of this
library; the first one to run does the work, the others see it done (the flag
lives on the ``fit`` call's own callback list). It reads the first sample of
the train and eval data by index (``dataset[0]``, never the loader's iterator
or sampler) with Python's, numpy's and Paddle's RNG states restored afterwards,
so the data order and random augmentations of the run are unchanged; and it
runs one forward pass of a batch of one shaped like the ``InputSpec``, in eval
mode, without gradients, and one on a zero batch of one shaped like the first sample.

Examples:
    >>> import numpy as np, paddle
    >>> from paddle_mnist_hapi import create_model
    >>> model = paddle.Model(create_model("lenet5"), paddle.static.InputSpec([None, 784], "float32", "x"))
    >>> check_spec(model)
    Traceback (most recent call last):
    ...
    paddle_mnist_hapi.errors.FitInputError: The model's InputSpec 'x' [None, 784] does not fit the network: ...
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import paddle

from paddle_mnist_hapi.errors import CheckpointError, FitInputError

__all__ = ["SPEC_FIX", "check_data", "check_fit", "check_spec", "first_sample", "spec_fix", "spec_mismatch"]

log = logging.getLogger(__name__)

_DONE = "_paddle_mnist_hapi_preflight_done"


def check_fit(model: Any) -> None:
    """Check the running ``fit``'s data, labels, loss and InputSpec, once per ``fit`` call.

    Does nothing outside ``fit`` (a callback driven by hand) or when this fit was already checked.

    Raises:
        FitInputError: the samples are PIL images, the labels are floats for
            ``CrossEntropyLoss``, or the ``InputSpec`` does not fit the network or the samples.
        ConfigError: a callback of the list cannot work in static-graph mode
            (``static_graph.check_callbacks``).
    """
    from paddle_mnist_hapi._private import hapi_loop, static_graph

    try:
        loop = hapi_loop.find_fit_loop()
    except CheckpointError:  # not inside fit, or another Paddle's loop: nothing to check
        return
    if getattr(loop.callbacks, _DONE, False):
        return
    setattr(loop.callbacks, _DONE, True)
    if model is None:
        return
    static_graph.check_callbacks(model, list(loop.callbacks.callbacks))
    check_spec(model, first_sample(loop.train_loader))
    check_data(model, loop.train_loader, "train_data")
    if loop.eval_loader is not None:
        check_data(model, loop.eval_loader, "eval_data")


@contextlib.contextmanager
def _rng_untouched() -> Iterator[None]:
    """Restore Python's, numpy's and Paddle's RNG states on exit (a transform may draw random numbers)."""
    python_state, numpy_state, paddle_state = random.getstate(), np.random.get_state(), paddle.get_rng_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        paddle.set_rng_state(paddle_state)


def first_sample(loader: Any) -> tuple[Any, ...] | None:
    """The first sample of a loader's map-style dataset, read by index; None when it cannot be read that way.

    ``InMemoryLoader`` gives its first image and label; a ``paddle.io.DataLoader``
    ``dataset[0]``. Iterable datasets and plain generators are not read (that
    would consume them).

    Examples:
        >>> from paddle_mnist_hapi.data import MNIST
        >>> loader = paddle.io.DataLoader(MNIST("test", limit=4), batch_size=2)
        >>> [np.shape(field) for field in first_sample(loader)]
        [(1, 28, 28), (1,)]
    """
    images, labels = getattr(loader, "images", None), getattr(loader, "labels", None)
    if isinstance(images, np.ndarray) and isinstance(labels, np.ndarray) and len(labels):
        return (images[0], labels[0])  # InMemoryLoader
    dataset = getattr(loader, "dataset", None)
    if dataset is None or isinstance(dataset, paddle.io.IterableDataset) or not hasattr(dataset, "__getitem__"):
        return None
    try:
        if len(dataset) == 0:
            return None
    except TypeError:
        return None
    with _rng_untouched():
        sample = dataset[0]
    return tuple(sample) if isinstance(sample, (tuple, list)) else (sample,)


def _is_pil(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.")


def _dtype(value: Any) -> str | None:
    if isinstance(value, float):
        return "float"
    if isinstance(value, (bool, int, np.integer)):
        return "int64"
    dtype = getattr(value, "dtype", None)
    return None if dtype is None else str(dtype).replace("paddle.", "")


def _default_collate(loader: Any) -> bool:
    from paddle.io.dataloader.collate import default_collate_fn

    collate = getattr(loader, "collate_fn", None)
    return collate is None or collate is default_collate_fn


def check_data(model: Any, loader: Any, what: str = "train_data") -> None:
    """Check the first sample of ``loader`` against the model: no PIL images, integer labels for
    ``CrossEntropyLoss``, and as many values per sample as the ``InputSpec`` describes.

    Raises:
        FitInputError: what is wrong, and how to fix it.

    Examples:
        >>> from paddle_mnist_hapi import create_model, specs_for
        >>> from paddle_mnist_hapi.data import MNIST
        >>> model = paddle.Model(create_model("lenet5"), *specs_for("lenet5"))
        >>> model.prepare(loss=paddle.nn.CrossEntropyLoss())
        >>> floats = MNIST.from_arrays(np.zeros((2, 28, 28), np.uint8), np.arange(2))
        >>> floats.labels = floats.labels.astype("float32")
        >>> check_data(model, paddle.io.DataLoader(floats, batch_size=2))
        Traceback (most recent call last):
        ...
        paddle_mnist_hapi.errors.FitInputError: The labels of train_data are float32, but CrossEntropyLoss ...
    """
    sample = first_sample(loader)
    if sample is None:
        return
    if _default_collate(loader):
        _avoid_worker_crash(loader, sample, what)
        for position, value in enumerate(sample):
            if _is_pil(value):
                raise FitInputError(
                    f"The samples of {what} are PIL images (field {position} of dataset[0] is a "
                    f"{type(value).__module__}.{type(value).__name__}), which paddle.io.DataLoader cannot batch: "
                    "its loader thread would die and fit would wait forever. Give the dataset a transform that returns "
                    "arrays, "
                    "e.g. paddle.vision.datasets.MNIST(mode='train', transform=paddle.vision.transforms.ToTensor()) "
                    "(offline: paddle_mnist_hapi.data.paddle_mnist('train', transform=ToTensor())), or use "
                    f"paddle_mnist_hapi.data.MNIST('train'). Received: {type(value).__name__} of size {value.size}"
                )
    inputs = list(getattr(model, "_inputs", None) or [])
    n_inputs = len(inputs) or 1
    labels = sample[n_inputs:]
    loss = getattr(model, "_loss", None)
    if isinstance(loss, paddle.nn.CrossEntropyLoss) and not getattr(loss, "soft_label", False) and labels:
        dtype = _dtype(labels[0])
        if dtype is not None and "float" in dtype:
            raise FitInputError(
                f"The labels of {what} are {dtype}, but CrossEntropyLoss (soft_label=False) needs integer class "
                "ids; training would fail in the backward pass with 'CrossEntropyWithSoftmaxGradCPUKernel is not "
                "implemented for data type float32'. Return the label as int64 in the dataset's __getitem__, "
                "e.g. np.array([label], dtype='int64') (float labels belong to square_error_cost). "
                f"Received: label dtype={dtype}, value={np.asarray(labels[0]).ravel()[:3].tolist()}"
            )
    for spec, value in zip(inputs, sample[:n_inputs], strict=False):
        dims = list(spec.shape or ())[1:]
        if not dims or any(d is None or d < 0 for d in dims):
            continue
        size = int(np.size(value)) if not hasattr(value, "numel") else int(value.numel())
        if size != int(np.prod(dims)):
            raise FitInputError(
                f"The model's InputSpec {spec.name!r} {_shape(spec.shape)} describes {int(np.prod(dims))} values "
                f"per sample, but the samples of {what} have shape {list(np.shape(value))} ({size} values). "
                "model.save(training=False) and export_model build the deployed model from the spec, so it must "
                "describe the samples: e.g. paddle_mnist_hapi.specs_for(model_name), or "
                f"InputSpec([None, {', '.join(str(d) for d in np.shape(value))}], 'float32', 'image'). "
                f"Received: InputSpec{_shape(spec.shape)}, sample shape {list(np.shape(value))}"
            )
    _check_sample_forward(model, sample[:n_inputs], what)


def _check_sample_forward(model: Any, values: tuple[Any, ...], what: str) -> None:
    """A batch of one zero sample, shaped and typed like the data's first sample, must pass the network."""
    if getattr(model, "network", None) is None or not values:
        return
    shapes, dtypes = [], []
    for value in values:
        dtype = _dtype(value)
        if dtype is None or dtype in ("float", "int64") or not hasattr(value, "shape"):
            return  # plain numbers or unknown objects: nothing reliable to try
        shapes.append([int(d) for d in value.shape])
        dtypes.append(dtype)
    if not paddle.in_dynamic_mode():
        return
    zeros = [paddle.zeros([1, *shape], dtype=dtype) for shape, dtype in zip(shapes, dtypes, strict=True)]
    reason = _forward_error(model.network, zeros)
    if reason is not None:
        got = ", ".join(f"{shape} {dtype}" for shape, dtype in zip(shapes, dtypes, strict=True))
        raise FitInputError(
            f"The samples of {what} ({got}) do not fit the network: a batch of them fails in "
            f"{type(model.network).__name__}.forward ({reason}). Make the dataset return what the network takes, "
            f"e.g. {_wanted(model)} (reshape and astype('float32') in __getitem__ "
            f"or the transform). Received: sample {got}"
        )


def _wanted(model: Any) -> str:
    """What the model's first InputSpec describes for one sample, e.g. ``float32 [3, 32, 32]``."""
    inputs = list(getattr(model, "_inputs", None) or [])
    dims = list(inputs[0].shape or ())[1:] if inputs else []
    if not dims or any(d is None or d < 0 for d in dims):
        return "float32 [1, 28, 28] for a convolutional network of the zoo"
    dtype = str(inputs[0].dtype).replace("paddle.", "")
    return f"{dtype} [{', '.join(str(d) for d in dims)}] as the model's InputSpec {inputs[0].name!r} says"


def _avoid_worker_crash(loader: Any, sample: tuple[Any, ...], what: str) -> None:
    """Turn off shared memory for a worker DataLoader whose samples are Paddle tensors.

    Paddle 3.3.1's worker hands each batch of Paddle tensors to the queue as
    ``tensor.get_tensor()``, a view whose owner can be freed while the queue's
    feeder thread still pickles it: the workers die with "malloc(): smallbin
    double linked list corrupted" or a segmentation fault (seen in 7 of 7 runs
    with ``transform=ToTensor()``; 0 of 6 with ``use_shared_memory=False`` or
    a numpy transform; docs/migrating.md has the reproduction). The loader's
    iterator reads ``use_shared_memory`` when an epoch starts, so setting it
    here, before the first epoch, is enough.
    """
    if getattr(loader, "num_workers", 0) and getattr(loader, "use_shared_memory", False):
        if any(isinstance(value, paddle.Tensor) for value in sample):
            loader.use_shared_memory = False
            log.warning(
                "The samples of %s are Paddle tensors (e.g. transform=ToTensor()) and its DataLoader has %d "
                "workers: with shared memory Paddle's workers crash intermittently (segmentation fault). "
                "use_shared_memory is turned off for this loader. Faster: a transform that returns numpy arrays, "
                "or paddle_mnist_hapi.data.MNIST / InMemoryLoader, which need no workers.",
                what,
                loader.num_workers,
            )


def _shape(shape: Any) -> str:
    return "[" + ", ".join("None" if d is None or d < 0 else str(d) for d in shape) + "]"


def spec_mismatch(model: Any) -> str | None:
    """Why the network cannot take a batch shaped like the model's ``InputSpec``, or None when it can.

    Runs the network once on zeros of that shape (batch of one, eval mode, no
    gradients, RNG states restored). Specs with a free dimension other than
    the batch, or no spec at all, are not tried (None).

    Examples:
        >>> from paddle_mnist_hapi import create_model, specs_for
        >>> spec_mismatch(paddle.Model(create_model("lenet5"), *specs_for("lenet5"))) is None
        True
    """
    inputs = list(getattr(model, "_inputs", None) or [])
    if not inputs or any(len(spec.shape or ()) < 2 for spec in inputs):
        return None  # no spec (hapi makes up [-1]); export_model refuses that on its own
    if any(d is None or d < 0 for spec in inputs for d in list(spec.shape)[1:]):
        return None  # a free dimension other than the batch: no single shape to try
    if not paddle.in_dynamic_mode():
        return None
    zeros = [paddle.zeros([1, *list(spec.shape)[1:]], dtype=spec.dtype) for spec in inputs]
    reason = _forward_error(model.network, zeros)
    if reason is None:
        return None
    specs = ", ".join(f"{spec.name!r} {_shape(spec.shape)}" for spec in inputs)
    return (
        f"The model's InputSpec {specs} does not fit the network: a batch of that shape fails in "
        f"{type(model.network).__name__}.forward ({reason})"
    )


def _forward_error(network: Any, inputs: list[paddle.Tensor]) -> str | None:
    """Run ``network`` once on ``inputs`` (eval mode, no gradients, RNG untouched); Paddle's complaint or None."""
    if not paddle.in_dynamic_mode():
        return None  # hapi's static-graph mode: a forward here would add ops to the program
    was_training = network.training
    try:
        network.eval()
        with paddle.no_grad(), _rng_untouched():
            network(*inputs)
    except Exception as exc:  # Paddle raises ValueError, RuntimeError, ... for an input it cannot take
        reason = " ".join(str(exc).split()).split(" [Hint:")[0]
        return reason[:300] + ("..." if len(reason) > 300 else "")
    finally:
        if was_training:
            network.train()
    return None


#: How to fix a spec that does not fit, when no sample tells the input's shape (see :func:`spec_fix`).
SPEC_FIX = (
    "Pass the spec of the input the network takes, e.g. paddle.Model(net, *paddle_mnist_hapi.specs_for(model_name)) "
    "for a network of the zoo, or InputSpec([None, C, H, W], 'float32', 'image') with your input's shape."
)


def spec_fix(sample: Any = None) -> str:
    """How to fix a spec that does not fit: a spec built from one sample's shape and dtype when there is one.

    Examples:
        >>> spec_fix(np.zeros((3, 32, 32), np.float32))  # doctest: +ELLIPSIS
        "Pass the spec of the samples ...: paddle.Model(net, InputSpec([None, 3, 32, 32], 'float32', 'image'), ..."
    """
    dtype = None if sample is None else _dtype(sample)
    if dtype is None or (dtype in ("float", "int64") and not hasattr(sample, "shape")):
        return SPEC_FIX
    shape = ", ".join(str(int(d)) for d in np.shape(sample))
    return (
        "Pass the spec of the samples the network is trained on: "
        f"paddle.Model(net, InputSpec([None, {shape}], '{dtype}', 'image'), labels) (specs_for(name) gives it "
        "for a network of the zoo)."
    )


def check_spec(model: Any, sample: tuple[Any, ...] | None = None) -> None:
    """Refuse an ``InputSpec`` the network cannot take (see :func:`spec_mismatch`).

    Args:
        model (paddle.Model): the model ``fit`` runs.
        sample (tuple, optional): the first sample of the training data; the suggested spec is
            built from its first field's shape and dtype. Default: None.

    Raises:
        FitInputError: ``model.save(training=False)`` and ``export_model`` would fail after training.
    """
    problem = spec_mismatch(model)
    if problem is not None:
        raise FitInputError(
            f"{problem}. Training would not notice (it ignores the spec), but model.save(path, training=False) "
            f"and export_model would fail after it. {spec_fix(sample[0] if sample else None)}"
        )
