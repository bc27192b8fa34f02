"""Which checkpoints a run keeps: the newest ``keep_last`` and the ``keep_best`` best by a metric.

"Better" is the shared monitor rule (:meth:`MonitorCallback.is_improvement`:
``mode`` and ``min_delta``): a checkpoint enters the best ``k`` only if it beats
the worst of them by more than ``min_delta``, so an equal or barely better later
value does not push out an earlier one.

Examples:
    >>> from pathlib import Path
    >>> from paddle_mnist_hapi.callbacks.monitor import MonitorCallback
    >>> from paddle_mnist_hapi.checkpoint.store import CheckpointInfo
    >>> infos = [CheckpointInfo(Path(f"ckpt-{s}"), s, True, "", {"monitor_value": v})
    ...          for s, v in [(4, 0.90), (3, 0.905), (2, 0.95), (1, 0.80)]]   # newest first
    >>> rule = MonitorCallback(monitor="acc", min_delta=0.01)
    >>> [i.global_step for i in best_k(infos, 2, rule.is_improvement)]
    [2, 3]
    >>> sorted(p.name for p in kept(infos, 1, 1, rule.is_improvement))
    ['ckpt-2', 'ckpt-4']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from paddle_mnist_hapi.checkpoint.store import CheckpointInfo

__all__ = ["best_k", "kept"]

Improves = Callable[[float, "float | None"], bool]


def best_k(infos: Sequence[CheckpointInfo], k: int, improves: Improves) -> list[CheckpointInfo]:
    """The ``k`` best checkpoints by their ``monitor_value``, best first (``infos`` newest first)."""
    top: list[CheckpointInfo] = []
    for info in sorted(infos, key=lambda i: i.global_step):  # oldest first: earlier ones win ties
        value = info.state.get("monitor_value")
        if value is None:
            continue
        if len(top) < k or improves(value, top[-1].state["monitor_value"]):
            position = next(
                (n for n, other in enumerate(top) if improves(value, other.state["monitor_value"])), len(top)
            )
            top.insert(position, info)
            del top[k:]
    return top


def kept(infos: Sequence[CheckpointInfo], keep_last: int, keep_best: int, improves: Improves | None) -> set:
    """Paths of the checkpoints to keep: the newest ``keep_last`` plus, with a rule, the best ``keep_best``."""
    keep = {info.path for info in list(infos)[:keep_last]}
    if improves is not None:
        keep |= {info.path for info in best_k(infos, keep_best, improves)}
    return keep
