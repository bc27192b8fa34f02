"""Paddle's own callback tests (the files beside this one) again, in PIR static-graph mode, with ours swapped in.

Paddle runs only the second half of the early-stopping test in static mode; here every test runs whole under
``paddle.enable_static()``. conftest.py serves the data and swaps in our classes here too.
"""

from __future__ import annotations

import unittest

import pytest

from paddle_upstream import test_callback_early_stop, test_callback_reduce_lr_on_plateau, test_callback_visualdl
from paddle_upstream.conftest import pir_static

CASES = {
    "test_callback_early_stop": test_callback_early_stop.TestCallbacks,
    "test_callback_reduce_lr_on_plateau": test_callback_reduce_lr_on_plateau.TestReduceLROnPlateau,
    "test_callback_visualdl": test_callback_visualdl.TestCallbacks,
}


@pytest.mark.parametrize("name", list(CASES))
def test_in_pir_static_mode(name, paddle_upstream):
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(CASES[name])
    with pir_static():
        result = unittest.TestResult()
        suite.run(result)
    problems = [f"{case.id()}:\n{text}" for case, text in result.errors + result.failures]
    assert result.testsRun == suite.countTestCases() > 0 and not problems, "\n".join(problems)
