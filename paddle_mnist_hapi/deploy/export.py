"""Export a trained ``paddle.Model`` for deployment, and prove the export works.

``export_model`` calls ``model.save(prefix, training=False)`` (Paddle 3 writes
``prefix.json`` + ``prefix.pdiparams``) under a temporary prefix beside the
target, reloads the files with the real ``paddle.inference`` predictor, checks
every output against the trained model at batch size 1 and N (as
``numpy.allclose``), writes ``prefix_meta.json`` with what a consumer needs
(input name, shape, dtype and channels, the preprocessing a picture needs,
class names, versions, the verification), and only then moves the files into
place: a failed export leaves an earlier one at ``prefix`` as it was.

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
import shutil
import tempfile
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


DEFAULT_TOLERANCE = 1e-5  # the ONNX check's absolute tolerance
#: ``export_model``'s relative tolerance (``rtol`` of ``numpy.allclose``).
DEFAULT_RTOL = 1e-5
#: ``export_model``'s default absolute tolerance, per output: this times ``max(1, largest |trained value|)``.
DEFAULT_ATOL = 1e-5


@dataclass
class ExportReport:
    """What ``export_model`` wrote and measured."""

    prefix: str
    files: list[str]
    max_abs_diff: float
    batch_sizes: list[int]
    metadata: dict[str, Any] = field(default_factory=dict)
    max_rel_diff: float = 0.0

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


def run_predictor_outputs(predictor: Any, batch: np.ndarray) -> list[np.ndarray]:
    """Like :func:`run_predictor`, but every output of the model, in order."""
    run_predictor(predictor, batch)
    return [predictor.get_output_handle(name).copy_to_cpu() for name in predictor.get_output_names()]


def _metadata(
    model: paddle.Model, class_names: Sequence[str], preprocessing: dict[str, Any] | None = None
) -> dict[str, Any]:
    from paddle_mnist_hapi import __version__
    from paddle_mnist_hapi.deploy.image_input import MNIST_DIGITS, input_channels

    spec = model._inputs[0]
    channels = input_channels(list(spec.shape)[1:], preprocessing)
    return {
        "format": "paddle.jit.save (PIR .json + .pdiparams)",
        "input": {
            "name": spec.name,
            "shape": list(spec.shape),
            "dtype": str(spec.dtype).replace("paddle.", ""),
            "channels": channels,
        },
        "output": "logits, one row per image; softmax gives class probabilities",
        "preprocessing": preprocessing
        or {
            "kind": MNIST_DIGITS,
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
    atol: float | None = None,
    rtol: float = DEFAULT_RTOL,
    class_names: Sequence[str] | None = None,
    preprocessing: Any = None,
) -> ExportReport:
    """Save ``model`` for inference, reload it with ``paddle.inference`` and verify it; then move it into place.

    Each output of the export must agree with the trained network (eval mode) as
    ``numpy.allclose(exported, trained, rtol=rtol, atol=atol)`` does:
    ``|exported - trained| <= atol + rtol * |trained|`` for every value. Float32 rounding
    grows with the size of the values a layer sums, not with each output value, so the
    default ``atol`` is ``1e-5 * max(1, largest |trained value| of that output)``: a model
    whose logits reach 1e5 is held to 1.0 in absolute terms, LeNet's (about 20) to 2e-4.

    The files are written under a temporary prefix beside ``prefix`` and moved into place
    only once verified: when anything fails, an earlier export at ``prefix`` is left as it
    was and no partial file remains.

    Args:
        model (paddle.Model): built with explicit ``inputs``: ``paddle.Model(net, InputSpec([None, 3, 32, 32],
            'float32', 'image'))``, or :func:`paddle_mnist_hapi.specs_for` for the zoo.
        prefix (str): path prefix; writes ``prefix.json``, ``prefix.pdiparams``, ``prefix_meta.json``.
        sample (np.ndarray, optional): inputs to compare on (at least ``max(batch_sizes)``, reshaped to
            the ``InputSpec``); random uniform in [-1, 1) when None. Default: None.
        batch_sizes (Sequence[int], optional): batch sizes the check runs at. Default: (1, 16).
        atol (float, optional): absolute tolerance; None scales it with each output (above). Default: None.
        rtol (float, optional): relative tolerance. Default: 1e-5.
        class_names (Sequence[str], optional): one per output class, in order. Default: ``'0'`` ..
            ``'N-1'`` from the size of the model's output.
        preprocessing (optional): what a picture needs to become the input, recorded in the metadata and
            followed by ``Predictor``, the CLI and ``serve``: an
            :class:`~paddle_mnist_hapi.deploy.image_input.ImageInput` (resize, channel order, mean/std),
            or a dict of its fields; ``'mnist_digits'`` (the MNIST digit pipeline, for a 28x28 grayscale
            input); ``'none'`` (arrays only). Default: None, ``'mnist_digits'`` for ``[1, 28, 28]`` and
            ``[784]`` inputs, ``'none'`` for any other.

    Raises:
        ExportError: the model has no input spec, a spec the network cannot take, class names that do
            not match its output, a preprocessing its input cannot take, or the reloaded model disagrees.

    Examples:
        >>> import tempfile, paddle
        >>> from paddle_mnist_hapi import create_model
        >>> flat = paddle.static.InputSpec([None, 784], "float32", "image")
        >>> export_model(paddle.Model(create_model("lenet5"), flat), tempfile.mkdtemp() + "/m")
        Traceback (most recent call last):
        ...
        paddle_mnist_hapi.errors.ExportError: Cannot export: The model's InputSpec 'image' [None, 784] does not fit ...
    """
    from paddle_mnist_hapi.deploy.image_input import resolve_preprocessing

    # Without ``inputs`` hapi makes up a spec from forward()'s signature, shape (-1,).
    if not model._inputs or any(len(spec.shape or ()) < 2 for spec in model._inputs):
        raise ExportError(
            "The paddle.Model has no input spec, so the export would bake in a batch shape. Build it as "
            "paddle.Model(net, InputSpec([None, C, H, W], 'float32', 'image')), or paddle.Model(net, "
            "*specs_for(name)) for the zoo. Received: inputs=None"
        )
    from paddle_mnist_hapi._private.preflight import spec_fix, spec_mismatch

    shape = [d if d and d > 0 else 1 for d in model._inputs[0].shape[1:]]
    if sample is not None:
        sample = np.asarray(sample, dtype=np.float32)
    problem = spec_mismatch(model)
    if problem is not None:
        raise ExportError(f"Cannot export: {problem}. {spec_fix(sample[0] if sample is not None else None)}")
    if (atol is not None and not atol >= 0) or not rtol >= 0:
        raise ExportError(f"atol and rtol must be >= 0. Received: atol={atol!r}, rtol={rtol!r}")
    described = resolve_preprocessing(preprocessing, list(model._inputs[0].shape)[1:])
    prefix = str(prefix)
    final = Path(prefix)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.export-", dir=final.parent))
    try:
        staged = str(staging / final.name)
        with _no_display_value_in_builtins():
            model.save(staged, training=False)
        if sample is None:
            sample = np.random.default_rng(0).uniform(-1, 1, size=[max(batch_sizes), *shape]).astype(np.float32)
            sample_note = f"random uniform in [-1, 1), seed 0, {len(sample)} inputs"
        else:
            sample = sample.reshape(-1, *shape)
            sample_note = f"given, {len(sample)} inputs"
        verified = _verify(model.network, load_inference_predictor(staged), sample, batch_sizes, atol, rtol, prefix)
        outputs = verified.pop("output_shapes")
        num_classes = int(outputs[0][0]) if len(outputs[0]) == 1 else None  # [N, classes]
        names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes or 0)]
        if class_names is not None and num_classes is not None and len(names) != num_classes:
            raise ExportError(
                f"{len(names)} class names were given, but the model's output has {num_classes} classes "
                f"(shape {outputs[0]}). Give one name per output class, in order. Received: class_names={names!r}"
            )
        metadata = _metadata(model, names, described)
        metadata["verified"] = {**verified, "sample": sample_note}
        Path(staged + METADATA_SUFFIX).write_text(json.dumps(metadata, indent=2) + "\n")
        # verified: move into place (each file by an atomic rename; the metadata last)
        written = sorted(staging.iterdir(), key=lambda p: p.name.endswith(METADATA_SUFFIX))
        for path in written:
            os.replace(path, final.parent / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    Path(prefix + LEGACY_METADATA_SUFFIX).unlink(missing_ok=True)  # an older export's, which jit.load would trip on
    files = [prefix + ".json", prefix + ".pdiparams", prefix + METADATA_SUFFIX]
    return ExportReport(prefix, files, verified["max_abs_diff"], list(batch_sizes), metadata, verified["max_rel_diff"])


def _outputs(value: Any) -> list[np.ndarray]:
    """A network's output(s) as a flat list of arrays, in order (as ``paddle.jit.save`` numbers them)."""
    if isinstance(value, (list, tuple)):
        return [array for item in value for array in _outputs(item)]
    if isinstance(value, dict):
        return [array for item in value.values() for array in _outputs(item)]
    return [value.numpy() if hasattr(value, "numpy") else np.asarray(value)]


def _verify(
    network: paddle.nn.Layer,
    predictor: Any,
    sample: np.ndarray,
    batch_sizes: Sequence[int],
    atol: float | None,
    rtol: float,
    prefix: str,
) -> dict[str, Any]:
    """Compare every output of the export with the network's at each batch size; raise on the first
    value outside ``atol + rtol * |trained|``. Returns the measured differences and tolerances."""
    if len(sample) < max(batch_sizes):
        raise ExportError(
            f"sample has {len(sample)} inputs, fewer than the largest batch size {max(batch_sizes)}. "
            f"Give more inputs or smaller batch_sizes. Received: batch_sizes={list(batch_sizes)}"
        )
    was_training = network.training
    network.eval()
    try:
        with paddle.no_grad():
            expected = {size: _outputs(network(paddle.to_tensor(sample[:size]))) for size in batch_sizes}
    finally:
        if was_training:
            network.train()
    largest = expected[max(batch_sizes)]
    scales = [max(float(np.abs(out).max(initial=0.0)), 1.0) for out in largest]
    atols = [DEFAULT_ATOL * scale if atol is None else float(atol) for scale in scales]
    worst_abs, worst_rel = 0.0, 0.0
    for size in batch_sizes:
        got = run_predictor_outputs(predictor, sample[:size])
        if len(got) != len(expected[size]):
            raise ExportError(
                f"The exported model at {prefix} returns {len(got)} outputs, the trained network "
                f"{len(expected[size])}. Re-export; a forward that returns different things when traced by "
                "paddle.jit.save cannot be exported as it is."
            )
        for index, (out, ref) in enumerate(zip(got, expected[size], strict=True)):
            if out.shape != ref.shape:
                raise ExportError(
                    f"Output {index} of the exported model at {prefix} has shape {list(out.shape)}, the trained "
                    f"network's {list(ref.shape)} (batch size {size})."
                )
            diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
            allowed = atols[index] + rtol * np.abs(ref.astype(np.float64))
            abs_diff = float(diff.max(initial=0.0))
            rel_diff = abs_diff / scales[index]
            worst_abs, worst_rel = max(worst_abs, abs_diff), max(worst_rel, rel_diff)
            if not (diff <= allowed).all():
                raise ExportError(_disagreement(prefix, index, len(got), size, out, ref, diff, allowed, scales[index],
                                                atols[index], rtol))  # fmt: skip
    return {
        "max_abs_diff": worst_abs,
        "max_rel_diff": worst_rel,
        "batch_sizes": list(batch_sizes),
        "tolerance": {
            "rule": "numpy.allclose: |exported - trained| <= atol + rtol * |trained|, every value of every output",
            "rtol": rtol,
            "atol": max(atols),
            "atol_given": atol,
        },
        "output_shapes": [list(out.shape[1:]) if out.ndim else [] for out in largest],
    }


def _disagreement(
    prefix: str,
    index: int,
    count: int,
    size: int,
    out: np.ndarray,
    ref: np.ndarray,
    diff: np.ndarray,
    allowed: np.ndarray,
    scale: float,
    atol: float,
    rtol: float,
) -> str:
    """The message for an output outside its tolerance: where, how far (abs and rel), what to try."""
    where = np.unravel_index(int(np.argmax(diff - allowed)), diff.shape)
    abs_diff = float(diff.max())
    rel_diff = abs_diff / scale
    at = "[" + ", ".join(str(int(i)) for i in where) + "]"
    hint = (
        "This is float32 rounding in a model with large values: raise the tolerance, e.g. "
        f"export_model(..., rtol={max(10 * rtol, 1e-4):g}) or atol={abs_diff * 2:.2g}."
        if rel_diff < 1e-4
        else "The traced program computes something else than forward() in eval mode: look in forward() for "
        "Python branches on tensor values or on paddle.in_dynamic_mode(), numpy or Python math on tensors, or "
        "randomness; make them paddle operations (see paddle.jit.to_static's limits)."
    )
    return (
        f"The exported model disagrees with the trained model on output {index} (of {count}, shape "
        f"{list(out.shape)}) at batch size {size}: value {at} is {float(out[where]):.7g}, trained "
        f"{float(ref[where]):.7g}; allowed |diff| <= atol + rtol * |trained| = {atol:.3g} + {rtol:.3g} * "
        f"{abs(float(ref[where])):.4g}. Over the output: max abs diff {abs_diff:.3g}, max rel diff {rel_diff:.3g} "
        f"(relative to its largest |value|, {scale:.4g}). {hint} Nothing was written at {prefix}: an earlier "
        "export there is unchanged."
    )
