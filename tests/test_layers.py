"""models.layers.Conv2D: the same arithmetic as paddle.nn.Conv2D, a cheaper bias add."""

from __future__ import annotations

import numpy as np
import paddle
import pytest

from paddle_mnist_hapi.models.layers import Conv2D


@pytest.mark.parametrize(
    ("args", "kwargs", "shape"),
    [
        ((1, 6, 5), {"padding": 2}, [8, 1, 28, 28]),
        ((6, 16, 5), {}, [8, 6, 14, 14]),
        ((3, 4, 3), {"stride": 2, "data_format": "NHWC"}, [2, 9, 9, 3]),
    ],
)
def test_matches_paddle_conv2d_forward_and_backward(args, kwargs, shape) -> None:
    fast, stock = Conv2D(*args, **kwargs), paddle.nn.Conv2D(*args, **kwargs)
    stock.set_state_dict(fast.state_dict())
    x = paddle.randn(shape)
    x_fast, x_stock = x.detach(), x.detach()
    x_fast.stop_gradient = x_stock.stop_gradient = False
    out_fast, out_stock = fast(x_fast), stock(x_stock)
    np.testing.assert_array_equal(out_fast.numpy(), out_stock.numpy())  # bit-identical forward
    (out_fast**2).sum().backward()
    (out_stock**2).sum().backward()
    for a, b in ((fast.bias.grad, stock.bias.grad), (fast.weight.grad, stock.weight.grad), (x_fast.grad, x_stock.grad)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5 * float(b.abs().max()))


def test_export_keeps_paddles_own_graph_and_output(tmp_path) -> None:
    conv = Conv2D(1, 6, 5, padding=2)
    conv.eval()
    x = paddle.randn([3, 1, 28, 28])
    spec = paddle.static.InputSpec([None, 1, 28, 28], "float32", "x")
    paddle.jit.save(conv, str(tmp_path / "conv"), input_spec=[spec])
    loaded = paddle.jit.load(str(tmp_path / "conv"))
    np.testing.assert_allclose(loaded(x).numpy(), conv(x).numpy(), rtol=1e-6, atol=1e-6)
    assert "expand" not in (tmp_path / "conv.json").read_text()  # the static graph is the stock conv + add


def _twins(fused_cls=None):
    """A FusedSequential and a plain Sequential sharing the same child layers (so the same parameters)."""
    from paddle_mnist_hapi.models.layers import FusedSequential

    children = [
        Conv2D(1, 6, 5, padding=2), paddle.nn.ReLU(), paddle.nn.MaxPool2D(2, 2),
        paddle.nn.Conv2D(6, 16, 5), paddle.nn.ReLU(), paddle.nn.MaxPool2D(2, 2),
    ]  # fmt: skip
    return FusedSequential(*children), paddle.nn.Sequential(*children)


def test_fused_sequential_gives_the_same_values_and_gradients() -> None:
    fused, plain = _twins()
    assert fused.fused_runs() == [0, 3]
    x = paddle.to_tensor(np.random.default_rng(0).integers(-3, 4, (8, 1, 28, 28)).astype("float32"))  # many ties
    out_fused, out_plain = fused(x), plain(x)
    np.testing.assert_array_equal(out_fused.numpy(), out_plain.numpy())  # bit-identical forward
    weight = paddle.randn(out_plain.shape)
    grads = []
    for out in (out_fused, out_plain):
        (out * weight).sum().backward()
        grads.append([p.grad.numpy().copy() for p in plain.parameters()])
        plain.clear_gradients()
    for a, b in zip(*grads, strict=True):  # the same gradient up to the order of float sums
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()))


@pytest.mark.parametrize("change", ["pool 3", "ceil_mode", "padding", "sigmoid", "hook", "NHWC pool"])
def test_fused_sequential_runs_any_other_layer_unfused(change) -> None:
    fused, _ = _twins()
    seen: list[list[int]] = []
    if change == "sigmoid":
        fused[1] = paddle.nn.Sigmoid()
    elif change == "hook":
        fused[1].register_forward_post_hook(lambda layer, inputs, output: seen.append(list(output.shape)))
    else:
        options = {"pool 3": {"kernel_size": 3}, "ceil_mode": {"ceil_mode": True}, "padding": {"padding": 1}}
        options["NHWC pool"] = {"data_format": "NHWC"}
        fused[2] = paddle.nn.MaxPool2D(**{"kernel_size": 2, "stride": 2, **options[change]})
    assert fused.fused_runs() == [3]
    if change != "NHWC pool":  # (an NHWC pool after an NCHW conv is the user's own mismatch)
        x = paddle.randn([2, 1, 28, 28])
        np.testing.assert_array_equal(fused(x).numpy(), paddle.nn.Sequential(*fused.children())(x).numpy())
    if change == "hook":
        assert seen == [[2, 6, 28, 28]] * 2  # both runs called the ReLU's hook with its own output


def test_lenets_fuse_in_training_and_export_paddles_own_graph(tmp_path) -> None:
    from paddle_mnist_hapi import create_model

    for name, runs in (("lenet5", [0, 3]), ("lenet_wide", [0, 3])):
        network = create_model(name)
        assert network.features.fused_runs() == runs, name
        assert sorted(network.state_dict()) == sorted(create_model(name).state_dict())
    network = create_model("lenet5")
    network.eval()
    x = paddle.randn([3, 1, 28, 28])
    spec = paddle.static.InputSpec([None, 1, 28, 28], "float32", "x")
    paddle.jit.save(network, str(tmp_path / "lenet5"), input_spec=[spec])
    graph = (tmp_path / "lenet5.json").read_text()
    assert "max_pool2d_with_index" not in graph and "pool2d" in graph  # the exported graph is the unfused one
    loaded = paddle.jit.load(str(tmp_path / "lenet5"))
    np.testing.assert_allclose(loaded(x).numpy(), network(x).numpy(), rtol=1e-5, atol=1e-5)


def test_conv_relu_pool_in_the_course_cnn_matches_its_unfused_forward() -> None:
    from paddle_mnist_hapi import create_model

    network = create_model("mnist_cnn")
    x = paddle.randn([4, 1, 28, 28])
    relu = paddle.nn.functional.relu
    h = network.max_pool2(relu(network.conv2(network.max_pool1(relu(network.conv1(x))))))
    np.testing.assert_array_equal(network(x).numpy(), network.fc(paddle.flatten(h, 1)).numpy())
