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
