from __future__ import annotations

import numpy as np
import paddle
import pytest

from paddle_mnist_hapi import create_model, list_models, specs_for
from paddle_mnist_hapi.deploy.export import export_model, load_inference_predictor, run_predictor
from paddle_mnist_hapi.errors import ConfigError, UnknownModelError

ALL_MODELS = list_models()


def test_registry_lists_the_tutorial_networks():
    assert ALL_MODELS == ["lenet5", "lenet_sigmoid", "lenet_wide", "linear", "mlp", "mnist_cnn"]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_output_shape_for_both_input_layouts(name):
    net = create_model(name, num_classes=7)
    spec = specs_for(name)[0][0]
    batch = paddle.rand([3, *spec.shape[1:]])
    assert net(batch).shape == [3, 7]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_training_steps_lower_the_loss(name, mnist_train_small):
    net = create_model(name)
    model = paddle.Model(net, *specs_for(name))
    model.prepare(paddle.optimizer.Adam(3e-3, parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
    shape = specs_for(name)[0][0].shape[1:]
    x = mnist_train_small.images[:128].reshape(-1, *shape)
    y = mnist_train_small.labels[:128]
    first = float(np.ravel(model.eval_batch([x], [y]))[0])
    for _ in range(30):
        model.train_batch([x], [y])
    assert float(np.ravel(model.eval_batch([x], [y]))[0]) < 0.9 * first


@pytest.mark.parametrize("name", ALL_MODELS)
def test_export_and_reload_through_paddle_inference(name, tmp_path, mnist_test_small):
    model = paddle.Model(create_model(name), *specs_for(name))
    shape = specs_for(name)[0][0].shape[1:]
    sample = mnist_test_small.images[:8].reshape(-1, *shape)
    report = export_model(model, tmp_path / name, sample=sample, batch_sizes=(1, 8))
    assert report.max_abs_diff < 1e-5
    predictor = load_inference_predictor(tmp_path / name)
    np.testing.assert_allclose(
        run_predictor(predictor, sample), model.network(paddle.to_tensor(sample)).numpy(), atol=1e-5
    )


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownModelError, match=r"Did you mean 'lenet5'.*Received: name='lenet'"):
        create_model("lenet")


def test_bad_num_classes_is_refused():
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("lenet5", num_classes=1)


def test_pattern_filter():
    assert list_models("*cnn") == ["mnist_cnn"]
    assert list_models("resnet*") == []


def test_a_new_model_is_buildable_by_registering_it():
    from paddle_mnist_hapi.models.registry import _REGISTRY, register_model

    @register_model("flat", source="test")
    def tiny(num_classes: int = 10) -> paddle.nn.Layer:
        return paddle.nn.Linear(784, num_classes)

    try:
        assert "tiny" in list_models()
        assert specs_for("tiny")[0][0].shape == (-1, 784)
    finally:
        _REGISTRY.pop("tiny")
