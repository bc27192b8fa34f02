"""Pick the device to train on: ``auto``, ``cpu`` or ``gpu``.

Examples:
    >>> from paddle_mnist_hapi.device import resolve_device
    >>> resolve_device("cpu")
    'cpu'
"""

from __future__ import annotations

from typing import Literal

from paddle_mnist_hapi.errors import DeviceError

__all__ = ["resolve_device", "set_device"]

DeviceName = Literal["auto", "cpu", "gpu"]


def _gpu_available() -> bool:
    import paddle

    return bool(paddle.device.is_compiled_with_cuda()) and paddle.device.cuda.device_count() > 0


def resolve_device(device: str = "auto") -> str:
    """Return ``'cpu'`` or ``'gpu'`` for a requested device name.

    Args:
        device (str, optional): ``'auto'`` (GPU when Paddle is compiled with
            CUDA and a GPU is visible, else CPU), ``'cpu'`` or ``'gpu'``
            (``'gpu:N'`` also accepted). Default: ``'auto'``.

    Raises:
        DeviceError: ``gpu`` on a CPU-only Paddle build, or an unknown name.

    Examples:
        >>> resolve_device("auto") in ("cpu", "gpu")
        True
    """
    name = device.strip().lower()
    if name == "auto":
        return "gpu" if _gpu_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "gpu" or name.startswith("gpu:"):
        if not _gpu_available():
            raise DeviceError(
                "A GPU was requested, but this Paddle build has no CUDA support or sees no GPU. "
                "Install `paddlepaddle-gpu` from PaddlePaddle's own package index (see docs/getting-started.md), "
                f"or use --device cpu / --device auto. Received: device={device!r}"
            )
        return name
    raise DeviceError(
        f"Unknown device name. Expected one of 'auto', 'cpu', 'gpu' (or 'gpu:N'). Received: device={device!r}"
    )


def set_device(device: str = "auto") -> str:
    """Resolve ``device`` and make it Paddle's current device; return its name.

    Examples:
        >>> set_device("cpu")
        'cpu'
    """
    import paddle

    resolved = resolve_device(device)
    paddle.set_device(resolved)
    return resolved
