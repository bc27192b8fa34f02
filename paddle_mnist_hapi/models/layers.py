"""Drop-in layers that remove measured CPU costs of Paddle's own.

Both are used by the LeNet family; ``docs/scale.md`` has the profiles.

**Conv2D.**

``paddle.nn.Conv2D`` adds its bias with a broadcasting ``add`` of a
``[1, C, 1, 1]`` tensor. On Paddle 3.3 CPU that broadcast kernel and its
gradient are slow: for LeNet-5's first conv at batch 64 they take about 5 ms
per step (forward + backward), more than the convolution itself, and about
a third of a whole training step. Expanding the bias to the output's shape
first and adding tensors of equal shape is the same arithmetic (the forward
output is bit-identical) at a tenth of the cost; the bias gradient becomes a
plain sum. :class:`Conv2D` does that in dygraph; in static graphs (``jit.save``
export) it keeps Paddle's own code, so exported models are unchanged.

**FusedSequential.** A ``paddle.nn.Sequential`` that runs each
``Conv2D → ReLU → MaxPool2D(2, 2)`` run of its children as
``conv without bias → max pool → + bias → ReLU``. The forward values are the
same bit for bit: a max commutes with adding one number to all its inputs (IEEE
rounding is monotone) and with ReLU (monotone). The bias add and the ReLU then
touch a quarter of the elements, and the pool uses Paddle's
``max_pool2d_with_index``, whose gradient scatters through the saved argmax
instead of searching every window again (same argmax: the first maximum).
Together 1.2-1.3× the training speed of LeNet-5 on one CPU thread
(``python bench/workloads.py train --paths unfused,library``). Gradients equal the unfused ones up to
the order of float sums. Dygraph only: static graphs and ``jit.save`` exports
run the children one by one, as ``paddle.nn.Sequential`` does.

Examples:
    >>> import paddle
    >>> from paddle_mnist_hapi.models.layers import Conv2D
    >>> fast, stock = Conv2D(1, 6, 5, padding=2), paddle.nn.Conv2D(1, 6, 5, padding=2)
    >>> _ = stock.set_state_dict(fast.state_dict())
    >>> x = paddle.randn([2, 1, 28, 28])
    >>> bool((fast(x) == stock(x)).all())
    True
"""

from __future__ import annotations

from collections.abc import Iterator

import paddle
from paddle.nn import functional as F

__all__ = ["Conv2D", "FusedSequential", "conv_relu_pool"]


class Conv2D(paddle.nn.Conv2D):
    """``paddle.nn.Conv2D`` with a fast bias add; same arguments, parameters and ``state_dict``.

    Examples:
        >>> conv = Conv2D(6, 16, 5)
        >>> list(conv(paddle.zeros([1, 6, 14, 14])).shape), sorted(conv.state_dict())
        ([1, 16, 10, 10], ['bias', 'weight'])
    """

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.bias is None or self._padding_mode != "zeros" or not paddle.in_dynamic_mode() or x.is_dist():
            return super().forward(x)
        out = _conv_without_bias(self, x)
        shape = [1] * len(out.shape)
        shape[self._channel_dim] = -1
        return out + self.bias.reshape(shape).expand(out.shape)


class FusedSequential(paddle.nn.Sequential):
    """``paddle.nn.Sequential`` with the conv → ReLU → 2×2 max pool runs fused in dygraph.

    Same children, names, ``state_dict`` and exported graph as ``paddle.nn.Sequential``;
    a run whose layers carry forward hooks, or differ from the pattern in any
    setting (another pool size, padding, ``ceil_mode``, ``NHWC``), runs unfused.

    Examples:
        >>> fused = FusedSequential(Conv2D(1, 6, 5, padding=2), paddle.nn.ReLU(), paddle.nn.MaxPool2D(2, 2))
        >>> stock = paddle.nn.Sequential(*fused.children())
        >>> x = paddle.randn([2, 1, 28, 28])
        >>> bool((fused(x) == stock(x)).all()), fused.fused_runs()
        (True, [0])
    """

    def fused_runs(self) -> list[int]:
        """Indices of the children that start a fused conv → ReLU → pool run."""
        return [i for i, fused in self._runs() if fused]

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if not paddle.in_dynamic_mode() or x.is_dist():
            return super().forward(x)
        layers = list(self._sub_layers.values())
        for i, fused in self._runs():
            x = _conv_pool_relu(layers[i], x) if fused else layers[i](x)
        return x

    def _runs(self) -> Iterator[tuple[int, bool]]:
        """``(index, fused)`` for each step of the forward pass: a fused run of three children, or one child."""
        layers, i = list(self._sub_layers.values()), 0
        while i < len(layers):
            fused = _fusable(layers[i : i + 3])
            yield i, fused
            i += 3 if fused else 1


def conv_relu_pool(conv: paddle.nn.Conv2D, pool: paddle.nn.MaxPool2D, x: paddle.Tensor) -> paddle.Tensor:
    """``pool(relu(conv(x)))``, fused as :class:`FusedSequential` fuses it when the layers allow, else unfused.

    For networks that call their layers in ``forward`` rather than through a ``Sequential``.

    Examples:
        >>> conv, pool = Conv2D(1, 20, 5, padding=2), paddle.nn.MaxPool2D(2, 2)
        >>> x = paddle.randn([2, 1, 28, 28])
        >>> bool((conv_relu_pool(conv, pool, x) == pool(F.relu(conv(x)))).all())
        True
    """
    if paddle.in_dynamic_mode() and not x.is_dist() and _fusable_pair(conv, pool):
        return _conv_pool_relu(conv, x)
    return pool(F.relu(conv(x)))


def _fusable(run: list[paddle.nn.Layer]) -> bool:
    """A Sequential's conv → ReLU → pool run that :func:`_conv_pool_relu` computes exactly."""
    return len(run) == 3 and type(run[1]) is paddle.nn.ReLU and not _hooked(run[1]) and _fusable_pair(run[0], run[2])


def _fusable_pair(conv: paddle.nn.Layer, pool: paddle.nn.Layer) -> bool:
    return (
        isinstance(conv, paddle.nn.Conv2D)
        and type(pool) is paddle.nn.MaxPool2D
        and conv._padding_mode == "zeros"
        and conv._data_format == "NCHW"
        and pool.ksize in (2, [2, 2], (2, 2))
        and pool.stride in (2, [2, 2], (2, 2), None)
        and pool.padding in (0, [0, 0], (0, 0))
        and not pool.ceil_mode
        and not pool.return_mask
        and pool.data_format == "NCHW"
        and not _hooked(conv)
        and not _hooked(pool)
    )


def _hooked(layer: paddle.nn.Layer) -> bool:
    return bool(layer._forward_pre_hooks or layer._forward_post_hooks)


def _conv_pool_relu(conv: paddle.nn.Conv2D, x: paddle.Tensor) -> paddle.Tensor:
    """conv without bias → 2×2 max pool → + bias → ReLU: the values of ReLU → pool after the full conv."""
    out = F.max_pool2d(_conv_without_bias(conv, x), 2, 2, return_mask=True)[0]
    if conv.bias is not None:
        out = out + conv.bias.reshape([1, -1, 1, 1]).expand(out.shape)
    return F.relu(out)


def _conv_without_bias(conv: paddle.nn.Conv2D, x: paddle.Tensor) -> paddle.Tensor:
    """``conv(x)`` without its bias, through the same Paddle function ``paddle.nn.Conv2D.forward`` calls."""
    return F.conv._conv_nd(
        x,
        conv.weight,
        bias=None,
        stride=conv._stride,
        padding=conv._updated_padding,
        padding_algorithm=conv._padding_algorithm,
        dilation=conv._dilation,
        groups=conv._groups,
        data_format=conv._data_format,
        channel_dim=conv._channel_dim,
        op_type=conv._op_type,
        use_cudnn=conv._use_cudnn,
    )
