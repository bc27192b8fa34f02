"""Fail fast: with any callback of the library in ``fit``, mistakes in the data, labels and InputSpec
are reported when training starts (``_private/preflight.py``), never as a hang or a late raw error."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import paddle
import pytest
from paddle.static import InputSpec
from paddle.vision.transforms import ToTensor

from paddle_mnist_hapi import callbacks, create_model, export_model, specs_for
from paddle_mnist_hapi._private import preflight
from paddle_mnist_hapi.data import MNIST, paddle_mnist
from paddle_mnist_hapi.errors import ExportError, FitInputError

OUR_CALLBACKS = {
    "ResumeCkpt": lambda tmp: callbacks.ResumeCkpt(save_dir=str(tmp / "ckpt")),
    "LRStepper": lambda tmp: callbacks.LRStepper(),
    "EarlyStopping": lambda tmp: callbacks.EarlyStopping(monitor="loss", source="train"),
    "ReduceLROnPlateau": lambda tmp: callbacks.ReduceLROnPlateau(monitor="loss"),
    "MetricsLog": lambda tmp: callbacks.MetricsLog(str(tmp / "metrics.jsonl")),
    "VisualDL": lambda tmp: callbacks.VisualDL(str(tmp / "vdl")),
    "NaNGuard": lambda tmp: callbacks.NaNGuard(),
}


class BatchCounter(paddle.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    def on_train_batch_begin(self, step, logs=None):
        self.batches += 1


class CourseDataset(paddle.io.Dataset):
    """The course's MnistDataset: float32 [1, 28, 28] images and, as written for square_error_cost, float labels."""

    def __init__(self, mnist: MNIST, label_dtype: str = "float32", noise: bool = False) -> None:
        super().__init__()
        self.mnist, self.label_dtype, self.noise = mnist, label_dtype, noise

    def __getitem__(self, idx):
        image = self.mnist.images[idx]
        if self.noise:  # an augmentation that draws from numpy's global RNG
            image = image + np.random.normal(0, 0.1, image.shape).astype("float32")
        return image, self.mnist.labels[idx].astype(self.label_dtype)

    def __len__(self):
        return len(self.mnist)


def _model(name: str = "lenet5", inputs=None, loss=None) -> paddle.Model:
    net = create_model(name)
    model = paddle.Model(net, *(inputs or specs_for(name)))
    model.prepare(
        paddle.optimizer.Adam(1e-3, parameters=net.parameters()),
        loss or paddle.nn.CrossEntropyLoss(),
        paddle.metric.Accuracy(),
    )
    return model


@pytest.mark.parametrize("name", sorted(OUR_CALLBACKS))
def test_every_callback_of_ours_refuses_a_spec_that_does_not_fit_before_training(tmp_path, name):
    # The classic tutorial's MLP spec on a LeNet: hapi trains happily, then model.save(training=False) fails.
    model = _model(inputs=([InputSpec([None, 784], "float32", "x")], [InputSpec([None, 10], "float32", "x")]))
    counter = BatchCounter()
    with pytest.raises(FitInputError, match=r"InputSpec 'x' \[None, 784\] does not fit the network.*specs_for"):
        model.fit(
            MNIST("train", limit=64), batch_size=32, verbose=0, callbacks=[OUR_CALLBACKS[name](tmp_path), counter]
        )
    assert counter.batches == 0


class RGBSamples(paddle.io.Dataset):
    """3x32x32 float32 pictures, as a user's own data set gives them."""

    def __getitem__(self, idx):
        return np.full((3, 32, 32), idx / 8, np.float32), np.array([idx % 2], np.int64)

    def __len__(self):
        return 8


def test_the_spec_suggested_for_a_network_of_your_own_is_built_from_its_samples(tmp_path):
    net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.AdaptiveAvgPool2D(1), paddle.nn.Flatten(),
                               paddle.nn.Linear(4, 2))  # fmt: skip
    model = paddle.Model(net, *specs_for("lenet5"))  # the MNIST preset copied from an example: wrong here
    model.prepare(paddle.optimizer.Adam(parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
    counter = BatchCounter()
    with pytest.raises(FitInputError) as error:
        model.fit(RGBSamples(), batch_size=4, verbose=0, callbacks=[callbacks.NaNGuard(), counter])
    assert "InputSpec 'image' [None, 1, 28, 28] does not fit the network" in str(error.value)
    assert "InputSpec([None, 3, 32, 32], 'float32', 'image')" in str(error.value)
    assert "[None, 1, 28, 28], 'float32'" not in str(error.value)
    assert counter.batches == 0


def test_samples_that_do_not_fit_are_told_what_the_spec_wants():
    net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.Flatten(), paddle.nn.Linear(4 * 30 * 30, 2))
    model = paddle.Model(net, InputSpec([None, 3, 32, 32], "float32", "image"))
    model.prepare(paddle.optimizer.Adam(parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
    flat = paddle.io.TensorDataset([paddle.zeros([4, 3 * 32 * 32]), paddle.zeros([4, 1], "int64")])  # flattened
    with pytest.raises(FitInputError, match=r"e\.g\. float32 \[3, 32, 32\] as the model's InputSpec 'image' says"):
        model.fit(flat, batch_size=4, verbose=0, callbacks=[callbacks.NaNGuard()])


def test_float_labels_for_cross_entropy_are_refused_before_the_first_step(mnist_train_small):
    counter = BatchCounter()
    with pytest.raises(FitInputError, match=r"labels of train_data are float32.*int64.*Received: label dtype=float32"):
        _model().fit(
            CourseDataset(mnist_train_small), batch_size=32, verbose=0, callbacks=[callbacks.NaNGuard(), counter]
        )
    assert counter.batches == 0


class RegressionMNIST(CourseDataset):
    """The course's regression: the digit as a float target of shape [1], for square_error_cost."""

    def __getitem__(self, idx):
        image, label = super().__getitem__(idx)
        return image, label.reshape([1])


def test_float_labels_are_fine_for_a_loss_that_wants_them(mnist_train_small):
    net = paddle.nn.Sequential(paddle.nn.Flatten(), paddle.nn.Linear(784, 1))
    specs = [InputSpec([None, 1, 28, 28], "float32", "image")], [InputSpec([None, 1], "float32", "label")]
    model = paddle.Model(net, *specs)
    model.prepare(paddle.optimizer.SGD(1e-3, parameters=net.parameters()), paddle.nn.MSELoss())  # square_error_cost
    data = RegressionMNIST(MNIST.from_arrays(mnist_train_small.raw_images[:64], mnist_train_small.labels[:64]))
    assert preflight.check_data(model, paddle.io.DataLoader(data, batch_size=16)) is None
    counter = BatchCounter()
    model.fit(data, batch_size=16, epochs=1, verbose=0, callbacks=[callbacks.NaNGuard(), counter])
    assert counter.batches == 4  # every batch trained, nothing refused


def test_eval_data_is_checked_at_train_begin_too(mnist_train_small):
    counter = BatchCounter()
    with pytest.raises(FitInputError, match="samples of eval_data are PIL images"):
        _model().fit(
            MNIST("train", limit=64),
            paddle_mnist("test", limit=100),
            batch_size=32,
            verbose=0,
            callbacks=[callbacks.NaNGuard(), counter],
        )
    assert counter.batches == 0


def test_samples_the_network_cannot_take_are_refused_before_the_first_step(mnist_train_small):
    # the course's paddle.vision.set_image_backend('cv2'): Paddle's MNIST then yields float32 [28, 28] arrays,
    # which a convolutional network cannot take; hapi would fail in the first step with Paddle's raw error
    counter = BatchCounter()
    with pytest.raises(FitInputError, match=r"samples of train_data \(\[28, 28\] float32\) do not fit the network"):
        _model().fit(
            paddle_mnist("train", limit=100, backend="cv2"),
            batch_size=32,
            verbose=0,
            callbacks=[callbacks.NaNGuard(), counter],
        )
    assert counter.batches == 0


def test_float64_samples_are_refused_before_the_first_step(mnist_train_small):
    small = MNIST.from_arrays(mnist_train_small.raw_images[:64], mnist_train_small.labels[:64])
    small.images = small.images.astype("float64")
    with pytest.raises(FitInputError, match=r"\[1, 28, 28\] float64\) do not fit the network"):
        _model().fit(small, batch_size=32, verbose=0, callbacks=[callbacks.NaNGuard()])


def test_the_flat_preset_on_images_stays_accepted(tmp_path):
    # the library's MLPs flatten inside: [1, 28, 28] samples with the [None, 784] spec train and export
    model, counter = _model("mlp"), BatchCounter()
    model.fit(MNIST("train", limit=64), batch_size=32, verbose=0, callbacks=[callbacks.NaNGuard(), counter])
    assert counter.batches == 2
    report = export_model(model, tmp_path / "mlp")  # reloaded with paddle.inference and compared
    assert report.max_abs_diff < 1e-5 and report.metadata["input"]["shape"] == [-1, 784]


def test_pil_samples_fail_at_train_begin_instead_of_hanging(subprocess_env):
    # Without the check, hapi's loader thread dies in default_collate_fn and fit waits forever:
    # run it in a subprocess so that a regression fails on the timeout instead of hanging the suite.
    script = textwrap.dedent(
        """
        import paddle
        from paddle_mnist_hapi import callbacks, create_model, specs_for
        from paddle_mnist_hapi.data import paddle_mnist
        net = create_model("lenet5")
        model = paddle.Model(net, *specs_for("lenet5"))
        model.prepare(paddle.optimizer.Adam(parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
        model.fit(paddle_mnist("train", limit=100), batch_size=10, verbose=0, callbacks=[callbacks.NaNGuard()])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=subprocess_env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "FitInputError: The samples of train_data are PIL images" in done.stderr
    assert "transform=paddle.vision.transforms.ToTensor()" in done.stderr


class NoisyMNIST(CourseDataset):
    def __init__(self, mnist: MNIST) -> None:
        super().__init__(mnist, label_dtype="int64", noise=True)


def _train_and_get_weights(with_ours: bool, mnist: MNIST) -> np.ndarray:
    paddle.seed(3)
    np.random.seed(3)
    with paddle.utils.unique_name.guard():
        model = _model("lenet5")
        # shuffle=True draws its order from numpy's global RNG, the transform draws from it too
        loader = paddle.io.DataLoader(NoisyMNIST(mnist), batch_size=16, shuffle=True)
        model.fit(loader, epochs=1, verbose=0, callbacks=[callbacks.NaNGuard()] if with_ours else [])
        return np.concatenate([p.numpy().ravel() for p in model.parameters()])


def test_the_check_changes_neither_the_data_order_nor_the_random_draws(mnist_train_small):
    mnist = MNIST.from_arrays(mnist_train_small.raw_images[:96], mnist_train_small.labels[:96])
    np.testing.assert_array_equal(_train_and_get_weights(True, mnist), _train_and_get_weights(False, mnist))


def test_first_sample_restores_every_rng(mnist_train_small):
    loader = paddle.io.DataLoader(NoisyMNIST(mnist_train_small), batch_size=4)
    before = (np.random.get_state()[1].copy(), paddle.get_rng_state()[0].__getstate__())
    preflight.first_sample(loader)
    assert np.array_equal(np.random.get_state()[1], before[0])
    assert paddle.get_rng_state()[0].__getstate__() == before[1]


def test_the_check_runs_once_per_fit(monkeypatch, tmp_path):
    calls = []
    real = preflight.check_spec
    monkeypatch.setattr(preflight, "check_spec", lambda model, sample=None: calls.append(1) or real(model, sample))
    model = _model()
    ours = [callbacks.NaNGuard(), callbacks.LRStepper(), callbacks.MetricsLog(str(tmp_path / "m.jsonl"))]
    for _ in range(2):
        model.fit(MNIST("train", limit=32), batch_size=32, verbose=0, callbacks=ours)
    assert len(calls) == 2


def test_worker_loader_with_tensor_samples_gets_shared_memory_off_and_trains():
    # Paddle 3.3.1's workers crash (segmentation fault, malloc corruption) on batches of Paddle
    # tensors in shared memory; docs/migrating.md has the reproduction without the library.
    loader = paddle.io.DataLoader(
        paddle_mnist("train", transform=ToTensor(), limit=400), batch_size=20, shuffle=True, num_workers=2
    )
    model = _model()
    model.fit(loader, epochs=1, verbose=0, callbacks=[callbacks.NaNGuard()])
    assert loader.use_shared_memory is False
    assert model.evaluate(loader, verbose=0)["acc"] > 0.3


def test_worker_loader_with_numpy_samples_keeps_shared_memory(mnist_train_small):
    loader = paddle.io.DataLoader(MNIST("train", limit=64), batch_size=32, num_workers=1)
    _model().fit(loader, epochs=1, verbose=0, callbacks=[callbacks.NaNGuard()])
    assert loader.use_shared_memory is True


def test_export_model_raises_export_error_for_a_spec_that_does_not_fit(tmp_path):
    model = _model(inputs=([InputSpec([None, 784], "float32", "image")], specs_for("lenet5")[1]))
    with pytest.raises(ExportError, match=r"InputSpec 'image' \[None, 784\] does not fit the network"):
        export_model(model, tmp_path / "lenet5")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_readme_example_runs_and_prints_no_paddle_warning(subprocess_env, tmp_path):
    # README.md's first example, as written, on a few images and one epoch: hapi's own to_tensor of its loader's
    # tensors used to warn "To copy construct from a tensor ..." (Paddle warns once per process: a fresh process).
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    script = readme.split("```python\n", 1)[1].split("```", 1)[0]
    for full, small in (('MNIST("train")', 'MNIST("train", limit=128)'), ('MNIST("test")', 'MNIST("test", limit=64)'),
                        ("epochs=4", "epochs=1")):  # fmt: skip
        assert full in script
        script = script.replace(full, small)
    done = subprocess.run(
        [sys.executable, "-c", script], env=subprocess_env, capture_output=True, text=True, timeout=180, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "'acc'" in done.stdout
    assert "To copy construct from a tensor" not in done.stderr
    # ResumeCkpt() and VisualDL() with no path write under runs/default (python -c has no script name)
    assert list((tmp_path / "runs" / "default" / "checkpoints").glob("ckpt-*"))
    assert list((tmp_path / "runs" / "default" / "vdl").iterdir())
