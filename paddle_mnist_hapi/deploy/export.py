"""Export a trained ``paddle.Model`` for deployment, and prove the export works.

``export_model`` calls ``model.save(prefix, training=False)`` (Paddle 3 writes
``prefix.json`` + ``prefix.pdiparams``), reloads the files with the real
``paddle.inference`` predictor, checks its outputs against the trained model
at batch size 1 and N, and writes ``prefix_meta.json`` with what a consumer
needs (input name and shape, preprocessing, class names, versions).

Examples:
    >>> import tempfile, paddle
    >>> from paddle_mnist_hapi import create_model, specs_for
    >>> model = paddle.Model(create_model("lenet5"), *specs_for("lenet5"))
    >>> report = export_model(model, tempfile.mkdtemp() + "/lenet5")
    >>> report.max_abs_diff < 1e-5, sorted(report.files)[0].endswith(".json")
    (True, True)
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import platform
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paddle

from paddle_mnist_hapi.data.dataset import MEAN, STD
from paddle_mnist_hapi.errors import ExportError

__all__ = [
    "METADATA_SUFFIX",
    "ExportReport",
    "export_model",
    "load_inference_predictor",
    "metadata_path",
    "run_predictor",
]

# Not ``prefix.<name>.json``: paddle.jit.load reads every such file beside the model as another program.
METADATA_SUFFIX = "_meta.json"
LEGACY_METADATA_SUFFIX = ".meta.json"  # what paddle-mnist-hapi 0.1 wrote; still read


def metadata_path(prefix: str) -> Path:
    """The metadata file beside an export: ``prefix_meta.json`` (``prefix_meta.json`` from older releases).

    Examples:
        >>> metadata_path("runs/x/inference/lenet5").name
        'lenet5_meta.json'
    """
    path, legacy = Path(prefix + METADATA_SUFFIX), Path(prefix + LEGACY_METADATA_SUFFIX)
    return legacy if not path.is_file() and legacy.is_file() else path


DEFAULT_TOLERANCE = 1e-5


@dataclass
class ExportReport:
    """What ``export_model`` wrote and measured."""

    prefix: str
    files: list[str]
    max_abs_diff: float
    batch_sizes: list[int]
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_inference_predictor(prefix: str | os.PathLike[str], threads: int = 1) -> Any:
    """A ``paddle.inference`` predictor for files written by ``model.save(prefix, training=False)``.

    Raises:
        ExportError: ``prefix.json`` or ``prefix.pdiparams`` is missing or unreadable.

    Examples:
        >>> load_inference_predictor("/no/such/model")
        Traceback (most recent call last):
        ...
        paddle_mnist_hapi.errors.ExportError: No exported model at /no/such/model: ...
    """
    from paddle import inference

    prefix = str(prefix)
    graph, params = prefix + ".json", prefix + ".pdiparams"
    missing = [p for p in (graph, params) if not os.path.isfile(p)]
    if missing:
        raise ExportError(
            f"No exported model at {prefix}: missing {', '.join(missing)}. Pass the path prefix written by "
            "model.save(PREFIX, training=False) (without .json/.pdiparams), e.g. runs/fit_lenet/inference/lenet5. "
            f"Received: prefix={prefix!r}"
        )
    config = inference.Config(graph, params)
    config.disable_gpu()
    config.disable_glog_info()
    config.set_cpu_math_library_num_threads(threads)
    try:
        return inference.create_predictor(config)
    except Exception as exc:  # Paddle raises RuntimeError/ValueError/OSError variants
        reason = " ".join(str(exc).split()).rstrip(" .")
        raise ExportError(f"paddle.inference cannot load {prefix}: {reason}. Re-export the model.") from exc


def run_predictor(predictor: Any, batch: np.ndarray) -> np.ndarray:
    """Run a ``paddle.inference`` predictor on one float32 batch; return the first output.

    Examples:
        >>> run_predictor  # doctest: +ELLIPSIS
        <function run_predictor at ...>
    """
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(batch.shape))
    handle.copy_from_cpu(np.ascontiguousarray(batch, dtype=np.float32))
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


def _metadata(model: paddle.Model, class_names: Sequence[str]) -> dict[str, Any]:
    from paddle_mnist_hapi import __version__

    spec = model._inputs[0]
    return {
        "format": "paddle.jit.save (PIR .json + .pdiparams)",
        "input": {"name": spec.name, "shape": list(spec.shape), "dtype": str(spec.dtype).replace("paddle.", "")},
        "output": "logits, one row per image; softmax gives class probabilities",
        "preprocessing": {
            "grayscale": True,
            "size": [28, 28],
            "foreground": "light digit on dark background (as MNIST); invert dark-on-light images",
            "fit": "crop to the digit, scale its longest side to 20 px (aspect kept), centre of mass at (14, 14)",
            "reference": "paddle_mnist_hapi.deploy.preprocess.preprocess",
            "normalize": "(pixel - mean) / std on 0..255 pixels",
            "mean": MEAN,
            "std": STD,
        },
        "class_names": list(class_names),
        "versions": {
            "paddle_mnist_hapi": __version__,
            "paddle": paddle.__version__,
            "python": platform.python_version(),
        },
    }


@contextlib.contextmanager
def _no_display_value_in_builtins() -> Iterator[None]:
    """Hide the REPL's last result, ``builtins._``, while ``paddle.jit.save`` runs.

    The Python REPL (and doctest) store the last result in ``builtins._``. Paddle
    3.3.1's dy2static tests ``func in builtins.__dict__.values()``, which raises
    "The truth value of an array ... is ambiguous" when that value is a numpy
    value (e.g. after evaluating ``images.max()``) or a tensor.
    """
    if "_" not in builtins.__dict__:
        yield
        return
    value = builtins.__dict__.pop("_")
    try:
        yield
    finally:
        builtins._ = value


def export_model(
    model: paddle.Model,
    prefix: str | os.PathLike[str],
    *,
    sample: np.ndarray | None = None,
    batch_sizes: Sequence[int] = (1, 16),
    tolerance: float = DEFAULT_TOLERANCE,
    class_names: Sequence[str] | None = None,
    calibration: dict[str, Any] | None = None,
) -> ExportReport:
    """Save ``model`` for inference, reload it with ``paddle.inference`` and verify it.

    Args:
        model (paddle.Model): built with explicit ``inputs`` (see :func:`paddle_mnist_hapi.specs_for`).
        prefix (str): path prefix; writes ``prefix.json``, ``prefix.pdiparams``, ``prefix_meta.json``.
        sample (np.ndarray, optional): float32 inputs to compare on; random when None. Default: None.
        batch_sizes (Sequence[int], optional): batch sizes the check runs at. Default: (1, 16).
        tolerance (float, optional): largest allowed absolute difference. Default: 1e-5.
        class_names (Sequence[str], optional): written to the metadata. Default: ``'0'``..``'9'``.
        calibration (dict, optional): written to the metadata as ``"calibration"`` (a temperature, see
            :mod:`paddle_mnist_hapi.deploy.calibrate`). Default: None.

    Raises:
        ExportError: the model has no input spec, a spec the network cannot take, or the reloaded
            model disagrees.

    Examples:
        >>> import tempfile, paddle
        >>> from paddle_mnist_hapi import create_model
        >>> flat = paddle.static.InputSpec([None, 784], "float32", "image")
        >>> export_model(paddle.Model(create_model("lenet5"), flat), tempfile.mkdtemp() + "/m")
        Traceback (most recent call last):
        ...
        paddle_mnist_hapi.errors.ExportError: Cannot export: The model's InputSpec 'image' [None, 784] does not fit ...
    """
    # Without ``inputs`` hapi makes up a spec from forward()'s signature, shape (-1,).
    if not model._inputs or any(len(spec.shape or ()) < 2 for spec in model._inputs):
        raise ExportError(
            "The paddle.Model has no input spec, so the export would bake in a batch shape. Build it as "
            "paddle.Model(net, *specs_for(name)). Received: inputs=None"
        )
    from paddle_mnist_hapi._private.preflight import SPEC_FIX, spec_mismatch

    problem = spec_mismatch(model)
    if problem is not None:
        raise ExportError(f"Cannot export: {problem}. {SPEC_FIX}")
    prefix = str(prefix)
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    network = model.network
    was_training = network.training
    with _no_display_value_in_builtins():
        model.save(prefix, training=False)
    network.eval()
    shape = [d if d and d > 0 else 1 for d in model._inputs[0].shape[1:]]
    if sample is None:
        sample = np.random.default_rng(0).uniform(-1, 1, size=[max(batch_sizes), *shape]).astype(np.float32)
    sample = np.asarray(sample, dtype=np.float32).reshape(-1, *shape)
    predictor = load_inference_predictor(prefix)
    worst = 0.0
    try:
        with paddle.no_grad():
            for size in batch_sizes:
                batch = sample[:size]
                expected = network(paddle.to_tensor(batch)).numpy()
                got = run_predictor(predictor, batch)
                if got.shape != expected.shape:
                    raise ExportError(f"Exported model returned shape {got.shape}, expected {expected.shape}.")
                worst = max(worst, float(np.abs(got - expected).max()))
    finally:
        if was_training:
            network.train()
    if worst > tolerance:
        raise ExportError(
            f"The exported model at {prefix} disagrees with the trained model: max abs diff {worst:.3g} > "
            f"tolerance {tolerance:.3g}. Check for layers that behave differently in eval mode."
        )
    num_classes = int(expected.shape[-1])
    metadata = _metadata(model, class_names or [str(i) for i in range(num_classes)])
    metadata["verified"] = {"max_abs_diff": worst, "batch_sizes": list(batch_sizes), "tolerance": tolerance}
    if calibration:
        metadata["calibration"] = dict(calibration)
    meta_path = prefix + METADATA_SUFFIX
    Path(meta_path).write_text(json.dumps(metadata, indent=2) + "\n")
    Path(prefix + LEGACY_METADATA_SUFFIX).unlink(missing_ok=True)  # an older export's, which jit.load would trip on
    files = [prefix + ".json", prefix + ".pdiparams", meta_path]
    return ExportReport(prefix, files, worst, list(batch_sizes), metadata)
