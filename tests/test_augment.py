"""``data.Augment`` and the augmented ``InMemoryLoader``: seeded, vectorised, replayable, off the global RNGs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import paddle
import pytest

from paddle_mnist_hapi._private import hapi_loop
from paddle_mnist_hapi.data import MNIST, Augment, InMemoryLoader
from paddle_mnist_hapi.errors import ConfigError


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return MNIST("train", limit=64).images


def _ink(batch: np.ndarray) -> np.ndarray:
    return (batch.reshape(len(batch), -1) + 1.0) / 2.0


def test_same_generator_same_batch_other_generator_other_batch(images) -> None:
    augment = Augment()
    a = augment(images, np.random.default_rng(1))
    b = augment(images, np.random.default_rng(1))
    c = augment(images, np.random.default_rng(2))
    assert a.shape == images.shape and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, images)
    assert a.min() >= -1.0 and a.max() <= 1.0


def test_no_strength_is_the_identity_and_the_input_is_not_modified(images) -> None:
    before = images.copy()
    out = Augment.none()(images, np.random.default_rng(0))
    assert np.array_equal(images, before)
    assert np.allclose(out, images, atol=1e-6)
    assert Augment.none().is_identity and not Augment().is_identity


def test_each_part_does_what_it_says(images) -> None:
    none = {name: 0.0 for name in ("rotate", "scale", "aspect", "shear", "translate", "elastic", "stroke", "blur")}
    ink = _ink(images).sum(axis=1)
    rotated = _ink(Augment(**{**none, "rotate": 20.0})(images, np.random.default_rng(0))).sum(axis=1)
    assert np.allclose(rotated, ink, rtol=0.05)  # a rotation moves ink, it does not add or remove it
    shifted = Augment(**{**none, "translate": 3.0})(images, np.random.default_rng(0))
    assert not np.array_equal(shifted, images)
    assert np.allclose(_ink(shifted).sum(axis=1), ink, rtol=0.15)  # a shift loses at most a border
    stroke = _ink(Augment(**{**none, "stroke": 1.0})(images, np.random.default_rng(0))).sum(axis=1)
    assert (stroke > ink * 1.05).any() and (stroke < ink * 0.95).any()  # thicker and thinner strokes
    blurred = Augment(**{**none, "blur": 1.0})(images, np.random.default_rng(0))
    assert np.abs(np.diff(blurred, axis=-1)).mean() < np.abs(np.diff(images, axis=-1)).mean()  # softer edges


def _only(**strengths: float) -> Augment:
    return replace(Augment.none(), **strengths)


def _edges(batch: np.ndarray) -> float:
    return float(np.abs(np.diff(batch, axis=-1)).mean() + np.abs(np.diff(batch, axis=-2)).mean())


def test_marker_strokes_grow_by_more_than_a_pixel_and_thinning_never_erases(images) -> None:
    ink = (_ink(images) > 0.5).sum(axis=1)
    one = (_ink(_only(thicken=1.0)(images, np.random.default_rng(0))) > 0.5).sum(axis=1)
    three = (_ink(_only(thicken=3.0)(images, np.random.default_rng(0))) > 0.5).sum(axis=1)
    assert (one >= ink).all() and (three >= one).all()  # thicken only ever thickens
    assert np.median(three / ink) > 2.0 > np.median(one / ink)  # repeated dilations: a marker's width
    thinned = (_ink(_only(stroke=5.0)(images, np.random.default_rng(0))) > 0.2).sum(axis=1)
    assert (thinned < ink).any() and (thinned > 0).all()  # one erosion at most: no digit vanishes


def test_soften_and_lowres_blur_keep_the_ink_at_full_contrast(images) -> None:
    for part in (_only(soften=1.5), _only(lowres=0.6)):
        out = part(images, np.random.default_rng(0))
        assert _edges(out) < 0.93 * _edges(images), part  # softer: smaller steps between neighbours
        assert (_ink(out) > 0.05).sum() > 1.1 * (_ink(images) > 0.05).sum(), part  # ink spreads
        assert np.allclose(out.max(axis=(1, 2, 3)), images.max(axis=(1, 2, 3)), atol=1e-4), part  # not fainter
    strong, mild = (
        _only(lowres=0.8)(images, np.random.default_rng(0)),
        _only(lowres=0.1)(images, np.random.default_rng(0)),
    )
    assert _edges(strong) < _edges(mild)  # a coarser grid loses more detail


def test_start_and_ramp_scale_the_strength_by_epoch() -> None:
    augment = Augment(start_epoch=1, ramp_epochs=2)
    assert augment.at_epoch(0).is_identity
    assert augment.at_epoch(1).rotate == pytest.approx(augment.rotate / 3)
    assert augment.at_epoch(2).rotate == pytest.approx(augment.rotate * 2 / 3)
    assert augment.at_epoch(3) == augment and augment.at_epoch(7) == augment
    assert Augment().at_epoch(0) == Augment()


BAD_SETTINGS = [
    {"rotate": -1.0},
    {"elastic": float("nan")},
    {"scale": 1.0},
    {"blur": 1.5},
    {"lowres": 1.0},
    {"soften": -0.5},
    {"thicken": float("inf")},
    {"ramp_epochs": -1},
    {"start_epoch": 1.5},
]


@pytest.mark.parametrize("kwargs", BAD_SETTINGS)
def test_bad_strengths_are_refused(kwargs) -> None:
    with pytest.raises(ConfigError, match="Received"):
        Augment(**kwargs)


def test_loader_refuses_a_bad_augment_or_seed() -> None:
    data = MNIST("test", limit=8)
    with pytest.raises(ConfigError, match="augment must be"):
        InMemoryLoader(data, augment=True)
    with pytest.raises(ConfigError, match="seed"):
        InMemoryLoader(data, augment=Augment(), seed=-1)


def _passes(loader: InMemoryLoader, epoch: int) -> list[list[np.ndarray]]:
    loader.set_epoch(epoch)
    return list(loader)


def test_augmented_loader_is_a_pure_function_of_seed_epoch_and_batch() -> None:
    data = MNIST("train", limit=96)
    loader = InMemoryLoader(data, batch_size=32, augment=Augment(), seed=5)
    plain = InMemoryLoader(data, batch_size=32)
    first, again, other = _passes(loader, 1), _passes(loader, 1), _passes(loader, 2)
    for (x, y), (x2, y2), (xp, yp) in zip(first, again, _passes(plain, 1), strict=True):
        assert np.array_equal(x, x2) and np.array_equal(y, y2)
        assert np.array_equal(y, yp) and not np.array_equal(x, xp)  # same order and labels, other pixels
    assert not any(np.array_equal(a[0], b[0]) for a, b in zip(first, other, strict=True))
    reseeded = InMemoryLoader(data, batch_size=32, augment=Augment(), seed=6)
    assert not np.array_equal(_passes(reseeded, 1)[0][0], first[0][0])


def test_a_resumed_pass_replays_the_same_augmented_batches() -> None:
    """What ResumeCkpt does after a kill: the epoch's sampler with the first batches skipped."""
    loader = InMemoryLoader(MNIST("train", limit=160), batch_size=32, augment=Augment(), seed=3)
    full = _passes(loader, 2)
    inner = loader.batch_sampler
    sampler = hapi_loop.EpochSampler(inner)
    sampler.configure(2, skip=3)
    hapi_loop.install(loader, sampler)
    try:
        tail = list(loader)
    finally:
        hapi_loop.uninstall(loader)
    assert len(tail) == len(full) - 3
    for (x, y), (xf, yf) in zip(tail, full[3:], strict=True):
        assert np.array_equal(x, xf) and np.array_equal(y, yf)


def test_the_global_rngs_are_not_touched() -> None:
    loader = InMemoryLoader(MNIST("train", limit=64), batch_size=32, augment=Augment())
    paddle.seed(0)
    np.random.seed(0)
    expected_numpy, expected_paddle = np.random.rand(3), paddle.rand([3]).numpy()
    paddle.seed(0)
    np.random.seed(0)
    list(loader)
    assert np.array_equal(np.random.rand(3), expected_numpy)
    assert np.array_equal(paddle.rand([3]).numpy(), expected_paddle)


def test_an_unshuffled_augmented_loader_still_varies_by_epoch() -> None:
    loader = InMemoryLoader(MNIST("train", limit=32), batch_size=32, shuffle=False, augment=Augment())
    first, second = list(loader), list(loader)
    assert np.array_equal(first[0][1], second[0][1])  # same order
    assert not np.array_equal(first[0][0], second[0][0])  # another augmentation


def test_the_photo_parts_are_off_by_default_and_in_the_recipe() -> None:
    from paddle_mnist_hapi.recipe import RECIPE_AUGMENT

    for augment in (Augment(), RECIPE_AUGMENT):  # docs/data.md, docs/generalisation.md (round 2)
        assert (augment.thicken, augment.soften, augment.lowres) == (0.0, 0.0, 0.0)
