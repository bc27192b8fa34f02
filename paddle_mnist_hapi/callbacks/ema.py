"""``EMA``: an exponential moving average of the weights, evaluated, kept or exported at the user's choice.

After every optimizer update (every ``k``-th batch under
``fit(accumulate_grad_batches=k)``, as hapi updates) the averaged weights move
towards the network's::

    averaged = averaged + (1 - d) * (weights - averaged),   d = min(decay, (1 + n) / (10 + n))

where ``n`` counts the updates averaged so far (the warm-up that Paddle's
PaddleClas and PaddleDetection EMAs and TensorFlow's use, so the first updates
do not drag the average towards the random initial weights). Evaluation inside
``fit`` (and ``model.evaluate(..., callbacks=[ema])``) runs on the averaged
weights and swaps the training weights back right after; at the end of
training the model keeps the averaged weights or the trained ones. The
averaged weights and the update count are the callback's resumable state
(``ResumeCkpt`` stores the weights as safetensors), so a killed run ends
bit-identical to an uninterrupted one. Under ``paddle.distributed.launch`` every
rank averages the same synchronized weights.

Examples:
    >>> import paddle
    >>> from paddle_mnist_hapi import MNIST, create_model, specs_for
    >>> net = create_model("linear")
    >>> model = paddle.Model(net, *specs_for("linear"))
    >>> model.prepare(paddle.optimizer.Adam(1e-3, parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
    >>> ema = EMA(decay=0.99, keep="trained")
    >>> model.fit(MNIST("train", limit=256), batch_size=64, epochs=1, verbose=0, callbacks=[ema])
    >>> ema.updates, sorted(ema.averaged_weights())
    (4, ['layers.0.bias', 'layers.0.weight'])
    >>> with ema.swapped():  # the averaged weights in the network, e.g. to export them
    ...     bool((net.state_dict()["layers.0.weight"].numpy() == ema.averaged_weights()["layers.0.weight"]).all())
    True
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import paddle

from paddle_mnist_hapi._private import static_graph
from paddle_mnist_hapi._private.static_graph import mirrored
from paddle_mnist_hapi.callbacks.base import StatefulCallback, fit_callbacks
from paddle_mnist_hapi.errors import ConfigError

__all__ = ["EMA"]

log = logging.getLogger(__name__)

Keep = Literal["ema", "trained"]

# The in-place lerp kernel without the Python API's checks: it runs ten times per update for LeNet-5.
_lerp_ = getattr(getattr(paddle, "_C_ops", None), "lerp_", None) or paddle.Tensor.lerp_
# Weights in these dtypes (AMP O2 casts the network to float16) are averaged in float32: an update of
# (1 - decay) = 0.001 of a float16 difference would round to nothing.
_LOW_PRECISION = (paddle.float16, paddle.bfloat16)


def _fresh_average(tensor: paddle.Tensor) -> paddle.Tensor:
    tensor = tensor.detach()
    return tensor.astype("float32") if tensor.dtype in _LOW_PRECISION else tensor.clone()


def _as(tensor: paddle.Tensor, like: paddle.Tensor) -> paddle.Tensor:
    return tensor if tensor.dtype == like.dtype else tensor.astype(like.dtype)


class EMA(StatefulCallback):
    """Keep an exponential moving average of the network's weights during ``fit``.

    Args:
        decay (float, optional): the average's decay per optimizer update, in [0, 1). Default: 0.999.
        warmup (bool, optional): use ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates,
            so early updates weigh more. Default: True.
        evaluate_averaged (bool, optional): evaluate on the averaged weights (swapped in for
            each evaluation, swapped back out for training). Default: True.
        keep (str, optional): the weights the network holds when training ends:
            ``'ema'`` (the average, which ``model.save(training=False)`` and
            ``export_model`` then export) or ``'trained'``. Default: ``'ema'``.

    Put it after ``ResumeCkpt``, ``VisualDL`` and ``EarlyStopping`` in the
    callback list: they then see the weights the evaluation ran on, and the
    checkpoint the trained ones (a warning says so otherwise). With
    ``EarlyStopping(restore_best_weights=True)`` in the same ``fit``, in any
    order, the model ends with the weights that scored best (the average
    evaluated then, with ``evaluate_averaged``), whatever ``keep`` says. Under
    AMP O2 (float16 weights) the average is kept in float32.
    """

    restored_on_rollback = True  # NaNGuard's rollback puts the checkpoint's average back with the weights

    def __init__(
        self, decay: float = 0.999, *, warmup: bool = True, evaluate_averaged: bool = True, keep: Keep = "ema"
    ) -> None:
        if not isinstance(decay, (int, float)) or isinstance(decay, bool) or not 0 <= decay < 1:
            raise ConfigError(
                f"decay must be a number in [0, 1), e.g. 0.999 (an average over about 1,000 updates). "
                f"Received: decay={decay!r}"
            )
        if keep not in ("ema", "trained"):
            raise ConfigError(f"keep must be 'ema' or 'trained'. Received: keep={keep!r}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.evaluate_averaged = bool(evaluate_averaged)
        self.keep: Keep = keep
        self._averaged: dict[str, paddle.Tensor] = {}
        self._pairs: list[tuple[paddle.Tensor, paddle.Tensor]] = []  # (network tensor, its average)
        self._backup: list[paddle.Tensor] | None = None  # the training weights while swapped out
        self._paired_with: Any = None  # the network whose tensors _pairs holds
        self._loaded_in_batch = False  # state loaded during a batch (a rollback): that batch is not averaged
        self._scope_mirror: static_graph.ScopeMirror | None = None  # static graph: the weights, as eager tensors
        super().__init__()

    # -- state ---------------------------------------------------------------------------------------

    def reset_state(self) -> None:
        self.updates = 0
        self._averaged = {}
        self._pairs = []

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "decay": self.decay, "warmup": self.warmup}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])

    def state_tensors(self) -> dict[str, paddle.Tensor]:
        return dict(self._averaged)

    @mirrored
    def load_state_tensors(self, tensors: dict[str, paddle.Tensor]) -> None:
        self._averaged = {
            name: tensor.clone() if isinstance(tensor, paddle.Tensor) else paddle.to_tensor(tensor)
            for name, tensor in tensors.items()
        }
        self._pairs = []
        self._loaded_in_batch = True

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        # The average continues across fit calls (reset at construction, or loaded by ResumeCkpt).
        self._warn_about_order()
        if static_graph.is_static(self.model):  # average the scope's weights through eager copies
            self._scope_mirror, self._pairs = static_graph.ScopeMirror(self.model.network), []

    @mirrored
    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._swap_back()
        if self.keep == "ema" and self._averaged and not self._best_weights_restored():
            with paddle.no_grad():
                for live, average in self._ensure_pairs():
                    live.copy_(_as(average, live), False)
        super().on_train_end(logs)

    @staticmethod
    def _best_weights_restored() -> bool:
        """Whether an ``EarlyStopping(restore_best_weights=True)`` of this fit puts its best weights in the network."""
        return any(
            getattr(c, "restore_best_weights", False) is True and getattr(c, "best_weights", None) is not None
            for c in fit_callbacks()
        )

    # -- public --------------------------------------------------------------------------------------

    def current_decay(self) -> float:
        """The decay the next update uses (with the warm-up).

        Examples:
            >>> EMA(0.999).current_decay(), EMA(0.999, warmup=False).current_decay()
            (0.1, 0.999)
        """
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    def averaged_weights(self) -> dict[str, np.ndarray]:
        """A copy of the averaged weights, by the network's ``state_dict`` names (empty before training)."""
        return {name: tensor.numpy().copy() for name, tensor in self._averaged.items()}

    @mirrored
    def evaluated_weights(self) -> dict[str, np.ndarray] | None:
        """The weights evaluation runs on when they are not the network's own (the average), else None.

        ``EarlyStopping(restore_best_weights=True)`` keeps these as the best weights, whatever the callbacks' order.
        """
        if not (self.evaluate_averaged and self._averaged):
            return None
        mirror = self._scope_mirror
        network = mirror.tensors if mirror is not None else dict(self.model.network.state_dict()) if self.model else {}
        return {name: _as(tensor, network.get(name, tensor)).numpy().copy() for name, tensor in self._averaged.items()}

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """Hold the averaged weights in the network inside the ``with`` block, the previous ones after it.

        Raises:
            ConfigError: there is no average yet (train with this callback first).
        """
        if not self._averaged:
            raise ConfigError("EMA has no averaged weights yet: train with the callback first, then swap them in.")
        already = self._backup is not None
        if not already:
            self._swap_in()
        try:
            yield
        finally:
            if not already:
                self._swap_back()

    # -- averaging -----------------------------------------------------------------------------------

    def _ensure_pairs(self) -> list[tuple[paddle.Tensor, paddle.Tensor]]:
        if self._pairs and self._paired_with is not self.model.network:
            self._swap_back()
            self._pairs = []  # the callback was given another model: pair its tensors afresh
        if not self._pairs:
            self._paired_with = self.model.network
            mirror = self._scope_mirror
            network_state = mirror.tensors if mirror is not None else self.model.network.state_dict()
            if not self._averaged:  # a fresh average starts at the current weights
                self._averaged = {
                    name: _fresh_average(tensor)
                    for name, tensor in network_state.items()
                    if paddle.is_floating_point(tensor)
                }
            missing = sorted(set(self._averaged) - set(network_state))
            if missing:
                raise ConfigError(
                    f"The averaged weights do not fit this network: it has no {', '.join(missing[:3])}. "
                    "Build the model the EMA (or its checkpoint) was made with."
                )
            self._pairs = [(network_state[name], average) for name, average in self._averaged.items()]
        return self._pairs

    @mirrored
    def on_train_batch_begin(self, step: int, logs: dict[str, Any] | None = None) -> None:
        self._swap_back()  # never train on the averaged weights
        self._ensure_pairs()
        self._loaded_in_batch = False

    @mirrored
    def on_train_batch_end(self, step: int, logs: dict[str, Any] | None = None) -> None:
        accumulate = max(1, int(getattr(self.model, "_accumulate", 1) or 1))
        steps = (self.params or {}).get("steps")
        if not ((step + 1) % accumulate == 0 or (steps is not None and step + 1 == steps)):
            return  # hapi did not update the weights after this micro-batch
        if self._loaded_in_batch:
            return  # a rollback replaced this batch's weights and the average: nothing new to average
        rate = 1.0 - self.current_decay()
        weights: dict[Any, paddle.Tensor] = {}  # one weight tensor per dtype, not one conversion per tensor
        with paddle.no_grad():
            for live, average in self._ensure_pairs():
                weight = weights.get(average.dtype)
                if weight is None:
                    weight = weights[average.dtype] = paddle.full([], rate, dtype=average.dtype)
                _lerp_(average, _as(live, average), weight)
        self.updates += 1

    # -- evaluation on the averaged weights ----------------------------------------------------------

    @mirrored
    def _swap_in(self) -> None:
        pairs = self._ensure_pairs()
        with paddle.no_grad():
            self._backup = [live.detach().clone() for live, _ in pairs]
            for live, average in pairs:
                live.copy_(_as(average, live), False)

    @mirrored
    def _swap_back(self) -> None:
        if self._backup is None:
            return
        with paddle.no_grad():
            for (live, _), saved in zip(self._pairs, self._backup, strict=True):
                live.copy_(saved, False)
        self._backup = None

    @mirrored
    def on_eval_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.evaluate_averaged and self._averaged and self._backup is None:
            self._swap_in()

    @mirrored
    def on_eval_end(self, logs: dict[str, Any] | None = None) -> None:
        self._swap_back()

    def _warn_about_order(self) -> None:
        from paddle_mnist_hapi._private import hapi_loop
        from paddle_mnist_hapi.errors import CheckpointError

        try:
            callbacks = list(hapi_loop.find_fit_loop().callbacks.callbacks)
        except CheckpointError:
            return
        if self not in callbacks:
            return
        after = [type(c).__name__ for c in callbacks[callbacks.index(self) + 1 :]]
        late = [name for name in after if name in ("ResumeCkpt", "VisualDL", "EarlyStopping")]
        if late:
            log.warning(
                "EMA comes before %s in the callback list: put EMA last, so that they see the weights evaluation "
                "ran on and ResumeCkpt checkpoints the trained weights.",
                ", ".join(late),
            )
