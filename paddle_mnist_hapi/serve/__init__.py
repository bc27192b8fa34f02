"""``paddle-mnist serve``: an exported model behind HTTP, with a page to draw on.

- :mod:`~paddle_mnist_hapi.serve.batching`: :class:`MicroBatcher`, one worker thread that owns
  the ``paddle.inference`` predictor and runs concurrent requests as one batch;
- :mod:`~paddle_mnist_hapi.serve.app`: the Starlette application (``POST /predict``,
  ``GET /health``, ``GET /metadata``, ``GET /`` the drawing page in ``index.html``);
- :mod:`~paddle_mnist_hapi.serve.server`: :func:`run_server`, uvicorn on a socket bound here.

The web stack is the optional extra ``pip install 'paddle-mnist-hapi[serve]'``;
:func:`missing_packages` tells whether it is installed, without importing it at
package import.

Examples:
    >>> missing_packages()  # with the serve extra installed
    []
"""

from __future__ import annotations

import importlib

__all__ = ["INSTALL_HINT", "missing_packages"]

#: What to run when the serve extra is missing.
INSTALL_HINT = "pip install 'paddle-mnist-hapi[serve]'"
_REQUIRED = {"starlette": "starlette", "uvicorn": "uvicorn", "python_multipart": "python-multipart"}


def missing_packages() -> list[str]:
    """The distributions of the ``serve`` extra that cannot be imported here (empty when all are)."""
    missing = []
    for module, distribution in _REQUIRED.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(distribution)
    return missing
