"""Fixtures for the doctests in paddle_mnist_hapi/ (kept here, out of the installed package)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _restore_model_registry(request):
    """A doctest that registers a model leaves the registry as it found it."""
    if not isinstance(request.node, pytest.DoctestItem):
        yield
        return
    from paddle_mnist_hapi.models import registry

    saved = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)
