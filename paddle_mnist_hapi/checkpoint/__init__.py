"""Checkpoint storage and training-state capture behind ``callbacks.ResumeCkpt``.

Examples:
    >>> from paddle_mnist_hapi.checkpoint import CheckpointStore
    >>> CheckpointStore("/nonexistent/dir").scan()
    []
"""

from paddle_mnist_hapi.checkpoint.store import CheckpointInfo, CheckpointStore

__all__ = ["CheckpointInfo", "CheckpointStore"]
