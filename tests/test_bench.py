"""The benchmark's workloads run and produce sane numbers (tiny sizes; the speeds themselves live in bench/)."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

from conftest import ROOT


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_run, workloads = _load("run"), _load("workloads")


def test_training_paths_are_measured_interleaved() -> None:
    result = workloads.train_speeds(["tutorial", "library", "paddle_raw"], steps=4, chunk=2)
    assert result["steps"] == 4
    for path in ("tutorial", "library", "paddle_raw"):
        assert result[f"{path}_img_per_s"] > 0
        assert len(result["chunks_img_per_s"][path]) == 2


def test_callback_overhead_switches_on_every_library_callback(tmp_path) -> None:
    from paddle_mnist_hapi import callbacks

    found = {type(c).__name__ for c in workloads.all_library_callbacks(tmp_path)}
    assert "ResumeCkpt" in found
    assert found <= set(callbacks.__all__)
    result = workloads.callback_overhead(steps=4, rounds=1)
    assert result["ratio"] > 0 and set(result["hook_fraction"]) == set(result["callbacks"])


def test_checkpoint_cost_and_inference_are_measured() -> None:
    ckpt = workloads.checkpoint_cost(steps=3)
    assert ckpt["available"] and ckpt["save_s"] > 0 and ckpt["load_s"] > 0
    infer = workloads.inference(iterations=20)
    assert 0 < infer["infer_b1_p50_ms"] <= infer["infer_b1_p99_ms"]
    assert infer["infer_b256_img_per_s"] > 0 and infer["dygraph_b1_p50_ms"] > 0


def test_markdown_table_has_every_required_key_row() -> None:
    keys = [
        "tutorial_img_per_s", "library_img_per_s", "torch_img_per_s", "callback_overhead_ratio",
        "ckpt_fraction_of_epoch", "seconds_to_99", "infer_b1_p50_ms", "infer_b1_p99_ms",
        "infer_b256_img_per_s", "dygraph_b1_p50_ms",
    ]  # fmt: skip
    results = {key: 1.5 for key in keys} | {"tutorial_img_per_s": 1000.0, "library_img_per_s": 2500.0}
    results["library_epoch_s"] = 24.0
    results |= {
        "mode": "quick",
        "machine": {"cpu": "x", "cores": 2, "threads": 1, "load_average_before": [0], "load_average_after": [0]},
        "versions": {"paddlepaddle": "3.3.1", "torch": "2.13.0", "python": "3.11"},
        "settings": {"callback_steps": 300},
        "callback_hook_fraction": {"ResumeCkpt": 0.01},
    }
    table = bench_run.markdown(results)
    assert "| **library path** (`InMemoryLoader` + `fit`, the zoo's `layers.Conv2D`) | 2,500 | 24.0 | 2.50× |" in table
    assert "ResumeCkpt 1.0%" in table


@pytest.mark.skipif(not (ROOT / "bench" / "results.json").is_file(), reason="make bench has not run")
def test_committed_results_have_the_required_keys() -> None:
    import json

    results = json.loads((ROOT / "bench" / "results.json").read_text())
    for key in ("tutorial_img_per_s", "library_img_per_s", "torch_img_per_s", "callback_overhead_ratio",
                "ckpt_fraction_of_epoch", "seconds_to_99", "infer_b1_p50_ms", "infer_b1_p99_ms",
                "infer_b256_img_per_s", "dygraph_b1_p50_ms"):  # fmt: skip
        assert isinstance(results[key], (int, float)), key
    assert results["machine"]["cores"] and results["versions"]["paddlepaddle"]


def test_whole_machine_grid_and_one_configuration_per_process() -> None:
    whole = _load("whole_machine")
    names = [whole.name(c) for c in whole.grid(2)]
    assert names == [
        "paddle 1x1 b64", "paddle 1x2 b64", "paddle 2x1 b64", "torch 1x2 b64", "torch 1x1 b64",
        "paddle 1x1 b256", "paddle 1x2 b256", "paddle 2x1 b256", "torch 1x2 b256", "torch 1x1 b256",
        "paddle 2x1 b128",
    ]  # fmt: skip
    assert {whole.name(c) for c in whole.grid(4)} >= {"paddle 4x1 b64", "paddle 2x2 b256", "torch 1x4 b256"}
    measured = whole.run_config({"framework": "paddle", "procs": 1, "threads": 1, "batch": 32}, steps=3, warmup=2)
    assert measured["images"] == 3 * 32 and measured["ranks"] == 1 and measured["img_per_s"] > 0


def test_the_peers_table_says_what_each_stack_did() -> None:
    exact = {"identical": 0, "kills": 3, "max_abs_diff": 0.012, "rerun_trained_exactly_the_owed_batches": 1,
             "runs": [{"rerun_batches": 64, "owed": 44}, {"rerun_batches": 30, "owed": 30}]}  # fmt: skip
    speeds = {"with_checkpoints": 4100.0, "without_checkpoints": 4500.0, "checkpoint_cost": 0.0976,
              "checkpoint_cost_cpu": 0.05, "keras": "3.15.1"}  # fmt: skip
    table = bench_run.peers_markdown({"peers_img_per_s": {"keras": speeds}, "peers_exact": {"keras": exact}})
    row = next(line for line in table.splitlines() if line.startswith("| Keras 3.15.1, torch backend"))
    assert "| 0 of 3 (weights differ by up to 1.2e-02) | 1 of 3 (up to 20 batches trained again) |" in row
    assert row.endswith("| 4,100 / 4,500 | 9.8% (CPU time 5.0%) |")
    assert "| this library (`ResumeCkpt(dir, every_n_steps=4)`) | n/a |" in table  # not measured: said so
    speeds.update(checkpoint_cost_paired=0.041, checkpoint_cost_paired_quartiles=[0.012, 0.077])
    table = bench_run.peers_markdown({"peers_img_per_s": {"keras": speeds}, "peers_exact": {"keras": exact}})
    assert "| 9.8% (CPU time 5.0%; paired median 4.1%, quartiles 1.2% to 7.7%) |" in table


def test_the_peers_timing_keeps_its_pairs_and_their_median_ratio() -> None:
    job_spec = _load("peers/job_spec")
    # (wall, wall with checkpoints, CPU, CPU with): one pair disturbed by the machine, not by the checkpoints
    pairs = [(1.0, 1.02, 1.0, 1.1), (1.0, 1.04, 1.0, 1.1), (2.0, 2.1, 1.0, 1.1), (1.0, 1.5, 1.0, 1.1)]
    report = job_spec.timing_report(pairs)
    assert report["cost_paired"] == pytest.approx(0.045)  # the median of 2%, 4%, 5%, 50%
    assert report["cost_paired_quartiles"] == pytest.approx([0.035, 0.1625])
    assert report["cost"] == pytest.approx(0.02)  # the fastest of each kind: 1.02 / 1.0
    assert report["pairs_s"] == pairs
