"""InputSpec presets, so ``paddle.Model`` and ``model.save(training=False)``
always see explicit shapes.

Examples:
    >>> from paddle_mnist_hapi.specs import MNIST_IMAGE_SPEC, specs_for
    >>> MNIST_IMAGE_SPEC.shape
    (-1, 1, 28, 28)
    >>> inputs, labels = specs_for("mlp")
    >>> inputs[0].shape, labels[0].name
    ((-1, 784), 'label')
"""

from __future__ import annotations

from paddle.static import InputSpec

__all__ = ["INPUT_SPECS", "MNIST_FLAT_SPEC", "MNIST_IMAGE_SPEC", "MNIST_LABEL_SPEC", "specs_for"]

#: A batch of normalized images, ``[N, 1, 28, 28]`` float32.
MNIST_IMAGE_SPEC = InputSpec([None, 1, 28, 28], "float32", "image")
#: A batch of flattened images, ``[N, 784]`` float32.
MNIST_FLAT_SPEC = InputSpec([None, 784], "float32", "image")
#: A batch of class ids, ``[N, 1]`` int64.
MNIST_LABEL_SPEC = InputSpec([None, 1], "int64", "label")

#: Input preset by name, as models declare it in the registry.
INPUT_SPECS = {"image": MNIST_IMAGE_SPEC, "flat": MNIST_FLAT_SPEC}


def specs_for(model_name: str) -> tuple[list[InputSpec], list[InputSpec]]:
    """``(inputs, labels)`` for ``paddle.Model(net, inputs, labels)``.

    Args:
        model_name (str): a name from :func:`paddle_mnist_hapi.list_models`.

    Raises:
        UnknownModelError: the name is not registered (close names suggested).

    Examples:
        >>> import paddle
        >>> from paddle_mnist_hapi import create_model
        >>> model = paddle.Model(create_model("lenet5"), *specs_for("lenet5"))
        >>> model._inputs[0].shape
        (-1, 1, 28, 28)
    """
    from paddle_mnist_hapi.models.registry import model_entry

    return [INPUT_SPECS[model_entry(model_name).input_kind]], [MNIST_LABEL_SPEC]
