"""Export for deployment: paddle.inference parity, metadata, ONNX parity (with the onnx extra)."""

from __future__ import annotations

import json

import numpy as np
import paddle
import pytest
from paddle.static import InputSpec

from paddle_mnist_hapi import ImageInput, create_model, specs_for
from paddle_mnist_hapi.data import MEAN, STD
from paddle_mnist_hapi.deploy.export import export_model, load_inference_predictor, run_predictor
from paddle_mnist_hapi.deploy.onnx_export import export_onnx, load_onnx_session, onnx_available, run_onnx
from paddle_mnist_hapi.deploy.predict import Predictor
from paddle_mnist_hapi.errors import ConfigError, ExportError


def _briefly_trained(name: str, data) -> paddle.Model:
    model = paddle.Model(create_model(name), *specs_for(name))
    model.prepare(
        paddle.optimizer.Adam(2e-3, parameters=model.parameters()),
        paddle.nn.CrossEntropyLoss(),
        paddle.metric.Accuracy(),
    )
    model.fit(data, batch_size=64, epochs=1, verbose=0)
    return model


@pytest.mark.parametrize("name", ["lenet5", "mlp"])
def test_export_reloads_with_paddle_inference_and_matches_the_trained_model(
    name, tmp_path, mnist_train_small, mnist_test_small
):
    model = _briefly_trained(name, mnist_train_small)
    shape = specs_for(name)[0][0].shape[1:]  # (1, 28, 28) or (784,)
    all_images = mnist_test_small.images.reshape(-1, *shape)
    images = all_images[:64]
    report = export_model(model, tmp_path / name, sample=images, batch_sizes=(1, 64))
    assert report.max_abs_diff < 1e-5
    assert report.batch_sizes == [1, 64]
    assert sorted(report.files) == sorted(str(tmp_path / name) + s for s in (".json", ".pdiparams", "_meta.json"))

    # An independent reload (a fresh predictor, other batch sizes) agrees with the dygraph network.
    predictor = load_inference_predictor(tmp_path / name)
    model.network.eval()
    for size in (1, 7, 64):
        expected = model.network(paddle.to_tensor(images[:size])).numpy()
        got = run_predictor(predictor, images[:size])
        assert got.shape == (size, 10)
        assert np.abs(got - expected).max() < 1e-5
    logits = run_predictor(predictor, all_images)
    accuracy = (logits.argmax(1) == mnist_test_small.labels.ravel()).mean()
    assert accuracy > 0.3  # 2,000 real images, 1 epoch (32 steps); random weights would be near 10%

    # paddle.jit.load takes the same prefix (the metadata file beside it is not read as another program)
    layer = paddle.jit.load(str(tmp_path / name))
    layer.eval()
    assert np.abs(layer(paddle.to_tensor(images[:7])).numpy() - run_predictor(predictor, images[:7])).max() < 1e-5


def test_an_older_exports_metadata_is_still_read_and_replaced_on_re_export(tmp_path):
    model = paddle.Model(create_model("lenet5"), *specs_for("lenet5"))
    export_model(model, tmp_path / "m", class_names=list("abcdefghij"))
    (tmp_path / "m_meta.json").rename(tmp_path / "m.meta.json")  # what version 0.1 wrote
    assert Predictor(tmp_path / "m").class_names == list("abcdefghij")
    export_model(model, tmp_path / "m")
    assert not (tmp_path / "m.meta.json").exists() and (tmp_path / "m_meta.json").is_file()
    paddle.jit.load(str(tmp_path / "m"))  # loads: no PREFIX.<name>.json left beside the model


def test_export_metadata_tells_a_consumer_what_it_needs(tmp_path):
    model = paddle.Model(create_model("lenet5"), *specs_for("lenet5"))
    report = export_model(model, tmp_path / "m", class_names=list("abcdefghij"))
    meta = json.loads((tmp_path / "m_meta.json").read_text())
    assert meta == report.metadata
    assert meta["input"] == {"name": "image", "shape": [-1, 1, 28, 28], "dtype": "float32", "channels": 1}
    assert meta["preprocessing"]["kind"] == "mnist_digits"
    assert meta["preprocessing"]["mean"] == MEAN and meta["preprocessing"]["std"] == STD
    assert "invert" in meta["preprocessing"]["foreground"]
    assert meta["class_names"] == list("abcdefghij")
    assert meta["versions"]["paddle"] == paddle.__version__
    assert meta["verified"]["max_abs_diff"] == report.max_abs_diff < 1e-5
    tolerance = meta["verified"]["tolerance"]
    assert tolerance["rtol"] == 1e-5 and tolerance["atol_given"] is None
    assert 1e-5 <= tolerance["atol"] < 1e-3  # 1e-5 x max(1, the largest |logit|) of an untrained LeNet
    assert meta["verified"]["sample"] == "random uniform in [-1, 1), seed 0, 16 inputs"


def test_export_without_input_spec_is_refused(tmp_path):
    with pytest.raises(ExportError, match="no input spec"):
        export_model(paddle.Model(create_model("lenet5")), tmp_path / "m")


def test_missing_or_corrupt_export_is_a_clear_error(tmp_path):
    with pytest.raises(ExportError, match=r"missing .*m\.json"):
        load_inference_predictor(tmp_path / "m")
    (tmp_path / "m.json").write_text("{}")
    (tmp_path / "m.pdiparams").write_bytes(b"\0" * 10)
    with pytest.raises(ExportError, match=r"paddle\.inference cannot load"):
        load_inference_predictor(tmp_path / "m")


needs_onnx = pytest.mark.skipif(not onnx_available(), reason="the onnx extra (paddle2onnx, onnxruntime) is missing")


@needs_onnx
def test_onnx_export_matches_paddle_inference_on_real_mnist(trained_run, tmp_path, mnist_test_small):
    prefix = trained_run["export"]
    images = mnist_test_small.images
    report = export_onnx(prefix, tmp_path / "lenet5.onnx", sample=images[:64], batch_sizes=(1, 64))
    assert report.max_abs_diff < 1e-5
    assert report.opset_version == 13
    assert report.versions["paddle2onnx"] == "2.1.0"

    session = load_onnx_session(report.path)
    predictor = load_inference_predictor(prefix)
    for size in (1, 33):
        assert np.abs(run_onnx(session, images[:size]) - run_predictor(predictor, images[:size])).max() < 1e-5
    onnx_labels = run_onnx(session, images).argmax(1)
    paddle_labels = run_predictor(predictor, images).argmax(1)
    assert (onnx_labels == paddle_labels).all()
    assert (onnx_labels == mnist_test_small.labels.ravel()).mean() > 0.97

    meta = json.loads(open(prefix + "_meta.json").read())
    assert meta["onnx"]["file"] == "lenet5.onnx"
    assert meta["onnx"]["verified"]["max_abs_diff"] == report.max_abs_diff


@needs_onnx
def test_onnx_opset_outside_paddle2onnx_range_is_refused_not_aborted(trained_run, tmp_path):
    with pytest.raises(ExportError, match=r"opsets 7\.\.21"):
        export_onnx(trained_run["export"], tmp_path / "x.onnx", opset_version=23)
    assert not (tmp_path / "x.onnx").exists()


@needs_onnx
def test_failed_onnx_conversion_is_an_export_error(tmp_path):
    from paddle_mnist_hapi.deploy.onnx_export import _convert

    (tmp_path / "bad.json").write_text('{"not": "a paddle program"}')
    (tmp_path / "bad.pdiparams").write_bytes(b"\0" * 16)
    with pytest.raises(ExportError, match="paddle2onnx could not convert"):
        _convert(str(tmp_path / "bad"), 13)


@needs_onnx
def test_onnx_export_verifies_by_export_models_rule_a_model_with_logits_above_1e4(tmp_path):
    net = create_model("lenet5")
    head = [layer for layer in net.sublayers() if isinstance(layer, paddle.nn.Linear)][-1]
    head.weight.set_value(head.weight.numpy() * 1e4)  # logits of order 1e4, as after an unstable epoch
    export_model(paddle.Model(net, *specs_for("lenet5")), tmp_path / "m")
    sample = np.random.default_rng(2).uniform(-1, 1, (16, 1, 28, 28)).astype(np.float32)
    paddle_logits = run_predictor(load_inference_predictor(tmp_path / "m"), sample)
    assert np.abs(paddle_logits).max() > 1e4

    report = export_onnx(tmp_path / "m", sample=sample)
    assert report.max_abs_diff > 1e-5  # float32 rounding at this scale: the old fixed absolute 1e-5 refused it
    assert report.max_rel_diff < 1e-6
    tolerance = json.loads((tmp_path / "m_meta.json").read_text())["onnx"]["verified"]["tolerance"]
    assert tolerance == report.tolerance
    assert tolerance["rule"].startswith("numpy.allclose: |onnx - paddle.inference| <= atol + rtol * ")
    assert tolerance["rtol"] == 1e-5 and tolerance["atol_given"] is None
    assert tolerance["atol"] == pytest.approx(1e-5 * np.abs(paddle_logits).max(), rel=1e-6)  # export_model's scaling
    onnx_logits = run_onnx(load_onnx_session(report.path), sample)
    assert np.allclose(onnx_logits, paddle_logits, rtol=tolerance["rtol"], atol=tolerance["atol"])

    with pytest.raises(ExportError, match=r"The ONNX model disagrees with paddle\.inference on output 0") as error:
        export_onnx(tmp_path / "m", tmp_path / "strict.onnx", sample=sample, atol=0.0, rtol=0.0)
    message = str(error.value)
    assert "allowed |diff| <= atol + rtol * |paddle.inference| = 0 + 0 *" in message
    assert "float32 rounding" in message and "export_onnx(..., rtol=0.0001)" in message
    assert not (tmp_path / "strict.onnx").exists()


def test_onnx_export_without_the_extra_says_how_to_install(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "paddle2onnx", None)  # what an environment without the extra sees
    with pytest.raises(ExportError, match=r"pip install 'paddle-mnist-hapi\[onnx\]'"):
        export_onnx(tmp_path / "m")


def test_export_survives_a_numpy_value_in_builtins_underscore(tmp_path, monkeypatch):
    import builtins

    # The REPL (and doctest) keep the last result in builtins._; Paddle 3.3.1's jit.save then
    # raises "The truth value of an array ... is ambiguous" unless export_model hides it.
    last = np.float32(255.0)
    monkeypatch.setattr(builtins, "_", last, raising=False)
    report = export_model(paddle.Model(create_model("lenet5"), *specs_for("lenet5")), tmp_path / "m")
    assert report.max_abs_diff < 1e-5
    assert builtins._ is last


# ----------------------------------------------------------------------------- models of your own


class SmallRGB(paddle.nn.Layer):
    """A 3x32x32 CNN with BatchNorm; ``traced_differently`` makes the traced program add 1 (a bug to catch)."""

    def __init__(self, num_classes: int = 4, traced_differently: bool = False, two_outputs: bool = False) -> None:
        super().__init__()
        self.features = paddle.nn.Sequential(
            paddle.nn.Conv2D(3, 8, 3, padding=1), paddle.nn.BatchNorm2D(8), paddle.nn.ReLU(), paddle.nn.MaxPool2D(2),
            paddle.nn.Conv2D(8, 16, 3, padding=1), paddle.nn.BatchNorm2D(16), paddle.nn.ReLU(),
            paddle.nn.AdaptiveAvgPool2D(1), paddle.nn.Flatten(),
        )  # fmt: skip
        self.head = paddle.nn.Linear(16, num_classes)
        self.traced_differently, self.two_outputs = traced_differently, two_outputs

    def forward(self, x):
        features = self.features(x)
        logits = self.head(features)
        if self.traced_differently and not paddle.in_dynamic_mode():
            if self.two_outputs:
                features = features + 1.0
            else:
                logits = logits + 1.0
        return (logits, features) if self.two_outputs else logits


RGB_SPEC = InputSpec([None, 3, 32, 32], "float32", "image")


def _rgb_model(**kwargs) -> paddle.Model:
    net = SmallRGB(**kwargs)
    net.train()
    with paddle.no_grad():  # BatchNorm's running statistics away from their initial values
        for _ in range(3):
            net(paddle.randn([8, 3, 32, 32]) * 2 + 0.5)
    return paddle.Model(net, RGB_SPEC)


def test_an_rgb_cnn_exports_with_its_own_metadata(tmp_path):
    model = _rgb_model()
    report = export_model(
        model, tmp_path / "rgb", class_names=["cat", "dog", "fox", "owl"], preprocessing=ImageInput(mean=0.5, std=0.5)
    )
    assert report.max_abs_diff < 1e-4
    meta = json.loads((tmp_path / "rgb_meta.json").read_text())
    assert meta["input"] == {"name": "image", "shape": [-1, 3, 32, 32], "dtype": "float32", "channels": 3}
    assert meta["class_names"] == ["cat", "dog", "fox", "owl"]
    section = meta["preprocessing"]
    assert section["kind"] == "image" and section["size"] == [32, 32] and section["channels"] == "RGB"
    assert section["mean"] == [0.5] and section["std"] == [0.5] and section["scale"] == pytest.approx(1 / 255)
    assert "grayscale" not in section and "fit" not in section  # nothing of the MNIST digit pipeline

    # class names default to 0..N-1 from the output's size; no picture preprocessing is guessed
    meta = export_model(_rgb_model(), tmp_path / "plain").metadata
    assert meta["class_names"] == ["0", "1", "2", "3"] and meta["preprocessing"]["kind"] == "none"


def test_resnet18_with_logits_above_1e4_exports_and_verifies(tmp_path):
    net = paddle.vision.models.resnet18(num_classes=10)
    # as after a short, unstable epoch: logits of order 1e5 (the default absolute 1e-5 refused such a model)
    net.fc.weight.set_value(net.fc.weight.numpy() * 2e4)
    model = paddle.Model(net, RGB_SPEC)
    sample = np.random.default_rng(1).uniform(-1, 1, (16, 3, 32, 32)).astype(np.float32)
    net.eval()
    assert float(np.abs(net(paddle.to_tensor(sample)).numpy()).max()) > 1e4
    report = export_model(model, tmp_path / "resnet18", sample=sample, preprocessing=ImageInput(mean=0.5, std=0.5))
    assert report.max_abs_diff > 1e-5  # float32 rounding at this scale: an absolute 1e-5 would refuse it
    assert report.max_rel_diff < 1e-5
    tolerance = report.metadata["verified"]["tolerance"]
    assert tolerance["atol"] > 1e-2 and tolerance["atol_given"] is None
    assert np.allclose(
        run_predictor(load_inference_predictor(tmp_path / "resnet18"), sample),
        net(paddle.to_tensor(sample)).numpy(),
        rtol=tolerance["rtol"],
        atol=tolerance["atol"],
    )


def _files(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.mark.parametrize("two_outputs", [False, True], ids=["logits", "second-output"])
def test_a_failed_verification_leaves_the_previous_export_byte_identical(tmp_path, two_outputs):
    export_model(_rgb_model(two_outputs=two_outputs), tmp_path / "m", class_names=list("abcd"))
    before = _files(tmp_path)
    assert sorted(before) == ["m.json", "m.pdiparams", "m_meta.json"]
    broken = _rgb_model(two_outputs=two_outputs, traced_differently=True)
    output = 1 if two_outputs else 0
    with pytest.raises(ExportError, match=rf"on output {output} \(of {1 + two_outputs}, shape") as error:
        export_model(broken, tmp_path / "m", class_names=list("abcd"))
    message = str(error.value)
    assert "max abs diff 1" in message and "max rel diff" in message  # how far off: absolute and relative
    assert "paddle.in_dynamic_mode()" in message and "eval mode)" not in message  # what to try
    assert "an earlier export there is unchanged" in message
    assert _files(tmp_path) == before  # byte for byte, and no partial or temporary file left


def test_tolerances_are_numpy_allclose_and_recorded(tmp_path):
    model = _rgb_model()
    with pytest.raises(ExportError, match="float32 rounding") as error:
        export_model(model, tmp_path / "m", atol=0.0, rtol=0.0)
    assert not list(tmp_path.iterdir())  # nothing half-written
    assert "allowed |diff| <= atol + rtol * |trained| = 0 + 0 *" in str(error.value)
    report = export_model(model, tmp_path / "m", atol=1e-3, rtol=1e-3)
    assert report.metadata["verified"]["tolerance"] | {"rule": None} == {
        "rule": None, "rtol": 1e-3, "atol": 1e-3, "atol_given": 1e-3
    }  # fmt: skip


def test_class_names_and_preprocessing_are_checked_before_anything_is_written(tmp_path):
    model = _rgb_model()
    with pytest.raises(ExportError, match=r"3 class names were given, but the model's output has 4 classes"):
        export_model(model, tmp_path / "m", class_names=["a", "b", "c"])
    with pytest.raises(ExportError, match=r"MNIST digit preprocessing makes one 28x28 grayscale picture"):
        export_model(model, tmp_path / "m", preprocessing="mnist_digits")
    with pytest.raises(ExportError, match=r"mean has 2 values but the model's input has 3 channels"):
        export_model(model, tmp_path / "m", preprocessing={"mean": [0.5, 0.5], "std": 0.5})
    with pytest.raises(ConfigError, match=r"Unknown ImageInput field\(s\) \['normalise'\]"):
        export_model(model, tmp_path / "m", preprocessing={"normalise": True})
    assert not list(tmp_path.iterdir())
