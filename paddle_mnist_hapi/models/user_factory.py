"""Your own network by name: ``package.module:factory`` wherever the command line takes a model name.

``paddle-mnist train --model my_nets:small_cnn`` and ``paddle-mnist export CKPT --model
my_nets:small_cnn`` import ``small_cnn`` from ``my_nets`` (as ``uvicorn app:app`` does: the
current directory is searched first, then ``sys.path``) and call it with no arguments; it must
return a ``paddle.nn.Layer``. The network's ``InputSpec`` is, in this order:

1. the command line's ``--input-shape C H W`` (float32, named ``image``);
2. the factory's ``input_spec`` attribute: one ``InputSpec`` or a list of them
   (``small_cnn.input_spec = InputSpec([None, 3, 32, 32], "float32", "image")``);
3. MNIST's ``[None, 1, 28, 28]``.

A name without a colon is a model of the registry (:func:`~paddle_mnist_hapi.models.create_model`).

Examples:
    >>> net, inputs, labels = network_and_specs("paddle.vision.models:LeNet")
    >>> type(net).__name__, inputs[0].shape, labels[0].shape
    ('LeNet', (-1, 1, 28, 28), (-1, 1))
    >>> load_factory("paddle.vision.models:Lenet")
    Traceback (most recent call last):
    ...
    paddle_mnist_hapi.errors.ConfigError: Module 'paddle.vision.models' has no attribute 'Lenet' ... 'LeNet', ...
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import paddle
from paddle.static import InputSpec

from paddle_mnist_hapi.errors import ConfigError

__all__ = ["is_factory_path", "load_factory", "model_label", "network_and_specs"]

_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_FORM = "package.module:factory (e.g. my_nets:small_cnn for small_cnn in my_nets.py)"


def is_factory_path(name: str) -> bool:
    """True for ``module:attribute`` (a user's factory), False for a registry name.

    Examples:
        >>> is_factory_path("my_nets:small_cnn"), is_factory_path("lenet5")
        (True, False)
    """
    return ":" in str(name)


def model_label(name: str) -> str:
    """A file-name-safe label for a model name: the factory's own name for ``module:factory``.

    Examples:
        >>> model_label("my_nets:small_cnn"), model_label("lenet5")
        ('small_cnn', 'lenet5')
    """
    return str(name).rpartition(":")[2].rpartition(".")[2] if is_factory_path(name) else str(name)


def load_factory(path: str) -> Callable[..., Any]:
    """Import ``package.module:factory`` and return the factory (not called).

    Raises:
        ConfigError: the path is malformed, the module cannot be imported (or raises while it is),
            the attribute is missing (close names suggested), or it is not callable.
    """
    if not _PATH.match(str(path)):
        raise ConfigError(f"A model factory is given as {_FORM}. Received: model={path!r}")
    module_name, _, attribute = str(path).partition(":")
    if module_name.endswith(".py"):
        raise ConfigError(
            f"A model factory is given as {_FORM}: the module's name, not its file. Did you mean "
            f"{module_name[:-3].replace('/', '.')}:{attribute}? Received: model={path!r}"
        )
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)  # as `python -m` and uvicorn do: modules of the current directory first
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise ConfigError(
                f"Cannot import the module {module_name!r} of --model {path}: no module named {missing!r} in the "
                f"current directory ({here}) or on sys.path. Run from the directory that holds "
                f"{module_name.replace('.', '/')}.py, or install its package. Received: model={path!r}"
            ) from exc
        raise ConfigError(
            f"Importing {module_name!r} for --model {path} failed: it imports {missing!r}, which is not installed. "
            f"Received: model={path!r}"
        ) from exc
    except Exception as exc:  # the user's module raised while it was imported
        raise ConfigError(
            f"Importing {module_name!r} for --model {path} raised {type(exc).__name__}: {_one_line(exc)}. Fix the "
            f"module (run `python -c 'import {module_name}'` to see the traceback). Received: model={path!r}"
        ) from exc
    factory: Any = module
    for part in attribute.split("."):
        if not hasattr(factory, part):
            names = [n for n in dir(factory) if not n.startswith("_") and callable(getattr(factory, n, None))]
            lower = {n.lower(): n for n in names}
            close = [lower[n] for n in difflib.get_close_matches(part.lower(), lower, n=3, cutoff=0.6)]
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(
                f"Module {module_name!r} has no attribute {part!r} (from --model {path}).{hint} Give the function "
                f"or class that builds the network, as {_FORM}. Received: model={path!r}"
            )
        factory = getattr(factory, part)
    if not callable(factory):
        raise ConfigError(
            f"{path} is a {type(factory).__name__}, not a function or class that builds the network. Give a "
            f"callable that returns a paddle.nn.Layer. Received: model={path!r}"
        )
    return factory


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def _input_specs(factory: Any, path: str, input_shape: Sequence[int] | None) -> list[InputSpec]:
    if input_shape:
        shape = [int(d) for d in input_shape]
        if any(d <= 0 for d in shape):
            raise ConfigError(f"--input-shape takes positive sizes without the batch, e.g. 3 32 32. Received: {shape}")
        return [InputSpec([None, *shape], "float32", "image")]
    declared = getattr(factory, "input_spec", None)
    if declared is None:
        from paddle_mnist_hapi.specs import MNIST_IMAGE_SPEC

        return [MNIST_IMAGE_SPEC]
    specs = list(declared) if isinstance(declared, (list, tuple)) else [declared]
    if not specs or not all(isinstance(spec, InputSpec) for spec in specs):
        raise ConfigError(
            f"{path}.input_spec must be a paddle.static.InputSpec or a list of them, e.g. "
            f"InputSpec([None, 3, 32, 32], 'float32', 'image'). Received: input_spec={declared!r}"
        )
    return specs


def network_and_specs(
    name: str, input_shape: Sequence[int] | None = None
) -> tuple[paddle.nn.Layer, list[InputSpec], list[InputSpec]]:
    """``(network, inputs, labels)`` for ``paddle.Model(network, inputs, labels)``, from a registry name or
    ``package.module:factory`` (see the module's docstring for where the ``InputSpec`` comes from).

    Raises:
        UnknownModelError: a registry name that is not registered.
        ConfigError: the factory cannot be imported or called, or does not return a ``paddle.nn.Layer``.
    """
    from paddle_mnist_hapi.models.registry import create_model
    from paddle_mnist_hapi.specs import MNIST_LABEL_SPEC, specs_for

    if not is_factory_path(name):
        if input_shape:
            raise ConfigError(
                f"--input-shape is for a network of your own (--model package.module:factory); the registered "
                f"{name!r} has its preset. Received: model={name!r}, input_shape={list(input_shape)}"
            )
        return create_model(name), *specs_for(name)
    factory = load_factory(name)
    inputs = _input_specs(factory, name, input_shape)
    try:
        network = factory()
    except Exception as exc:  # the user's factory failed
        raise ConfigError(
            f"Calling {name}() raised {type(exc).__name__}: {_one_line(exc)}. The factory is called with no "
            f"arguments and must return the network (a paddle.nn.Layer). Received: model={name!r}"
        ) from exc
    if not isinstance(network, paddle.nn.Layer):
        raise ConfigError(
            f"{name}() returned a {type(network).__module__}.{type(network).__name__}, not a paddle.nn.Layer. "
            f"Return the network itself (not a paddle.Model or its parameters). Received: model={name!r}"
        )
    return network, inputs, [MNIST_LABEL_SPEC]
