"""Reading checkpoints back: the newest valid one of a run, and model weights into a network.

Examples:
    >>> import tempfile, paddle
    >>> from paddle_mnist_hapi.checkpoint.store import CheckpointStore
    >>> run = tempfile.mkdtemp(); net = paddle.nn.Linear(2, 1)
    >>> _ = CheckpointStore(run).write(3, {"model": dict(net.state_dict())}, {"epoch": 0})
    >>> load_weights(paddle.nn.Linear(2, 1), run)   # names of the weights skipped
    []
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import paddle

from paddle_mnist_hapi.checkpoint.store import CheckpointInfo, CheckpointStore, read_tensors
from paddle_mnist_hapi.errors import CheckpointError, CheckpointMismatchError

__all__ = ["latest_valid", "load_network", "load_weights"]


def latest_valid(path: Path) -> CheckpointInfo:
    """A ``ckpt-*`` directory (verified) or a run directory's newest valid checkpoint.

    Raises:
        CheckpointError: nothing valid there.
    """
    if path.name.startswith("ckpt-"):
        return CheckpointStore(path.parent).require(path)
    info = next((i for i in CheckpointStore(path).scan() if i.valid), None)
    if info is None:
        raise CheckpointError(
            f"No valid checkpoint in {path}. Expected ckpt-* directories written by ResumeCkpt. "
            f"Received: checkpoint={str(path)!r}"
        )
    return info


def load_weights(
    target: paddle.Model | paddle.nn.Layer, checkpoint: str | os.PathLike[str], *, strict: bool = True
) -> list[str]:
    """Load a checkpoint's model weights (e.g. the best one, for evaluation or export).

    Args:
        target (paddle.Model|paddle.nn.Layer): the model to load into.
        checkpoint (str|PathLike): a ``ckpt-*`` directory, or a run directory
            (then its newest valid checkpoint).
        strict (bool, optional): refuse any name or shape mismatch. When False,
            load what fits and return the names that were skipped. Default: True.

    Raises:
        CheckpointError: no valid checkpoint there.
        CheckpointMismatchError: ``strict`` and the weights do not fit the model.
    """
    info = latest_valid(Path(checkpoint))
    network = target.network if isinstance(target, paddle.Model) else target
    return load_network(network, read_tensors(info.path / "model.safetensors"), strict=strict)


def load_network(network: paddle.nn.Layer, saved: dict[str, Any], *, strict: bool) -> list[str]:
    """Put ``saved`` tensors into ``network``; return the names skipped (``strict``: refuse any)."""
    current = network.state_dict()
    bad = [k for k in current if k not in saved or list(saved[k].shape) != list(current[k].shape)]
    bad += [k for k in saved if k not in current]
    if bad and strict:
        raise CheckpointMismatchError(
            f"The checkpoint's weights do not fit this model: {len(bad)} tensors differ in name or shape "
            f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}). Build the model the checkpoint was "
            "written with, or start a new run from what fits: ResumeCkpt(new_dir, init_from=...) / strict=False."
        )
    fitting = {k: v for k, v in saved.items() if k in current and list(v.shape) == list(current[k].shape)}
    if not fitting:
        raise CheckpointMismatchError("No tensor of the checkpoint fits this model. Build the matching model.")
    network.set_state_dict(fitting)
    return sorted(set(bad))
