"""Drop-in layers that remove a measured CPU cost of Paddle's own.

``paddle.nn.Conv2D`` adds its bias with a broadcasting ``add`` of a
``[1, C, 1, 1]`` tensor. On Paddle 3.3 CPU that broadcast kernel and its
gradient are slow: for LeNet-5's first conv at batch 64 they take about 5 ms
per step (forward + backward), more than the convolution itself, and about
a third of a whole training step. Expanding the bias to the output's shape
first and adding tensors of equal shape is the same arithmetic (the forward
output is bit-identical) at a tenth of the cost; the bias gradient becomes a
plain sum. :class:`Conv2D` does that in dygraph; in static graphs (``jit.save``
export) it keeps Paddle's own code, so exported models are unchanged.

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

import paddle
from paddle.nn import functional as F

__all__ = ["Conv2D"]


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
        out = F.conv._conv_nd(
            x,
            self.weight,
            bias=None,
            stride=self._stride,
            padding=self._updated_padding,
            padding_algorithm=self._padding_algorithm,
            dilation=self._dilation,
            groups=self._groups,
            data_format=self._data_format,
            channel_dim=self._channel_dim,
            op_type=self._op_type,
            use_cudnn=self._use_cudnn,
        )
        shape = [1] * len(out.shape)
        shape[self._channel_dim] = -1
        return out + self.bias.reshape(shape).expand(out.shape)
