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

import ctypes
import functools
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import paddle

from paddle_mnist_hapi._private import static_graph
from paddle_mnist_hapi.errors import CheckpointMismatchError

__all__ = [
    "amp_level",
    "copy_metric_states",
    "cpu_threads",
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
    "same_schedule_kind",
    "scaler_state",
    "set_lr_state",
    "set_metric_states",
    "set_numpy_rng_state",
    "set_rng_state",
    "set_scaler_state",
    "threads_change",
    "training_tensors",
]


# ---------------------------------------------------------------- RNG
def numpy_rng_state() -> list[Any]:
    return _numpy_rng_data(np.random.get_state())


def _numpy_rng_data(state: tuple[Any, ...]) -> list[Any]:
    """``np.random.get_state()`` as JSON-ready data (what :func:`set_numpy_rng_state` takes)."""
    kind, keys, pos, has_gauss, cached = state
    return [kind, _words_text(keys), int(pos), int(has_gauss), float(cached)]


def set_numpy_rng_state(state: list[Any]) -> None:
    kind, keys, pos, has_gauss, cached = state
    np.random.set_state((kind, _words(keys), pos, has_gauss, cached))


def _words_text(words: Any) -> str:
    """uint32 words (an array or ints) as hex text: as JSON 0.01 ms, where a list of 624 numbers takes 0.1 ms."""
    return np.asarray(words, dtype="<u4").tobytes().hex()


def _words(text_or_list: str | list[int]) -> np.ndarray:
    """What :func:`_words_text` wrote (or, in older checkpoints, the list of numbers) as uint32 words."""
    if isinstance(text_or_list, str):
        return np.frombuffer(bytes.fromhex(text_or_list), dtype="<u4").astype(np.uint32)
    return np.asarray(text_or_list, dtype=np.uint32)


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
    generators, numpy_state, (version, internal, gauss) = snapshot
    return {
        "paddle": [_generator_state(g.__getstate__()) for g in generators],
        "numpy": _numpy_rng_data(numpy_state),
        "python": [version, _words_text(internal), gauss],  # 624 words and the position, all < 2**32
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
    random.setstate((version, tuple(_words(internal).tolist()), gauss))


# ---------------------------------------------------------------- optimizer
def _structured_names(state: Mapping[str, paddle.Tensor]) -> dict[str, str]:
    """``{generated name: structured name}`` of a dygraph ``state_dict`` (its parameters among them)."""
    names: dict[str, str] = {}
    for key, tensor in state.items():
        names.setdefault(tensor.name, key)  # a tensor shared by two layers: its first name, as named_parameters
    return names


def optimizer_tensors(
    optimizer: paddle.optimizer.Optimizer, network: paddle.nn.Layer, state: Mapping[str, Any] | None = None
) -> dict[str, paddle.Tensor]:
    """The optimizer's accumulators (moments, beta powers, velocities ...) by structured name.

    ``state``: ``network.state_dict()`` when the caller has it already (one walk of the layers fewer).
    """
    state = network.state_dict() if state is None else state
    if static_graph.is_static_state(state):  # copies of the scope's values, under the same names
        names = static_graph.optimizer_names(optimizer, network)
        return static_graph.to_tensors({key: static_graph.read(name) for key, name in names.items()})
    names = _structured_names(state)
    out: dict[str, paddle.Tensor] = {}
    for acc_name, per_param in optimizer._accumulators.items():
        for param_name, tensor in per_param.items():
            out[f"{names.get(param_name, param_name)}/{acc_name}"] = tensor
    for param_name, tensor in getattr(optimizer, "_master_weights", {}).items():
        out[f"{names.get(param_name, param_name)}/master_weight"] = tensor
    return out


def training_tensors(network: paddle.nn.Layer, optimizer: paddle.optimizer.Optimizer | None) -> dict[str, Any]:
    """``{"model": state_dict tensors, "optimizer": accumulators}`` (no ``optimizer`` without one), from one
    walk of the layers; eager tensors in either mode (a static graph's: copies of its scope's values)."""
    state = network.state_dict()
    groups = {"model": static_graph.network_tensors(network, state)}
    if optimizer is not None:
        groups["optimizer"] = optimizer_tensors(optimizer, network, state)
    return groups


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

    static = static_graph.optimizer_names(optimizer, network) if static_graph.is_static_network(network) else None
    if static is None and not any(key.endswith("/master_weight") for key in saved):
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
        if static is not None:  # a static graph's accumulators: variables of the scope, there since prepare()
            static_graph.write(static[key], value.numpy())
        else:
            tensor.set_value(value.astype(tensor.dtype))


def lr_state(optimizer: paddle.optimizer.Optimizer) -> dict[str, Any] | None:
    scheduler = optimizer._learning_rate
    if isinstance(scheduler, paddle.optimizer.lr.LRScheduler):
        return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in scheduler.state_dict().items()}
    return None


def _replay(scheduler: paddle.optimizer.lr.LRScheduler, steps: int) -> None:
    """Step ``scheduler`` from its start to ``steps``, as an uninterrupted run with its settings does."""
    verbose, scheduler.verbose = getattr(scheduler, "verbose", False), False
    try:
        scheduler.last_epoch = -1
        scheduler.step()  # what its constructor does: epoch 0
        for _ in range(steps):
            scheduler.step()
    finally:
        scheduler.verbose = verbose


def set_lr_state(optimizer: paddle.optimizer.Optimizer, state: dict[str, Any] | None, recompute: bool = False) -> None:
    """Restore the schedule's position; ``recompute``: its settings changed, so derive the current LR anew.

    A schedule is then replayed from its start to the saved step with its new settings (so a recursive
    one, such as the cosine, does not carry the old length on); so is one whose position its ``state_dict``
    leaves out (``CosineAnnealingWarmRestarts``' ``T_cur``).
    """
    scheduler = optimizer._learning_rate
    if state is None or not isinstance(scheduler, paddle.optimizer.lr.LRScheduler):
        return
    scheduler.set_state_dict(dict(state))
    inner = scheduler
    while hasattr(inner, "inner"):  # wrappers such as callbacks.lr.ScaledLR derive last_lr
        inner = inner.inner
    if recompute or hasattr(inner, "T_cur"):
        try:
            _replay(inner, int(inner.last_epoch))
        except TypeError:  # a schedule stepped with a metric (ReduceOnPlateau): derive it from where it stands
            inner.set_state_dict(dict(state))
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


def amp_level(model: paddle.Model) -> str:
    """hapi's AMP level for ``model`` (``prepare(amp_configs=...)``): ``'O0'`` (none), ``'O1'`` or ``'O2'``.

    Examples:
        >>> amp_level(paddle.Model(paddle.nn.Linear(2, 2)))
        'O0'
    """
    return str(getattr(getattr(model, "_adapter", None), "_amp_level", "O0") or "O0")


def scaler_state(model: paddle.Model) -> dict[str, Any] | None:
    scaler = getattr(model, "_scaler", None)
    if scaler is None or not hasattr(scaler, "state_dict"):
        return None
    return {k: _jsonable(v) for k, v in scaler.state_dict().items()}


def set_scaler_state(model: paddle.Model, state: dict[str, Any] | None) -> None:
    """Restore the AMP loss scaler; create it first, as hapi's first ``train_batch`` would, if it is not there yet.

    hapi makes ``model._scaler`` lazily (``GradScaler(**amp_configs)`` in ``train_batch``) and ``prepare``
    resets it to None, so at the start of ``fit`` there is none to load into.
    """
    if not state:
        return
    scaler = getattr(model, "_scaler", None)
    if scaler is None and amp_level(model) != "O0":
        scaler = model._scaler = paddle.amp.GradScaler(**model._adapter._amp_configs)
    if scaler is not None and hasattr(scaler, "load_state_dict"):
        scaler.load_state_dict({k: _from_jsonable(v) for k, v in state.items()})


# ---------------------------------------------------------------- fingerprint
def _holds_schedules(value: Any) -> bool:
    items = value if isinstance(value, (list, tuple)) else [value]
    return bool(items) and all(isinstance(v, paddle.optimizer.lr.LRScheduler) for v in items)


def _schedule_config(scheduler: Any) -> dict[str, Any]:
    """Type and settings of a schedule, through every wrapper down to the innermost schedule.

    ``ScaledLR``-style wrappers (an ``inner`` schedule) are looked through; a schedule held by another
    (Paddle's ``LinearWarmup(learning_rate=<schedule>)``, or any attribute holding schedules) is nested.

    Examples:
        >>> warm = paddle.optimizer.lr.LinearWarmup(paddle.optimizer.lr.CosineAnnealingDecay(0.1, 90), 10, 0.0, 0.1)
        >>> _schedule_config(warm)["learning_rate"]
        {'type': 'CosineAnnealingDecay', 'T_max': 90, 'eta_min': 0.0, 'base_lr': 0.1}
    """
    while hasattr(scheduler, "inner"):  # look through wrappers such as callbacks.lr.ScaledLR
        scheduler = scheduler.inner
    if not isinstance(scheduler, paddle.optimizer.lr.LRScheduler):
        return {"type": "constant", "value": float(scheduler)}
    skip = {"last_epoch", "last_lr", "verbose", "keys"}
    config: dict[str, Any] = {}
    for key, value in vars(scheduler).items():
        if key in skip or key.startswith("_"):
            continue
        if _holds_schedules(value):  # a schedule inside this one: its own settings count too
            nested = [_schedule_config(v) for v in value] if isinstance(value, (list, tuple)) else None
            config[key] = nested if nested is not None else _schedule_config(value)
        elif isinstance(value, (int, float, str, bool, type(None))):
            config[key] = value
        elif isinstance(value, (list, tuple)):
            config[key] = repr(value)
    return {"type": type(scheduler).__name__, **config}


def _kind(config: Any) -> Any:
    """The types in a schedule's fingerprint (:func:`_schedule_config`), nested as the schedules are."""
    if isinstance(config, list):
        return [_kind(c) for c in config]
    if not isinstance(config, dict):
        return None
    kind = {"type": config.get("type")}
    for key, value in config.items():
        if isinstance(value, (dict, list)):  # only nested schedules are dicts or lists here
            kind[key] = _kind(value)
    return kind


def same_schedule_kind(saved: dict[str, Any] | None, current: dict[str, Any] | None) -> bool:
    """Whether two schedule fingerprints are of one kind (the same types, nested alike), settings aside.

    A resume takes a schedule of the same kind with other settings (e.g. another length) with a note; another
    kind is another setup. A fingerprint written before nested schedules were recorded matches on its types.

    Examples:
        >>> warm = {"type": "LinearWarmup", "warmup_steps": 5, "learning_rate": {"type": "StepDecay", "step_size": 3}}
        >>> longer = {**warm, "learning_rate": {"type": "StepDecay", "step_size": 6}}
        >>> same_schedule_kind(warm, longer), same_schedule_kind(warm, {**warm, "learning_rate": {"type": "LinearLR"}})
        (True, False)
    """

    def within(a: Any, b: Any) -> bool:
        if isinstance(a, dict):
            return isinstance(b, dict) and all(within(v, b.get(k)) for k, v in a.items())
        if isinstance(a, list):
            return isinstance(b, list) and len(a) == len(b) and all(map(within, a, b))
        return a == b

    return within(_kind(saved or {}), _kind(current or {}))


def cpu_threads() -> int | None:
    """The threads Paddle's CPU kernels use now: the OpenMP runtime's count (``OMP_NUM_THREADS``, or
    ``paddle.base.core.set_num_threads`` after import), else ``OMP_NUM_THREADS``; None when neither says.

    Examples:
        >>> from paddle_mnist_hapi.parallel import apply_threads
        >>> apply_threads(2); cpu_threads()
        2
        >>> apply_threads(1); cpu_threads()
        1
    """
    runtime = _openmp_runtime()
    if runtime is not None:
        return int(ctypes.CDLL(runtime).omp_get_max_threads())
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() else None


@functools.cache
def _openmp_runtime() -> str | None:
    """The OpenMP library Paddle loaded (Intel's ``libiomp5`` in the CPU wheel), read from ``/proc/self/maps``."""
    maps = Path("/proc/self/maps")
    for line in maps.read_text().splitlines() if maps.is_file() else []:
        path = line.split()[-1]
        if path.startswith("/") and Path(path).name.split(".so")[0] in ("libiomp5", "libgomp", "libomp"):
            return path
    return None


def threads_change(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """A change of ``cpu_threads`` between two fingerprints: a resume goes on, with a warning, because on some
    CPUs (seen on AMD EPYC, not on Intel Xeon with MKL) another thread count splits floating-point sums
    differently, so the run is no longer bit-identical to an uninterrupted one.

    Examples:
        >>> threads_change({"cpu_threads": 1}, {"cpu_threads": 2})
        'cpu_threads: checkpoint 1, now 2'
        >>> threads_change({}, {"cpu_threads": 2}) is None  # a checkpoint from before it was recorded
        True
    """
    if saved.get("cpu_threads") is None or saved["cpu_threads"] == current.get("cpu_threads"):
        return None
    return f"cpu_threads: checkpoint {saved['cpu_threads']}, now {current.get('cpu_threads')}"


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
        **({"amp_level": amp_level(model)} if amp_level(model) != "O0" else {}),  # O0: as before AMP was recorded
        "cpu_threads": cpu_threads(),  # reported by threads_change, not refused by fingerprint_diff
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
        if a == b or key == "cpu_threads":
            continue
        if key == "parameters" and isinstance(a, dict) and isinstance(b, dict):
            changed = [n for n in sorted(set(a) | set(b)) if a.get(n) != b.get(n)]
            details = ", ".join(f"{n} {a.get(n)} -> {b.get(n)}" for n in changed[:3])
            out.append(f"parameters: {len(changed)} differ ({details}{', ...' if len(changed) > 3 else ''})")
        else:
            out.append(f"{key}: checkpoint {a}, now {b}")
    return out
