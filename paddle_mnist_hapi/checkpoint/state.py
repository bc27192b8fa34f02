"""What a checkpoint holds, captured from and restored into a live ``paddle.Model``.

Optimizer state is keyed by each parameter's *structured* name
(``features.0.weight/moment1``), not by Paddle's generated names
(``conv2d_0.w_0_moment1_0``), so a model rebuilt in the same process (other
generated names) restores exactly. RNG states are plain JSON.

Examples:
    >>> import json, paddle
    >>> _ = paddle.seed(3); state = rng_state(); a = paddle.rand([2])
    >>> set_rng_state(json.loads(json.dumps(state))); bool((paddle.rand([2]) == a).all())
    True
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import paddle

from paddle_mnist_hapi.errors import CheckpointMismatchError

__all__ = [
    "copy_metric_states",
    "fingerprint",
    "fingerprint_diff",
    "jsonable_metric_states",
    "jsonable_rng",
    "load_optimizer_tensors",
    "lr_state",
    "metric_states",
    "numpy_rng_state",
    "optimizer_tensors",
    "rng_snapshot",
    "rng_state",
    "scaler_state",
    "set_lr_state",
    "set_metric_states",
    "set_numpy_rng_state",
    "set_rng_state",
    "set_scaler_state",
]


# ---------------------------------------------------------------- RNG
def numpy_rng_state() -> list[Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def set_numpy_rng_state(state: list[Any]) -> None:
    kind, keys, pos, has_gauss, cached = state
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def _generator_state(state: tuple[Any, ...]) -> list[Any]:
    """``(device, seed, offset, engine)``: the engine's state is text as a list of character codes (6,354 of
    them); kept as a string, its JSON is 0.01 ms instead of 0.35 ms (and a save writes two RNG states)."""
    *head, engine = state
    try:
        return [*head, bytes(engine).decode("latin-1")]
    except (TypeError, ValueError):
        return [*head, list(engine)]


def rng_state() -> dict[str, Any]:
    """Paddle's, numpy's and Python's global RNG states, as JSON-ready data."""
    return jsonable_rng(rng_snapshot())


def rng_snapshot() -> tuple[Any, ...]:
    """The global RNG states as they are now, as copies (0.05 ms); :func:`jsonable_rng` turns them into data
    (0.25 ms more, which a checkpoint's background writer does off the training thread)."""
    return paddle.get_rng_state(), np.random.get_state(), random.getstate()


def jsonable_rng(snapshot: tuple[Any, ...]) -> dict[str, Any]:
    """:func:`rng_snapshot`'s states as JSON-ready data (what :func:`rng_state` returns)."""
    generators, (kind, keys, pos, has_gauss, cached), (version, internal, gauss) = snapshot
    return {
        "paddle": [_generator_state(g.__getstate__()) for g in generators],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    from paddle.base import core

    generators = []
    for item in state["paddle"]:
        *head, engine = item
        if isinstance(engine, str):  # see _generator_state; older checkpoints hold the list itself
            engine = list(engine.encode("latin-1"))
        generator = core.GeneratorState.__new__(core.GeneratorState)
        generator.__setstate__((*head, engine))
        generators.append(generator)
    paddle.set_rng_state(generators)
    set_numpy_rng_state(state["numpy"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


# ---------------------------------------------------------------- optimizer
def _structured_names(network: paddle.nn.Layer) -> dict[str, str]:
    return {param.name: name for name, param in network.named_parameters()}


def optimizer_tensors(optimizer: paddle.optimizer.Optimizer, network: paddle.nn.Layer) -> dict[str, paddle.Tensor]:
    """The optimizer's accumulators (moments, beta powers, velocities ...) by structured name."""
    names = _structured_names(network)
    out: dict[str, paddle.Tensor] = {}
    for acc_name, per_param in optimizer._accumulators.items():
        for param_name, tensor in per_param.items():
            out[f"{names.get(param_name, param_name)}/{acc_name}"] = tensor
    for param_name, tensor in getattr(optimizer, "_master_weights", {}).items():
        out[f"{names.get(param_name, param_name)}/master_weight"] = tensor
    return out


def _trainable(optimizer: paddle.optimizer.Optimizer, network: paddle.nn.Layer) -> list[paddle.Tensor]:
    listed = optimizer._parameter_list or []
    if listed and isinstance(listed[0], dict):
        listed = [p for group in listed for p in group["params"]]
    ids = {id(p) for p in listed}
    return [p for p in network.parameters() if id(p) in ids and not p.stop_gradient]


def load_optimizer_tensors(
    optimizer: paddle.optimizer.Optimizer, network: paddle.nn.Layer, saved: dict[str, paddle.Tensor]
) -> None:
    """Create the optimizer's accumulators now and fill them from ``saved``.

    Raises:
        CheckpointMismatchError: the saved accumulators do not match this optimizer's.
    """
    if not saved:
        return
    from paddle.base import framework

    if not any(key.endswith("/master_weight") for key in saved):
        optimizer._create_accumulators(framework.default_main_program().global_block(), _trainable(optimizer, network))
    current = optimizer_tensors(optimizer, network)
    missing = sorted(set(current) - set(saved))
    extra = sorted(set(saved) - set(current))
    if missing or extra:
        raise CheckpointMismatchError(
            "The checkpoint's optimizer state does not match this optimizer: "
            f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected {extra[:3]}"
            f"{'...' if len(extra) > 3 else ''}. Use the optimizer the checkpoint was written with, or start a "
            "new run from its weights alone: ResumeCkpt(new_dir, init_from=old_dir)."
        )
    for key, tensor in current.items():
        value = saved[key]
        if list(value.shape) != list(tensor.shape):
            raise CheckpointMismatchError(
                f"Optimizer state {key} has shape {list(value.shape)} in the checkpoint, {list(tensor.shape)} here."
            )
        tensor.set_value(value.astype(tensor.dtype))


def lr_state(optimizer: paddle.optimizer.Optimizer) -> dict[str, Any] | None:
    scheduler = optimizer._learning_rate
    if isinstance(scheduler, paddle.optimizer.lr.LRScheduler):
        return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in scheduler.state_dict().items()}
    return None


def set_lr_state(optimizer: paddle.optimizer.Optimizer, state: dict[str, Any] | None, recompute: bool = False) -> None:
    """Restore the schedule's position; ``recompute``: its settings changed, so derive the current LR anew."""
    scheduler = optimizer._learning_rate
    if state is not None and isinstance(scheduler, paddle.optimizer.lr.LRScheduler):
        scheduler.set_state_dict(dict(state))
        if recompute:
            inner = scheduler
            while hasattr(inner, "inner"):  # wrappers such as callbacks.lr.ScaledLR derive last_lr
                inner = inner.inner
            inner.last_lr = inner.get_lr()


# ---------------------------------------------------------------- metrics and AMP
def _jsonable(value: Any) -> Any:
    """JSON for numbers, arrays, numpy scalars and lists of them, keeping numpy dtypes (they change later sums)."""
    if isinstance(value, paddle.Tensor):
        value = value.numpy()
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return {"__scalar__": value.item(), "dtype": str(value.dtype)}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _from_jsonable(value: Any) -> Any:
    if isinstance(value, dict) and "__ndarray__" in value:
        return np.asarray(value["__ndarray__"], dtype=value["dtype"])
    if isinstance(value, dict) and "__scalar__" in value:
        return np.dtype(value["dtype"]).type(value["__scalar__"])
    if isinstance(value, list):
        return [_from_jsonable(v) for v in value]
    return value


_NUMBER = (int, float, bool, np.generic)


def _plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value) and not isinstance(value, tuple)
    return isinstance(value, (*_NUMBER, np.ndarray))


def metric_states(metrics: list[paddle.metric.Metric]) -> list[dict[str, Any]]:
    """The running counters of hapi metrics mid-epoch (e.g. ``Accuracy``'s ``total``/``count``), JSON-ready.

    Examples:
        >>> acc = paddle.metric.Accuracy()
        >>> _ = acc.update(acc.compute(paddle.to_tensor([[0.1, 0.9], [0.8, 0.2]]), paddle.to_tensor([[1], [1]])))
        >>> fresh = paddle.metric.Accuracy(); set_metric_states([fresh], metric_states([acc]))
        >>> float(fresh.accumulate()), fresh.count
        (0.5, [np.int64(2)])
    """
    return [{k: _jsonable(v) for k, v in vars(m).items() if _plain(v)} for m in metrics]


def copy_metric_states(metrics: list[paddle.metric.Metric]) -> list[dict[str, Any]]:
    """A cheap snapshot of the metrics' counters (arrays copied), for :func:`metric_states` later."""
    return [
        {k: (v.copy() if isinstance(v, np.ndarray) else list(v) if isinstance(v, list) else v)
         for k, v in vars(m).items() if _plain(v)}
        for m in metrics
    ]  # fmt: skip


def jsonable_metric_states(snapshot: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """:func:`copy_metric_states`' snapshot as JSON-ready data."""
    return [{k: _jsonable(v) for k, v in state.items()} for state in snapshot]


def set_metric_states(metrics: list[paddle.metric.Metric], states: list[dict[str, Any]]) -> None:
    for metric, state in zip(metrics, states, strict=False):
        for key, value in state.items():
            setattr(metric, key, _from_jsonable(value))


def scaler_state(model: paddle.Model) -> dict[str, Any] | None:
    scaler = getattr(model, "_scaler", None)
    if scaler is None or not hasattr(scaler, "state_dict"):
        return None
    return {k: _jsonable(v) for k, v in scaler.state_dict().items()}


def set_scaler_state(model: paddle.Model, state: dict[str, Any] | None) -> None:
    scaler = getattr(model, "_scaler", None)
    if state and scaler is not None and hasattr(scaler, "load_state_dict"):
        scaler.load_state_dict({k: _from_jsonable(v) for k, v in state.items()})


# ---------------------------------------------------------------- fingerprint
def _schedule_config(scheduler: Any) -> dict[str, Any]:
    while hasattr(scheduler, "inner"):  # look through wrappers such as callbacks.lr.ScaledLR
        scheduler = scheduler.inner
    if not isinstance(scheduler, paddle.optimizer.lr.LRScheduler):
        return {"type": "constant", "value": float(scheduler)}
    skip = {"last_epoch", "last_lr", "verbose", "keys"}
    config = {
        k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v))
        for k, v in vars(scheduler).items()
        if k not in skip and not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None), list, tuple))
    }
    return {"type": type(scheduler).__name__, **config}


def fingerprint(
    model: paddle.Model,
    *,
    batch_size: int | None,
    dataset_len: int | None,
    world_size: int,
    augment: str | None = None,
) -> dict[str, Any]:
    """What a checkpoint belongs to: resuming into anything else is refused.

    ``augment`` describes the loader's data augmentation (settings and seed), when it has one.
    """
    network, optimizer = model.network, model._optimizer
    hyper = {}
    if optimizer is not None:
        for key in ("_beta1", "_beta2", "_epsilon", "_momentum", "_weight_decay", "_lr_ratio", "_use_nesterov"):
            value = getattr(optimizer, key, None)
            if isinstance(value, (int, float, bool)):
                hyper[key.lstrip("_")] = value
    return {
        "network": type(network).__name__,
        "parameters": {name: list(p.shape) for name, p in network.named_parameters()},
        "optimizer": type(optimizer).__name__ if optimizer is not None else None,
        "optimizer_hyperparameters": hyper,
        "lr_schedule": _schedule_config(optimizer._learning_rate) if optimizer is not None else None,
        "batch_size": batch_size,
        "dataset_len": dataset_len,
        "world_size": world_size,
        "accumulate_grad_batches": int(getattr(model, "_accumulate", 1) or 1),
        **({"augment": augment} if augment is not None else {}),
    }


def fingerprint_diff(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between two fingerprints (empty when they match).

    Examples:
        >>> fingerprint_diff({"batch_size": 64}, {"batch_size": 32})
        ['batch_size: checkpoint 64, now 32']
    """
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if a == b:
            continue
        if key == "parameters" and isinstance(a, dict) and isinstance(b, dict):
            changed = [n for n in sorted(set(a) | set(b)) if a.get(n) != b.get(n)]
            details = ", ".join(f"{n} {a.get(n)} -> {b.get(n)}" for n in changed[:3])
            out.append(f"parameters: {len(changed)} differ ({details}{', ...' if len(changed) > 3 else ''})")
        else:
            out.append(f"{key}: checkpoint {a}, now {b}")
    return out
