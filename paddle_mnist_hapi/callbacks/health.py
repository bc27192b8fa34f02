"""``TrainingHealth``: gradient and parameter norms, cheap enough to leave on.

Every ``log_freq`` optimizer updates it measures, at the moment the optimizer
applies them, the global L2 norm of the gradients (after
``accumulate_grad_batches`` summed them, after AMP unscaled them, before any
gradient clipping), the global L2 norm of the parameters they update, and with
``per_layer=True`` each parameter's gradient norm. ``VisualDL`` writes them as
``health/grad_norm``, ``health/param_norm`` and ``health/grad_norm/<parameter>``;
``MetricsLog`` adds them to its ``step`` records (keys ``grad_norm``,
``param_norm``, ``grad_norm/<parameter>``); ``plot_metrics`` draws ``health.png``.

The measurement hooks into the optimizer's gradient-clip slot (Paddle calls it
with every ``(parameter, gradient)`` pair right before the update; the user's
own ``grad_clip`` still runs, after the measurement) for the duration of
``fit``. Between two measurements it costs nothing; a measurement is two
reductions per parameter tensor. The update count is resumable state, so a
resumed run measures at the same updates.

Examples:
    >>> import paddle
    >>> from paddle_mnist_hapi import MNIST, create_model, specs_for
    >>> from paddle_mnist_hapi.callbacks import MetricsLog, read_metrics
    >>> import tempfile, pathlib
    >>> net = create_model("linear")
    >>> model = paddle.Model(net, *specs_for("linear"))
    >>> model.prepare(paddle.optimizer.SGD(0.1, parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "metrics.jsonl"
    >>> model.fit(MNIST("train", limit=256), batch_size=64, verbose=0,
    ...           callbacks=[MetricsLog(path, log_freq=2), TrainingHealth(log_freq=2, per_layer=True)])
    >>> record = read_metrics(path)[0]
    >>> record["step"], record["grad_norm"] > 0, record["param_norm"] > 0, "grad_norm/layers.0.weight" in record
    (2, True, True, True)
"""

from __future__ import annotations

import logging
import math
from typing import Any

import paddle
from paddle.nn.clip import ClipGradBase

from paddle_mnist_hapi._private.checks import check_int
from paddle_mnist_hapi.callbacks.base import StatefulCallback, publish_scalars

__all__ = ["TrainingHealth"]

log = logging.getLogger(__name__)


class _NormProbe(ClipGradBase):
    """Sits in the optimizer's ``_grad_clip`` slot: measures when armed, then runs the user's clip (if any)."""

    def __init__(self, inner: Any, owner: TrainingHealth) -> None:
        super().__init__()
        self.inner, self.owner = inner, owner

    def _measure(self, params_grads: list[tuple[Any, Any]]) -> None:
        if self.owner._armed:
            self.owner._armed = False
            self.owner._measure(params_grads)

    def _dygraph_clip(self, params_grads: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
        self._measure(params_grads)
        return self.inner(params_grads) if self.inner is not None else params_grads

    def _static_clip(self, params_grads: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
        return self.inner(params_grads) if self.inner is not None else params_grads

    _pir_clip = _static_clip


class TrainingHealth(StatefulCallback):
    """Measure gradient and parameter norms every ``log_freq`` optimizer updates (see the module docstring).

    Args:
        log_freq (int, optional): measure every this many optimizer updates (batches,
            without gradient accumulation). Default: 10.
        per_layer (bool, optional): also each parameter's gradient norm. Default: False.
    """

    # Read by the check at the start of fit (``static_graph.check_callbacks``).
    static_graph_refusal = (
        "it measures the gradients at the optimizer's update, and in static-graph mode the gradients and the "
        "update exist only inside Paddle's executor, out of a callback's reach."
    )

    def __init__(self, log_freq: int = 10, *, per_layer: bool = False) -> None:
        check_int("log_freq", log_freq, 1)
        self.log_freq = log_freq
        self.per_layer = bool(per_layer)
        self._armed = False
        self._probe: _NormProbe | None = None
        self._names: dict[int, str] = {}
        self.last: dict[str, float] = {}
        super().__init__()

    def reset_state(self) -> None:
        self.updates = 0

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        # The update count continues across fit calls (reset at construction, or loaded by ResumeCkpt).
        optimizer = getattr(self.model, "_optimizer", None)
        if optimizer is None:
            return
        parameters = getattr(optimizer, "_parameter_list", None) or []
        if parameters and isinstance(parameters[0], dict):
            log.warning("TrainingHealth: an optimizer with parameter groups is not measured (one clip per group).")
            return
        self._names = {id(p): name for name, p in self.model.network.named_parameters()}
        if not isinstance(optimizer._grad_clip, _NormProbe):
            self._probe = _NormProbe(optimizer._grad_clip, self)
            optimizer._grad_clip = self._probe

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        optimizer = getattr(self.model, "_optimizer", None)
        if self._probe is not None and optimizer is not None and optimizer._grad_clip is self._probe:
            optimizer._grad_clip = self._probe.inner  # the optimizer as the user built it
        self._probe, self._armed = None, False
        publish_scalars(self.model, self.key, None)
        super().on_train_end(logs)

    def _updates_now(self, step: int) -> bool:
        accumulate = max(1, int(getattr(self.model, "_accumulate", 1) or 1))
        steps = (self.params or {}).get("steps")
        return (step + 1) % accumulate == 0 or (steps is not None and step + 1 == steps)

    def on_train_batch_begin(self, step: int, logs: dict[str, Any] | None = None) -> None:
        publish_scalars(self.model, self.key, None)  # last batch's values are not this batch's
        self._armed = self._probe is not None and self._updates_now(step) and (self.updates + 1) % self.log_freq == 0

    def on_train_batch_end(self, step: int, logs: dict[str, Any] | None = None) -> None:
        if self._updates_now(step):
            self.updates += 1
        self._armed = False

    def _measure(self, params_grads: list[tuple[Any, Any]]) -> None:
        with paddle.no_grad():
            pairs = [(p, g) for p, g in params_grads if g is not None]
            if not pairs:
                return
            grad_squares = paddle.stack([paddle.square(g.astype("float32")).sum() for _, g in pairs])
            param_squares = paddle.stack([paddle.square(p.astype("float32")).sum() for p, _ in pairs])
            grads, params = grad_squares.numpy(), param_squares.numpy()
        values = {"grad_norm": math.sqrt(float(grads.sum())), "param_norm": math.sqrt(float(params.sum()))}
        if self.per_layer:
            for (parameter, _), square in zip(pairs, grads, strict=True):
                name = self._names.get(id(parameter), parameter.name)
                values[f"grad_norm/{name}"] = math.sqrt(float(square))
        self.last = values
        publish_scalars(self.model, self.key, values)
