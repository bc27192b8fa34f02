"""Model zoo: every network registers itself when its module is imported.

Examples:
    >>> from paddle_mnist_hapi.models import list_models
    >>> list_models()
    ['lenet5', 'lenet_sigmoid', 'lenet_wide', 'linear', 'mlp', 'mnist_cnn']
"""

from paddle_mnist_hapi.models import cnn, lenet, mlp
from paddle_mnist_hapi.models.registry import ModelEntry, create_model, list_models, model_entry, register_model

__all__ = ["ModelEntry", "cnn", "create_model", "lenet", "list_models", "mlp", "model_entry", "register_model"]
