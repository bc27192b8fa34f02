"""``data.paddle_mnist``: Paddle's own MNIST class offline, from the library's verified data;
``as_mnist`` on ``paddle.io.Subset``."""

from __future__ import annotations

import numpy as np
import paddle
import pytest
from paddle.vision.datasets import MNIST as PaddleMNIST
from paddle.vision.transforms import ToTensor

from paddle_mnist_hapi.data import MNIST, as_mnist, paddle_mnist
from paddle_mnist_hapi.errors import ConfigError


@pytest.fixture
def idx_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PADDLE_MNIST_IDX_DIR", str(tmp_path))
    return tmp_path


def test_paddle_mnist_is_paddles_class_with_the_real_data_and_its_transform(idx_dir):
    ours = MNIST("test")
    ds = paddle_mnist("test", transform=ToTensor())
    assert type(ds) is PaddleMNIST and len(ds) == 10000
    assert np.array_equal(np.asarray(ds.labels).ravel(), ours.labels.ravel())
    image, label = ds[9999]
    assert isinstance(image, paddle.Tensor) and list(image.shape) == [1, 28, 28]  # ToTensor ran
    np.testing.assert_allclose(image.numpy()[0] * 255, ours.raw_images[9999], atol=1e-3)
    assert int(label[0]) == int(ours.labels[9999, 0])
    assert sorted(p.name for p in idx_dir.iterdir()) == [
        "t10k-images-idx3-ubyte-10000.gz",
        "t10k-labels-idx1-ubyte-10000.gz",
    ]


def test_paddle_mnist_limit_that_is_not_a_multiple_of_paddles_chunk(idx_dir):
    # Paddle parses 100 records at a time; 250 is written as 300 and trimmed
    ds = paddle_mnist("train", limit=250)
    assert len(ds) == 250
    assert [int(ds[i][1][0]) for i in range(3)] == [5, 0, 4]
    assert type(ds[0][0]).__name__ == "Image"  # no transform: PIL images, as Paddle gives them


def test_paddle_mnist_reuses_its_files(idx_dir):
    paddle_mnist("test", limit=100)
    written = {p: p.stat().st_mtime_ns for p in idx_dir.iterdir()}
    paddle_mnist("test", limit=100)
    assert {p: p.stat().st_mtime_ns for p in idx_dir.iterdir()} == written


@pytest.mark.parametrize("kwargs", [{"mode": "val"}, {"mode": "train", "limit": 0}])
def test_paddle_mnist_bad_arguments(kwargs, idx_dir):
    with pytest.raises(ConfigError, match="Received"):
        paddle_mnist(**kwargs)


def test_as_mnist_accepts_subsets_of_either_mnist(idx_dir):
    paddles = paddle_mnist("test", limit=200)
    subset = paddle.io.Subset(paddles, [10, 3, 150])
    ours = as_mnist(subset)
    assert ours.labels.ravel().tolist() == [int(paddles[i][1][0]) for i in (10, 3, 150)]
    assert np.array_equal(ours.raw_images[1], np.asarray(paddles[3][0]))
    nested = as_mnist(paddle.io.Subset(paddle.io.Subset(MNIST("test", limit=20), list(range(10, 20))), [0, 2]))
    assert nested.labels.ravel().tolist() == MNIST("test", limit=20).labels.ravel()[[10, 12]].tolist()


def test_as_mnist_still_refuses_other_datasets():
    with pytest.raises(ConfigError, match=r"paddle.io.Subset of one\. Received: TensorDataset"):
        as_mnist(paddle.io.TensorDataset([paddle.zeros([2, 1, 28, 28])]))
