"""``data.glyphs``: flagged copies of MNIST's 1s, framed as MNIST frames a digit, and the recipe's use of them."""

from __future__ import annotations

import numpy as np
import pytest

from paddle_mnist_hapi.data import MNIST
from paddle_mnist_hapi.data.framing import mass_centre
from paddle_mnist_hapi.data.glyphs import add_flagged_ones, flag_one, flagged_ones
from paddle_mnist_hapi.errors import ConfigError
from paddle_mnist_hapi.recipe import TrainConfig, with_flagged_ones


@pytest.fixture(scope="module")
def data() -> MNIST:
    return MNIST("train", limit=3000)


@pytest.fixture(scope="module")
def ones(data) -> np.ndarray:
    return data.raw_images[data.labels.reshape(-1) == 1][:80]


def _top_spread(image: np.ndarray) -> float:
    """How far the ink of the digit's top quarter reaches left of the stem, in pixels (the stem: the ink
    of the middle rows, followed up along its slant)."""
    rows = np.nonzero((image > 64).any(axis=1))[0]
    top, bottom = rows[0], rows[-1]
    centres = {r: np.nonzero(image[r] > 64)[0].mean() for r in range(top, bottom + 1) if (image[r] > 64).any()}
    middle = [r for r in centres if top + 0.4 * (bottom - top) <= r <= top + 0.8 * (bottom - top)]
    slope, offset = np.polyfit(middle, [centres[r] for r in middle], 1)  # the stem's x along its rows
    quarter = range(top, top + max(2, (bottom - top) // 4))
    return max(slope * r + offset - np.nonzero(image[r] > 64)[0].min() for r in quarter if (image[r] > 64).any())


def test_a_flag_reaches_left_of_the_stem_at_the_top(ones) -> None:
    rng = np.random.default_rng(0)
    pairs = [(one, flag_one(one, rng)) for one in ones]
    pairs = [(one, flagged) for one, flagged in pairs if flagged is not None]
    assert len(pairs) >= 0.95 * len(ones)
    gains = np.array([_top_spread(flagged) - _top_spread(one) for one, flagged in pairs])
    assert np.median(gains) >= 2.0, gains  # a bare 1 reaches ~half a stroke left; a flagged one pixels more
    assert (gains > 0.5).mean() >= 0.9, gains


def test_copies_are_framed_as_mnist_frames_a_digit(ones) -> None:
    rng = np.random.default_rng(1)
    centres = []
    for flagged in (flag_one(one, rng) for one in ones):
        if flagged is None:
            continue
        assert flagged.shape == (28, 28) and flagged.dtype == np.uint8
        rows, cols = np.nonzero(flagged > 0)
        assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 in (20, 21, 22)  # LANCZOS' soft rim
        centres.append(mass_centre(flagged.astype(np.float64)))
        assert flagged.max() >= 200  # full-strength ink, as MNIST's
    # on the field's middle, 13.5 (each copy to the nearest pixel): half a pixel from MNIST's own 1s, as measured
    mnist = np.mean([mass_centre(one.astype(np.float64)) for one in ones], axis=0)
    assert np.abs(mnist - 14.0).max() <= 0.1, mnist
    assert np.abs(np.mean(centres, axis=0) - 13.5).max() <= 0.15, np.mean(centres, axis=0)
    assert np.abs(np.array(centres) - 13.5).max() <= 0.75


def test_a_share_of_the_ones_chosen_from_the_seed_and_nothing_else(data) -> None:
    labels = data.labels.reshape(-1)
    count = int((labels == 1).sum())
    copies, copy_labels = flagged_ones(data.raw_images, labels, 0.25, seed=5)
    assert 0.18 * count <= len(copies) <= 0.32 * count and (copy_labels == 1).all()
    again, _ = flagged_ones(data.raw_images, labels, 0.25, seed=5)
    other, _ = flagged_ones(data.raw_images, labels, 0.25, seed=6)
    assert np.array_equal(copies, again)
    assert len(other) != len(copies) or not np.array_equal(other, copies)
    assert len(flagged_ones(data.raw_images, labels, 0.0)[0]) == 0
    assert len(flagged_ones(data.raw_images, np.zeros_like(labels), 1.0)[0]) == 0  # no 1s, no copies


def test_the_copies_come_after_the_originals_which_stay_as_they_were(data) -> None:
    before = data.raw_images.copy()
    images, labels = add_flagged_ones(data.raw_images, data.labels, 0.5)
    assert np.array_equal(data.raw_images, before)
    assert np.array_equal(images[: len(before)], before)
    assert np.array_equal(labels[: len(before)], data.labels.reshape(-1))
    assert len(images) > len(before) and (labels[len(before) :] == 1).all()


def test_the_recipe_trains_on_the_copies_and_holds_out_plain_mnist(data) -> None:
    more = with_flagged_ones(data, TrainConfig().flag_ones)
    assert TrainConfig().flag_ones == 0.25
    assert len(more) > len(data) and more.source.endswith("+ flagged 1s")
    assert np.array_equal(more.images[: len(data)], data.images)
    assert with_flagged_ones(data, 0.0) is data


@pytest.mark.parametrize("share", [-0.1, 1.5, True, "half"])
def test_a_share_outside_0_to_1_is_refused_at_the_start(share) -> None:
    with pytest.raises(ConfigError, match="flag_ones must be a share of the training 1s between 0 and 1"):
        TrainConfig(flag_ones=share).validate()
    with pytest.raises(ConfigError, match="share must be a fraction between 0 and 1"):
        flagged_ones(np.zeros((1, 28, 28), np.uint8), np.ones(1), share)


def test_the_recipe_reports_its_mnist_images_and_the_copies_apart(trained_run) -> None:
    ones = int((MNIST("train", limit=30000).labels == 1).sum())  # the session's run: TrainConfig(limit=30000)
    assert trained_run["train_images"] == 30000
    assert 0.2 * ones <= trained_run["flagged_ones"] <= 0.3 * ones
