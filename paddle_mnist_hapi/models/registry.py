"""The model registry: ``@register_model``, ``create_model``, ``list_models``.

A factory is registered once and is then built, listed, tested and exported
by name. Each entry records the input preset it expects (``image`` or
``flat``) and where the architecture comes from.

Examples:
    >>> from paddle_mnist_hapi.models.registry import create_model, list_models
    >>> list_models("lenet*")
    ['lenet5', 'lenet_sigmoid', 'lenet_wide']
    >>> list(create_model("linear", num_classes=10)(paddle.zeros([2, 1, 28, 28])).shape)
    [2, 10]
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, overload

import paddle

from paddle_mnist_hapi.errors import ConfigError, UnknownModelError

__all__ = ["ModelEntry", "create_model", "list_models", "model_entry", "register_model"]

Factory = Callable[..., paddle.nn.Layer]


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one model."""

    name: str
    factory: Factory
    input_kind: Literal["image", "flat"]
    source: str


_REGISTRY: dict[str, ModelEntry] = {}


@overload
def register_model(input_kind: Factory, /) -> Factory: ...


@overload
def register_model(
    input_kind: Literal["image", "flat"] = "image", source: str = ""
) -> Callable[[Factory], Factory]: ...


def register_model(
    input_kind: Literal["image", "flat"] | Factory = "image", source: str = ""
) -> Factory | Callable[[Factory], Factory]:
    """Register ``factory(num_classes=10, **kwargs)`` under its function name.

    Use it bare, as in timm (an ``image`` model), or with the input preset the
    model expects (``'image'``: ``[N, 1, 28, 28]``, ``'flat'``: ``[N, 784]``) and
    where the architecture comes from.

    Examples:
        >>> @register_model
        ... def tiny_cnn(num_classes=10):
        ...     conv = paddle.nn.Conv2D(1, 4, 3)
        ...     return paddle.nn.Sequential(conv, paddle.nn.Flatten(), paddle.nn.Linear(4 * 26 * 26, num_classes))
        >>> @register_model("flat", source="docs example")
        ... def tiny_linear(num_classes=10):
        ...     return paddle.nn.Linear(784, num_classes)
        >>> list_models("tiny_*"), model_entry("tiny_cnn").input_kind
        (['tiny_cnn', 'tiny_linear'], 'image')
    """
    if callable(input_kind):  # bare @register_model
        return _register(input_kind, "image", source)
    if input_kind not in ("image", "flat"):
        raise ConfigError(f"input_kind must be 'image' or 'flat'. Received: input_kind={input_kind!r}")
    kind: Literal["image", "flat"] = input_kind

    def decorator(factory: Factory) -> Factory:
        return _register(factory, kind, source)

    return decorator


def _register(factory: Factory, input_kind: Literal["image", "flat"], source: str) -> Factory:
    name = factory.__name__
    if name in _REGISTRY and _REGISTRY[name].factory is not factory:
        raise ConfigError(f"A model named {name!r} is already registered. Rename the factory. Received: {factory!r}")
    _REGISTRY[name] = ModelEntry(name, factory, input_kind, source)
    return factory


def model_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; unknown names suggest the close ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), _REGISTRY, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownModelError(
            f"Unknown model name.{hint} Known models: {', '.join(sorted(_REGISTRY))}. Received: name={name!r}"
        ) from None


def create_model(name: str, num_classes: int = 10, **kwargs: object) -> paddle.nn.Layer:
    """Build the registered model ``name``.

    Args:
        name (str): a registered name, see :func:`list_models`.
        num_classes (int, optional): size of the output layer. Default: 10.
        **kwargs: passed to the factory.

    Raises:
        UnknownModelError: ``name`` is not registered; close names are suggested.

    Examples:
        >>> net = create_model("lenet5")
        >>> list(net(paddle.zeros([1, 1, 28, 28])).shape)
        [1, 10]
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes must be an integer >= 2. Received: num_classes={num_classes!r}")
    return model_entry(name).factory(num_classes=num_classes, **kwargs)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registered names matching a shell-style ``pattern``.

    Examples:
        >>> list_models("mnist*")
        ['mnist_cnn']
    """
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))
