"""Deployment: everything after training, beside ``serve/``.

- :mod:`~paddle_mnist_hapi.deploy.export`: ``model.save(training=False)`` verified with ``paddle.inference``
- :mod:`~paddle_mnist_hapi.deploy.onnx_export`: optional ONNX, verified with onnxruntime
- :mod:`~paddle_mnist_hapi.deploy.preprocess`: a picture (file, photo, drawing) to the model's input
- :mod:`~paddle_mnist_hapi.deploy.image_input`: the preprocessing an export declares (digits, ``ImageInput``, none)
- :mod:`~paddle_mnist_hapi.deploy.mnist_digit`: the one handwritten digit in a picture, drawn as MNIST did
- :mod:`~paddle_mnist_hapi.deploy.calibrate`: temperature scaling, ECE and the ``uncertain`` threshold
- :mod:`~paddle_mnist_hapi.deploy.predict`: ``Predictor`` for image files, arrays and batches
- :mod:`~paddle_mnist_hapi.deploy.reports`: accuracy, confusion matrix and misclassified images

The package root exports the public names (``export_model``, ``Predictor``, ``ImageInput``).
"""
