"""``EMA``, ``TrainingHealth`` and the mean evaluation loss under ``paddle.distributed.launch``
(2 CPU processes, gloo): every rank ends with the same average, the same norms and the mean over
the whole evaluation set."""

from __future__ import annotations

import json

import pytest
from test_distributed import _launch

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_ranks_agree_on_the_average_the_norms_and_the_mean_eval_loss(tmp_path, subprocess_env):
    _launch(tmp_path, str(ROOT / "tests/scripts/dist_ema_probe.py"), "--out", str(tmp_path / "out"), env=subprocess_env)
    first, second = (json.loads((tmp_path / f"out.rank{rank}.json").read_text()) for rank in (0, 1))
    assert first["updates"] == second["updates"] == 8  # 16 batches per rank, one update per 2
    assert first["weights"] == second["weights"]
    assert first["average"] == second["average"] != first["weights"]
    assert first["health_updates"] == 8 and first["grad_norm"] == second["grad_norm"] > 0
    # each rank evaluated half of the 400 images; both report the mean over all 400
    assert first["eval_loss"] == pytest.approx(second["eval_loss"], rel=1e-6)
    assert first["eval_loss"] == pytest.approx(first["by_hand"], rel=1e-5)
