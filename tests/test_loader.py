"""InMemoryLoader: exact reproducible order, full coverage, works with every hapi entry point."""

from __future__ import annotations

import gzip
import warnings

import numpy as np
import paddle
import pytest

from paddle_mnist_hapi import create_model, specs_for
from paddle_mnist_hapi.data import MNIST, InMemoryLoader, load_arrays, normalize
from paddle_mnist_hapi.data.sources import _idx_bytes
from paddle_mnist_hapi.errors import ConfigError


def _indexed(n: int) -> MNIST:
    """A data set whose label is the sample's index, so batches reveal the order."""
    images = (np.arange(n, dtype=np.int64)[:, None, None] % 251 * np.ones((1, 28, 28))).astype(np.uint8)
    return MNIST.from_arrays(images, np.arange(n))


def _seen(loader: InMemoryLoader) -> list[list[int]]:
    return [labels.ravel().tolist() for _, labels in loader]


def _model(name: str = "lenet5") -> paddle.Model:
    model = paddle.Model(create_model(name), *specs_for(name))
    optimizer = paddle.optimizer.Adam(learning_rate=2e-3, parameters=model.parameters())
    model.prepare(optimizer, paddle.nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    return model


def test_order_is_exactly_distributed_batch_sampler_per_epoch() -> None:
    data = _indexed(1000)
    loader = InMemoryLoader(data, batch_size=64, shuffle=True)
    reference = paddle.io.DistributedBatchSampler(data, 64, shuffle=True)
    epochs = [_seen(loader) for _ in range(3)]
    for epoch, seen in enumerate(epochs):
        reference.set_epoch(epoch)
        assert seen == [list(batch) for batch in reference]
    assert epochs[0] != epochs[1] != epochs[2]
    loader.set_epoch(1)
    assert _seen(loader) == epochs[1]
    # a fresh loader replays epoch 0: the order depends on nothing but the epoch
    np.random.seed(123)
    paddle.seed(123)
    assert _seen(InMemoryLoader(data, batch_size=64)) == epochs[0]


def test_images_match_their_labels() -> None:
    data = MNIST("test", limit=300)
    for images, labels in InMemoryLoader(data, batch_size=50):
        for image, label in zip(images, labels.ravel(), strict=True):
            index = int(np.flatnonzero((data.images == image).all(axis=(1, 2, 3)))[0])
            assert data.labels[index, 0] == label
    assert images.dtype == np.float32 and labels.dtype == np.int64


@pytest.mark.parametrize("drop_last", [False, True])
def test_every_sample_exactly_once_per_epoch(drop_last: bool) -> None:
    loader = InMemoryLoader(_indexed(1000), batch_size=64, drop_last=drop_last)
    assert len(loader) == (15 if drop_last else 16)
    for _ in range(2):
        seen = [i for batch in _seen(loader) for i in batch]
        assert len(seen) == len(set(seen)) == (960 if drop_last else 1000)
        if not drop_last:
            assert sorted(seen) == list(range(1000))


def test_ranks_get_disjoint_shares_that_cover_the_data() -> None:
    data = _indexed(1000)
    shares = [
        [i for batch in _seen(InMemoryLoader(data, batch_size=64, num_replicas=2, rank=rank)) for i in batch]
        for rank in (0, 1)
    ]
    assert len(shares[0]) == len(shares[1]) == 500
    assert not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == list(range(1000))


def test_iteration_reads_the_batch_sampler_attribute_at_iteration_time() -> None:
    """The contract ResumeCkpt relies on: it swaps ``batch_sampler`` for a wrapper."""
    loader = InMemoryLoader(_indexed(100), batch_size=10)
    loader.batch_sampler = [[5, 6], [99]]
    assert _seen(loader) == [[5, 6], [99]]


def test_fit_evaluate_predict_match_the_dataset_path(mnist_test_small: MNIST) -> None:
    model = _model()
    model.fit(InMemoryLoader(MNIST("train", limit=512), batch_size=64), epochs=1, verbose=0)
    via_loader = model.evaluate(InMemoryLoader(mnist_test_small, batch_size=100, shuffle=False), verbose=0)
    via_dataset = model.evaluate(mnist_test_small, batch_size=100, verbose=0)
    assert via_loader["acc"] == via_dataset["acc"]
    np.testing.assert_allclose(via_loader["loss"], via_dataset["loss"], rtol=1e-6)
    predicted = model.predict(InMemoryLoader(mnist_test_small, batch_size=100, shuffle=False), verbose=0)
    reference = model.predict(mnist_test_small, batch_size=100, verbose=0)
    np.testing.assert_array_equal(np.concatenate(predicted[0]), np.concatenate(reference[0]))
    assert np.concatenate(predicted[0]).shape == (1000, 10)


def test_fit_gets_numpy_batches_so_hapi_does_not_warn_about_copying_tensors(mnist_train_small: MNIST) -> None:
    import paddle.tensor.creation as creation

    def copy_warnings(data: object) -> list[str]:
        creation._warned_in_tensor = False  # Paddle warns once per process
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _model("linear").fit(data, epochs=1, verbose=0, num_iters=2)
        return [str(w.message) for w in caught if "copy construct" in str(w.message)]

    assert copy_warnings(InMemoryLoader(mnist_train_small)) == []
    tensors = [[paddle.to_tensor(mnist_train_small.images[:64]), paddle.to_tensor(mnist_train_small.labels[:64])]]
    assert copy_warnings(tensors)  # the same check sees the warning when tensors are passed


def test_accepts_paddle_vision_mnist(tmp_path) -> None:
    arrays = load_arrays()
    for name, array in (("images", arrays.test_images[:200]), ("labels", arrays.test_labels[:200])):
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(_idx_bytes(array), compresslevel=1))
    vision = paddle.vision.datasets.MNIST(
        image_path=str(tmp_path / "images.gz"), label_path=str(tmp_path / "labels.gz"), mode="test", download=False
    )
    loader = InMemoryLoader(vision, batch_size=200, shuffle=False)
    images, labels = next(iter(loader))
    np.testing.assert_array_equal(images, normalize(arrays.test_images[:200]))
    np.testing.assert_array_equal(labels.ravel(), arrays.test_labels[:200])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dataset": [1, 2, 3]}, "Received: list"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"shuffle": "yes"}, "shuffle='yes'"),
        ({"num_replicas": 2, "rank": 2}, "rank=2"),
    ],
)
def test_bad_arguments_raise_config_errors(kwargs: dict, match: str) -> None:
    arguments = {"dataset": _indexed(10), **kwargs}
    with pytest.raises(ConfigError, match=match):
        InMemoryLoader(**arguments)


def test_trains_lenet_to_real_accuracy_on_a_real_subset(mnist_test_small: MNIST) -> None:
    model = _model()
    model.fit(InMemoryLoader(MNIST("train", limit=10000), batch_size=64), epochs=2, verbose=0)
    result = model.evaluate(InMemoryLoader(mnist_test_small, batch_size=500, shuffle=False), verbose=0)
    assert result["acc"] >= 0.95, result


def test_resume_ckpt_continues_a_crashed_run_mid_epoch_exactly(tmp_path) -> None:
    """The loader's contract with ResumeCkpt: epoch order and skipped batches replay exactly."""
    from paddle_mnist_hapi.callbacks import ResumeCkpt

    data = MNIST("train", limit=640)  # 10 steps per epoch

    class Crash(paddle.callbacks.Callback):
        def __init__(self, at: int) -> None:
            self.at, self.seen = at, 0

        def on_train_batch_end(self, step, logs=None):
            self.seen += 1
            if self.seen == self.at:
                raise RuntimeError("simulated crash")

    def run(save_dir, crash_at=None):
        paddle.seed(0)
        model = _model("mlp")
        ckpt = ResumeCkpt(save_dir, every_n_steps=3)
        callbacks = [ckpt] + ([Crash(crash_at)] if crash_at else [])
        model.fit(InMemoryLoader(data, batch_size=64), epochs=3, verbose=0, callbacks=callbacks)
        return ckpt, {k: v.numpy() for k, v in model.network.state_dict().items()}

    _, straight = run(tmp_path / "straight")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path / "crashed", crash_at=14)  # mid-epoch 2, after the step-12 checkpoint
    ckpt, resumed = run(tmp_path / "crashed")
    assert ckpt.report["resumed_from"] is not None and ckpt.report["start_epoch"] == 1
    assert all(np.array_equal(resumed[k], straight[k]) for k in straight)
