"""Paddle's own callback tests (a package, so that its conftest and modules do not shadow tests/conftest.py)."""
