"""How far ``paddle.inference`` is from dygraph for resnet18, small and large logits: ``python bench/export_parity.py``.

The numbers behind ``export_model``'s default tolerance (docs/deployment.md): for
``paddle.vision.models.resnet18(num_classes=10)`` on 3x32x32 inputs (16, uniform in
[-1, 1), seed 0), once as built and once with its last layer scaled by 2e4 (logits of
order 1e5, as after a short, unstable epoch), it prints one JSON object per model:
the largest |logit|, the largest absolute difference, that difference relative to the
largest |logit| and the largest per-value relative difference (``|diff| / |trained|``),
and whether the default tolerance and the old fixed ``atol=1e-5`` accept it.
"""

from __future__ import annotations

import json
import tempfile

import numpy as np
import paddle
from paddle.static import InputSpec

from paddle_mnist_hapi.deploy.export import DEFAULT_ATOL, DEFAULT_RTOL, load_inference_predictor, run_predictor


def measure(scale: float) -> dict[str, float | bool]:
    paddle.seed(0)
    net = paddle.vision.models.resnet18(num_classes=10)
    net.fc.weight.set_value(net.fc.weight.numpy() * scale)
    prefix = tempfile.mkdtemp() + "/resnet18"
    paddle.Model(net, InputSpec([None, 3, 32, 32], "float32", "image")).save(prefix, training=False)
    sample = np.random.default_rng(0).uniform(-1, 1, (16, 3, 32, 32)).astype(np.float32)
    net.eval()
    with paddle.no_grad():
        trained = net(paddle.to_tensor(sample)).numpy().astype(np.float64)
    exported = run_predictor(load_inference_predictor(prefix), sample).astype(np.float64)
    diff = np.abs(exported - trained)
    largest = float(np.abs(trained).max())
    atol = DEFAULT_ATOL * max(1.0, largest)
    return {
        "fc_scale": scale,
        "max_abs_logit": largest,
        "max_abs_diff": float(diff.max()),
        "max_diff_over_max_logit": float(diff.max()) / largest,
        "max_diff_over_own_value": float((diff / np.abs(trained)).max()),
        "default_tolerance_accepts": bool(np.allclose(exported, trained, rtol=DEFAULT_RTOL, atol=atol)),
        "fixed_atol_1e-5_accepts": bool(np.allclose(exported, trained, rtol=0, atol=1e-5)),
    }


if __name__ == "__main__":
    for scale in (1.0, 2e4):
        print(json.dumps(measure(scale)))
