"""The mean evaluation loss under ``paddle.distributed.launch`` (2 CPU processes, gloo) does not count
the samples ``DistributedBatchSampler`` repeats to pad an evaluation set that does not split evenly:
every rank reports the single-process figure, from ``fit``'s evaluation and from ``Model.evaluate``."""

from __future__ import annotations

import json
import subprocess

import pytest
from test_distributed import _launch

from conftest import PYTHON, ROOT

pytestmark = pytest.mark.slow

SCRIPT = str(ROOT / "tests/scripts/dist_eval_loss.py")


def test_two_ranks_report_the_single_process_mean_loss(tmp_path, subprocess_env):
    one = subprocess.run([PYTHON, SCRIPT, "--out", str(tmp_path / "one")], env=subprocess_env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    _launch(tmp_path, SCRIPT, "--out", str(tmp_path / "two"), env=subprocess_env)
    single = json.loads((tmp_path / "one.json").read_text())
    ranks = [json.loads((tmp_path / f"two.rank{rank}.json").read_text()) for rank in (0, 1)]
    assert single["nranks"] == 1 and [r["nranks"] for r in ranks] == [2, 2]
    assert len(single["results"]) == 6  # 3 ways of feeding the evaluation x 129 and 1,001 images
    for case, expected in single["results"].items():
        assert expected["fit"] == pytest.approx(expected["by_hand"], rel=1e-6), case
        assert expected["evaluate"] == pytest.approx(expected["by_hand"], rel=1e-6), case
        for rank, result in enumerate(r["results"][case] for r in ranks):
            where = f"{case}, rank {rank}"
            assert result["by_hand"] == expected["by_hand"], where  # the same weights everywhere
            # a padded sample counted twice would move the mean by about 1/1000 (1,001) or 1/100 (129)
            assert result["fit"] == pytest.approx(expected["by_hand"], rel=1e-6), where
            assert result["evaluate"] == pytest.approx(expected["by_hand"], rel=1e-6), where
            if not case.startswith("shuffled"):  # hapi trims its metrics' padding in order only
                assert result["acc"] == expected["acc"], where
