"""The non-MNIST digit set of bench/ood_digits.py: reproducible, and a trained model reads it
through the real ``paddle-mnist predict`` far above chance (the full figure lives in bench/)."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import numpy as np
import pytest

from conftest import ROOT


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_ood_digits", ROOT / "bench" / "ood_digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ood = _load()


def test_the_set_is_a_pure_function_of_the_seed(tmp_path) -> None:
    first = ood.write(tmp_path / "a", n=40, seed=0)
    again = ood.write(tmp_path / "b", n=40, seed=0)
    other = ood.write(tmp_path / "c", n=40, seed=1)
    assert first == again
    for entry in first:
        assert (tmp_path / "a" / entry["file"]).read_bytes() == (tmp_path / "b" / entry["file"]).read_bytes()
    assert [e["label"] for e in first] != [e["label"] for e in other]
    assert {e["kind"] for e in first} == {"pen", "font"}
    assert {e["background"] for e in first} == {"paper", "board"}
    assert len({e["label"] for e in first}) == 10


def test_pictures_are_not_mnist_shaped() -> None:
    sizes = {ood.make_sample(i, 0).image.size for i in range(20)}
    assert len(sizes) > 10 and all(min(size) >= 64 for size in sizes)  # varied canvases, not 28x28


def test_every_skeleton_is_inside_its_box() -> None:
    for label, variants in ood.SKELETONS.items():
        for strokes in variants:
            points = np.concatenate([np.asarray(stroke) for stroke in strokes])
            assert points.min() >= -0.05 and points.max() <= 1.05, label


@pytest.mark.slow
def test_a_trained_model_reads_them_through_the_cli(trained_run) -> None:
    result = ood.evaluate(trained_run["export"], n=50, seed=0)
    assert result["n"] == 50
    assert result["accuracy"] >= 0.5, result  # chance is 0.1; the session model (1 epoch, 30k images) gets ~0.8
