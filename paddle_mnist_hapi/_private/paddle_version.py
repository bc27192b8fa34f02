"""The Paddle releases this library supports, checked once when the package is imported.

The check does not import Paddle (``import paddle`` takes about 2 s): it reads
the version file of the installed Paddle, or ``paddle.__version__`` when Paddle
is already imported. Keep ``SUPPORTED`` in step with setup.cfg's ``[cpu]`` extra
(a test compares them) and with docs/compat.md (``make compat``).

Examples:
    >>> check("3.3.1")
    >>> check("2.6.2")
    Traceback (most recent call last):
    ...
    paddle_mnist_hapi.errors.PaddleVersionError: paddle-mnist-hapi needs PaddlePaddle >=3.0,<3.4, but 2.6.2 ...
"""

from __future__ import annotations

import importlib.util
import re
import sys
import warnings
from pathlib import Path

from paddle_mnist_hapi.errors import PaddleVersionError

__all__ = ["SUPPORTED", "check", "installed_version"]

#: The supported range, as in setup.cfg: ``paddlepaddle>=3.0,<3.4``.
SUPPORTED = ">=3.0,<3.4"
_LOWEST, _ABOVE = (3, 0), (3, 4)


def installed_version() -> str | None:
    """Paddle's version without importing Paddle; None when it cannot be found.

    Reads ``full_version`` from the ``paddle/version/__init__.py`` that every
    Paddle build generates (CPU and GPU wheels alike), or ``paddle.__version__``
    when Paddle is already imported.
    """
    paddle = sys.modules.get("paddle")
    if paddle is not None and isinstance(getattr(paddle, "__version__", None), str):
        return paddle.__version__
    try:
        spec = importlib.util.find_spec("paddle")
        if spec is None or not spec.submodule_search_locations:
            return None
        for folder in spec.submodule_search_locations:
            version_file = Path(folder) / "version" / "__init__.py"
            if version_file.is_file():
                found = re.search(r"^full_version\s*=\s*['\"]([^'\"]+)['\"]", version_file.read_text(), re.M)
                return found[1] if found else None
    except (ImportError, OSError, ValueError):
        return None
    return None


def check(version: str | None) -> None:
    """Refuse a Paddle older than the supported range; warn about one newer than the tested ones.

    Raises:
        PaddleVersionError: ``version`` is below the supported range.
    """
    match = re.match(r"(\d+)\.(\d+)", version or "")
    if match is None:
        return  # no Paddle found (the first ``import paddle`` will say so) or an unparsable build
    release = (int(match[1]), int(match[2]))
    if release == (0, 0):
        return  # a develop build from source reports 0.0.0
    if release < _LOWEST:
        raise PaddleVersionError(
            f"paddle-mnist-hapi needs PaddlePaddle {SUPPORTED}, but {version} is installed. Install a supported "
            f"release: pip install 'paddlepaddle{SUPPORTED}' (CPU), or paddlepaddle-gpu of that range from "
            f"PaddlePaddle's own index (see docs/getting-started.md). Received: paddle {version}"
        )
    if release >= _ABOVE:
        warnings.warn(
            f"paddle-mnist-hapi is tested with PaddlePaddle {SUPPORTED} (docs/compat.md); {version} is newer. "
            "If something breaks, install a release in that range, or run `make compat` to test this one.",
            UserWarning,
            stacklevel=3,
        )
