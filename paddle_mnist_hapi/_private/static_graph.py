"""The one place that reaches into hapi's static-graph mode (``paddle.enable_static()`` before ``paddle.Model``).

There the network's parameters are values of a program, not tensors: their
numbers live in ``paddle.static.global_scope()`` under each value's ``name``,
and Paddle's eager operations (``clone``, ``isfinite``, ``to_tensor`` ...) either
add ops to the program or abort the process. The callbacks that need the
numbers read and write them here, as numpy arrays by the network's
``state_dict`` names (the names a dygraph checkpoint uses), and do any tensor
math inside :func:`eager`.

Examples:
    >>> import paddle
    >>> net = paddle.nn.Linear(2, 1)
    >>> is_static(paddle.Model(net)), is_static_network(net)
    (False, False)
    >>> sorted(network_arrays(net))
    ['bias', 'weight']
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import paddle

from paddle_mnist_hapi.errors import ConfigError

__all__ = [
    "ScopeMirror",
    "check_callbacks",
    "eager",
    "has_schedule",
    "is_static",
    "is_static_network",
    "is_static_state",
    "learning_rate_name",
    "mirrored",
    "network_arrays",
    "network_tensors",
    "optimizer_names",
    "predict",
    "read",
    "refuse",
    "require_learning_rate_name",
    "set_learning_rate",
    "set_network_arrays",
    "state_names",
    "to_tensors",
    "train_program",
    "use_schedule",
    "write",
]


def is_static(model: Any) -> bool:
    """Whether ``model`` (a ``paddle.Model``) was built under ``paddle.enable_static()``."""
    from paddle.hapi.model import DynamicGraphAdapter

    adapter = getattr(model, "_adapter", None)
    return adapter is not None and not isinstance(adapter, DynamicGraphAdapter)


def is_static_network(network: paddle.nn.Layer) -> bool:
    """Whether ``network``'s parameters are program values (it belongs to a static-graph ``paddle.Model``)."""
    return is_static_state(network.state_dict())


def is_static_state(state: Mapping[str, Any]) -> bool:
    """Whether a ``state_dict`` holds program values (of a static-graph ``paddle.Model``), not tensors."""
    return any(not isinstance(value, paddle.Tensor) for value in state.values())


@contextlib.contextmanager
def eager() -> Iterator[None]:
    """Run Paddle's eager (dygraph) operations inside the block, whatever the global mode.

    Examples:
        >>> paddle.enable_static()
        >>> with eager():
        ...     doubled = paddle.to_tensor([1.0, 2.0]) * 2
        >>> paddle.disable_static(); doubled.numpy().tolist()
        [2.0, 4.0]
    """
    if paddle.in_dynamic_mode():
        yield
        return
    from paddle.base.dygraph import guard

    with guard():
        yield


_SWITCH = (
    "Build the paddle.Model in dygraph mode (call paddle.disable_static() before creating it, or do not call "
    "paddle.enable_static())"
)
_RECEIVED = "Received: a paddle.Model built under paddle.enable_static()"


def refuse(callback: str, reason: str) -> ConfigError:
    """The error a callback raises at the start of a static-graph ``fit`` it cannot work in."""
    return ConfigError(
        f"{callback} needs dygraph mode: {reason} {_SWITCH}, or leave {callback} out of this fit. {_RECEIVED}"
    )


def check_callbacks(model: Any, callbacks: list[Any]) -> None:
    """Refuse a static-graph ``fit`` with a callback that declares it cannot work there (``static_graph_refusal``),
    and one under ``paddle.distributed.launch``.

    Run at the start of ``fit`` by the library's check of its inputs, before any callback changed anything.
    """
    if not is_static(model):
        return
    nranks = paddle.distributed.ParallelEnv().nranks
    if nranks > 1:
        raise ConfigError(
            "The library's callbacks need dygraph mode under paddle.distributed.launch: the ranks agree on the "
            f"mean evaluation loss, on checkpoints and on stops through dygraph collectives. {_SWITCH}. "
            f"{_RECEIVED}, on {nranks} ranks"
        )
    for callback in callbacks:
        reason = getattr(callback, "static_graph_refusal", None)
        if reason:
            raise refuse(type(callback).__name__, reason)


# ---------------------------------------------------------------- the scope


def _tensor(name: str) -> Any:
    var = paddle.static.global_scope().find_var(name)
    if var is None:
        raise ConfigError(
            f"The static-graph variable {name!r} is not in paddle.static.global_scope(). Run fit in the scope "
            "the model was prepared in."
        )
    return var.get_tensor()


def read(name: str) -> np.ndarray:
    """A copy of the value of the scope variable ``name``."""
    return np.array(_tensor(name))


def write(name: str, array: np.ndarray) -> None:
    """Set the scope variable ``name`` to ``array`` (cast to its dtype and shape, on its device)."""
    tensor = _tensor(name)
    current = np.array(tensor)
    value = np.ascontiguousarray(np.asarray(array).astype(current.dtype, copy=False).reshape(current.shape))
    where = tensor._place()
    if where.is_gpu_place():
        place: Any = paddle.CUDAPlace(where.gpu_device_id())
    elif where.is_cpu_place():
        place = paddle.CPUPlace()
    else:
        place = paddle.framework._current_expected_place()
    tensor.set(value, place)


def state_names(network: paddle.nn.Layer) -> dict[str, str]:
    """The network's ``state_dict`` names (parameters and buffers) -> their scope variable names."""
    return {key: value.name for key, value in network.state_dict().items()}


def network_arrays(network: paddle.nn.Layer) -> dict[str, np.ndarray]:
    """Copies of the network's ``state_dict``, by name, in either mode."""
    if not is_static_network(network):
        return {key: value.numpy().copy() for key, value in network.state_dict().items()}
    return {key: read(name) for key, name in state_names(network).items()}


def network_tensors(network: paddle.nn.Layer, state: Mapping[str, Any] | None = None) -> dict[str, paddle.Tensor]:
    """The network's ``state_dict`` as eager tensors: its own in dygraph mode, copies in static-graph mode.

    ``state``: ``network.state_dict()`` when the caller has it already.
    """
    state = network.state_dict() if state is None else state
    if not is_static_state(state):
        return dict(state)
    return to_tensors(network_arrays(network))


def set_network_arrays(network: paddle.nn.Layer, arrays: dict[str, Any]) -> None:
    """Put ``arrays`` (numpy arrays or eager tensors, by ``state_dict`` name) into the network, in either mode."""
    if not is_static_network(network):
        network.set_state_dict(
            {k: v if isinstance(v, paddle.Tensor) else paddle.to_tensor(v) for k, v in arrays.items()}
        )
        return
    names = state_names(network)
    for key, value in arrays.items():
        write(names[key], value.numpy() if isinstance(value, paddle.Tensor) else value)


def to_tensors(arrays: dict[str, np.ndarray]) -> dict[str, paddle.Tensor]:
    """Eager tensors (e.g. for a safetensors file) of numpy arrays, in either mode."""
    with eager():
        return {key: paddle.to_tensor(value) for key, value in arrays.items()}


def optimizer_names(optimizer: Any, network: paddle.nn.Layer) -> dict[str, str]:
    """The optimizer's accumulators as ``'<state_dict name>/<accumulator>'`` -> scope variable name.

    The keys are those of :func:`paddle_mnist_hapi.checkpoint.state.optimizer_tensors` in dygraph mode.
    """
    structured = {value.name: key for key, value in network.state_dict().items()}
    names = {}
    for accumulator, per_parameter in optimizer._accumulators.items():
        for parameter, value in per_parameter.items():
            names[f"{structured.get(parameter, parameter)}/{accumulator}"] = value.name
    for parameter, value in getattr(optimizer, "_master_weights", {}).items():
        names[f"{structured.get(parameter, parameter)}/master_weight"] = value.name
    return names


def predict(model: Any, inputs: list[Any], labels: list[Any]) -> list[np.ndarray]:
    """The network's outputs for one labelled batch, from hapi's evaluation program (nothing is updated).

    hapi's own ``predict_batch`` cannot run here: Paddle 3.3's PIR prediction
    program still waits for the labels it was built with.
    """
    adapter = model._adapter
    feed = {var.name: np.asarray(value) for var, value in zip(adapter._input_vars["eval"], inputs, strict=False)}
    feed.update({var.name: np.asarray(value) for var, value in zip(adapter._label_vars["eval"], labels, strict=False)})
    fetched = adapter._executor.run(
        adapter._compiled_progs["eval"], feed=feed, fetch_list=adapter._endpoints["eval"]["output"], return_numpy=False
    )
    return [np.array(value) for value in fetched]


class ScopeMirror:
    """Eager tensors mirroring a static-graph network's ``state_dict``: ``pull`` reads the scope, ``push`` writes it.

    Code written for a dygraph network's ``state_dict()`` tensors (in-place copies,
    ``lerp_``) runs on ``tensors`` unchanged, inside :func:`eager`.
    """

    def __init__(self, network: paddle.nn.Layer) -> None:
        self.names = state_names(network)
        with eager():
            self.tensors = {key: paddle.to_tensor(read(name)) for key, name in self.names.items()}
        self.depth = 0

    def pull(self) -> None:
        with eager():
            for key, tensor in self.tensors.items():
                tensor.set_value(read(self.names[key]))

    def push(self) -> None:
        for key, tensor in self.tensors.items():
            write(self.names[key], tensor.numpy())


def mirrored(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a callback method eagerly; with a ``ScopeMirror`` in ``self._scope_mirror``, on the scope's weights.

    The outermost decorated call pulls the weights into the mirror first and pushes them back after.
    """

    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        mirror = getattr(self, "_scope_mirror", None)
        with eager():
            if mirror is None:
                return method(self, *args, **kwargs)
            if mirror.depth == 0:
                mirror.pull()
            mirror.depth += 1
            try:
                return method(self, *args, **kwargs)
            finally:
                mirror.depth -= 1
                if mirror.depth == 0:
                    mirror.push()

    return run


# ---------------------------------------------------------------- the learning rate


def train_program(model: Any) -> Any:
    """The program hapi trains with (built by ``Model.prepare``)."""
    program = model._adapter._progs.get("train")
    if program is None:
        raise ConfigError("The static-graph model has no training program: call model.prepare(optimizer, loss).")
    return program


def learning_rate_name(model: Any) -> str | None:
    """The scope variable the training program reads the optimizer's learning rate from.

    None when the program was built with another optimizer: hapi builds it in the first ``prepare()``
    only, so a later ``prepare()`` with a new optimizer does not reach the program.
    """
    program = train_program(model)
    value = model._optimizer._learning_rate_map.get(program)
    return None if value is None else getattr(value, "name", None) or getattr(program, "lr_name", None)


def require_learning_rate_name(model: Any) -> str:
    """:func:`learning_rate_name`, or a ``ConfigError`` that says what to do when there is none."""
    name = learning_rate_name(model)
    if name is None:
        raise ConfigError(
            "The static-graph training program was built with another optimizer than the model's (hapi builds "
            "it in the first prepare() only), so this optimizer's learning rate cannot reach it. Build a new "
            "paddle.Model for the new optimizer. Received: an optimizer given to a second prepare()"
        )
    return name


def _drop_compiled(model: Any) -> None:
    """Make the executor build the training program afresh (it copies ``lr_scheduler`` when it does)."""
    executor = getattr(model._adapter, "_executor", None)
    cache = getattr(executor, "_executor_cache", None)
    for attribute in ("_get_cached_program_and_executor", "_get_cached_program_and_executor_pir_mode"):
        clear = getattr(getattr(cache, attribute, None), "cache_clear", None)
        if clear is not None:
            clear()


def has_schedule(model: Any) -> bool:
    """Whether the training program was built with a schedule (else its learning rate is a constant variable)."""
    return getattr(train_program(model), "lr_scheduler", None) is not None


def use_schedule(model: Any, schedule: paddle.optimizer.lr.LRScheduler) -> Callable[[], None]:
    """Make a training program built with a schedule take its rate from ``schedule`` instead; return an undo.

    The executor feeds ``program.lr_scheduler()`` into the learning-rate variable
    before each run, but reads the attribute only when it builds the program, so
    the built program is dropped (here and in the undo).
    """
    program = train_program(model)
    name = require_learning_rate_name(model)
    before = {attribute: getattr(program, attribute, None) for attribute in ("lr_scheduler", "lr_name")}
    schedule._var_name = name  # the old IR's executor finds the variable by this name, PIR's by lr_name
    program.lr_scheduler, program.lr_name = schedule, name
    _drop_compiled(model)

    def undo() -> None:
        for attribute, value in before.items():
            if value is None:
                with contextlib.suppress(AttributeError):
                    delattr(program, attribute)
            else:
                setattr(program, attribute, value)
        _drop_compiled(model)

    return undo


def set_learning_rate(model: Any, value: float) -> None:
    """Set a constant learning rate of a static-graph model: the variable the program reads, and ``get_lr()``."""
    write(require_learning_rate_name(model), np.asarray(value))
    model._optimizer._learning_rate = float(value)
