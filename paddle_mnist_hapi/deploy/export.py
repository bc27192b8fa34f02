"""Export a trained ``paddle.Model`` for deployment, and prove the export works.

``export_model`` calls ``model.save(prefix, training=False)`` (Paddle 3 writes
``prefix.json`` + ``prefix.pdiparams``) under a temporary prefix beside the
target, reloads the files with the real ``paddle.inference`` predictor, checks
every output against the trained model at batch size 1 and N (as
``numpy.allclose``), writes ``prefix_meta.json`` with what a consumer needs
(input name, shape, dtype and channels, the preprocessing a picture needs,
class names, versions, the verification, the size and sha256 of both model
files), and only then moves the files into place, the metadata first: a failed
export leaves an earlier one at ``prefix`` as it was. Three renames are not one,
so every loader here (:func:`load_export`, and through it ``Predictor``, the
CLI, ``serve`` and the ONNX export) checks the files against the recorded
sha256 and refuses an export that a kill or a concurrent writer left mixed.

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
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paddle

from paddle_mnist_hapi.data.dataset import MEAN, STD
from paddle_mnist_hapi.errors import ExportError

__all__ = [
    "METADATA_SUFFIX",
    "Comparison",
    "ExportReport",
    "check_tolerances",
    "compare_outputs",
    "export_model",
    "load_export",
    "load_inference_predictor",
    "metadata_path",
    "read_metadata",
    "run_predictor",
    "verified_copy",
]

log = logging.getLogger(__name__)

# Not ``prefix.<name>.json``: paddle.jit.load reads every such file beside the model as another program.
METADATA_SUFFIX = "_meta.json"
LEGACY_METADATA_SUFFIX = ".meta.json"  # what paddle-mnist-hapi 0.1 wrote; still read
#: The files ``paddle.inference`` loads, ``prefix + suffix``; the metadata records the size and sha256 of each.
MODEL_SUFFIXES = (".json", ".pdiparams")
# test hook: "N:SECONDS" waits SECONDS after the N-th of the renames that move an export into place (kills mid-move)
_PAUSE_MOVE_ENV = "PADDLE_MNIST_HAPI_PAUSE_EXPORT_MOVE"


def metadata_path(prefix: str) -> Path:
    """The metadata file beside an export: ``prefix_meta.json`` (``prefix_meta.json`` from older releases).

    Examples:
        >>> metadata_path("runs/x/inference/lenet5").name
        'lenet5_meta.json'
    """
    path, legacy = Path(prefix + METADATA_SUFFIX), Path(prefix + LEGACY_METADATA_SUFFIX)
    return legacy if not path.is_file() and legacy.is_file() else path


#: The relative tolerance (``rtol`` of ``numpy.allclose``) of ``export_model`` and ``export_onnx``.
DEFAULT_RTOL = 1e-5
#: Their default absolute tolerance, per output: this times ``max(1, largest |reference value|)``.
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


def read_metadata(prefix: str | os.PathLike[str]) -> dict[str, Any]:
    """The export's ``prefix_meta.json`` as a dict; ``{}`` when there is none (a bare ``model.save``).

    Raises:
        ExportError: the file is not a JSON object.

    Examples:
        >>> read_metadata("/no/such/model")
        {}
    """
    path = metadata_path(str(prefix))
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        metadata = json.loads(text)
    except ValueError as exc:
        raise ExportError(
            f"{path} is not valid JSON ({exc}). Re-export the model, or delete the file to use the "
            f"MNIST defaults. Received: metadata={str(path)!r}"
        ) from exc
    if not isinstance(metadata, dict):
        raise ExportError(f"{path} must hold a JSON object. Received: {type(metadata).__name__}")
    return metadata


def _file_record(data: bytes) -> dict[str, Any]:
    """What the metadata records of a model file: its size and sha256."""
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _check_files(prefix: str, metadata: dict[str, Any], blobs: dict[str, bytes]) -> None:
    """Raise unless every model file is the one the metadata records (size and sha256)."""
    if not metadata:
        return  # a bare model.save(prefix, training=False): no metadata, nothing to check against
    recorded = metadata.get("files")
    if not isinstance(recorded, dict):
        log.warning(
            "%s records no sha256 of the model files (written by an earlier release), so an export to %s "
            "that was interrupted cannot be told from a complete one. Export the model again to add them.",
            metadata_path(prefix).name,
            prefix,
        )
        return
    for suffix, data in blobs.items():
        found, expected = _file_record(data), recorded.get(suffix)
        if not isinstance(expected, dict) or found != {k: expected.get(k) for k in found}:
            expected = expected if isinstance(expected, dict) else {}
            raise ExportError(
                f"The export at {prefix} is incomplete or mixed: {Path(prefix).name}{suffix} ({found['size']} "
                f"bytes, sha256 {found['sha256'][:12]}...) is not the file its {metadata_path(prefix).name} "
                f"records ({expected.get('size')} bytes, sha256 {str(expected.get('sha256'))[:12]}...). An export "
                "to this prefix was interrupted while moving its files into place, or a file was replaced "
                "(e.g. by model.save). It is not used: export the model again (export_model(model, prefix) or "
                f"paddle-mnist export). Received: prefix={prefix!r}"
            )


@contextlib.contextmanager
def verified_copy(prefix: str | os.PathLike[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(copy, metadata)``: the export's model files, checked, in a private directory; removed on exit.

    The model files are read once and checked against the size and sha256 its metadata records;
    the copy holds those same bytes, so what is loaded from it is what was checked, whatever
    happens at ``prefix`` meanwhile. The files are read before the metadata, the reverse of the
    order ``export_model`` moves them in: a metadata read last is either older than every file
    read (an earlier export, consistent) or carries the sha256 that decide. An export whose
    metadata records no sha256 (from an earlier release) is used with a warning; one without
    metadata (a bare ``model.save``) as it is.

    Raises:
        ExportError: a model file is missing, or not the one the metadata records.

    Examples:
        >>> import tempfile, paddle
        >>> from paddle_mnist_hapi import create_model, specs_for
        >>> prefix = tempfile.mkdtemp() + "/lenet5"
        >>> _ = export_model(paddle.Model(create_model("lenet5"), *specs_for("lenet5")), prefix)
        >>> with verified_copy(prefix) as (copy, metadata):
        ...     os.path.isfile(copy + ".pdiparams"), sorted(metadata["files"])
        (True, ['.json', '.pdiparams'])
    """
    prefix = str(prefix)
    missing = [prefix + s for s in MODEL_SUFFIXES if not os.path.isfile(prefix + s)]
    if missing:
        raise ExportError(
            f"No exported model at {prefix}: missing {', '.join(missing)}. Pass the path prefix written by "
            "model.save(PREFIX, training=False) (without .json/.pdiparams), e.g. runs/fit_lenet/inference/lenet5. "
            f"Received: prefix={prefix!r}"
        )
    try:
        blobs = {suffix: Path(prefix + suffix).read_bytes() for suffix in reversed(MODEL_SUFFIXES)}
    except OSError as exc:
        raise ExportError(f"Cannot read the export at {prefix}: {exc}. Received: prefix={prefix!r}") from exc
    metadata = read_metadata(prefix)  # after the files: see above
    _check_files(prefix, metadata, blobs)
    with tempfile.TemporaryDirectory(prefix="paddle_mnist_hapi_export_") as tmp:
        copy = os.path.join(tmp, Path(prefix).name)
        for suffix, data in blobs.items():
            Path(copy + suffix).write_bytes(data)
        yield copy, metadata


def load_export(prefix: str | os.PathLike[str], threads: int = 1) -> tuple[Any, dict[str, Any]]:
    """``(predictor, metadata)``: a ``paddle.inference`` predictor for the export at ``prefix`` and its
    metadata (``{}`` when it has none), both from one checked read (:func:`verified_copy`).

    Raises:
        ExportError: a model file is missing, unreadable, or not the one the metadata records
            (an interrupted or mixed export).

    Examples:
        >>> load_export("/no/such/model")
        Traceback (most recent call last):
        ...
        paddle_mnist_hapi.errors.ExportError: No exported model at /no/such/model: ...
    """
    with verified_copy(prefix) as (copy, metadata):
        return _create_predictor(copy, threads, str(prefix)), metadata


def load_inference_predictor(prefix: str | os.PathLike[str], threads: int = 1) -> Any:
    """A ``paddle.inference`` predictor for files written by ``model.save(prefix, training=False)``
    (checked against the metadata's sha256 when ``export_model`` wrote them: :func:`load_export`).

    Raises:
        ExportError: ``prefix.json`` or ``prefix.pdiparams`` is missing, unreadable, or not the one
            the metadata records.

    Examples:
        >>> load_inference_predictor("/no/such/model")
        Traceback (most recent call last):
        ...
        paddle_mnist_hapi.errors.ExportError: No exported model at /no/such/model: ...
    """
    return load_export(prefix, threads)[0]


def _create_predictor(files: str, threads: int, shown: str) -> Any:
    """A CPU ``paddle.inference`` predictor for ``files.json`` + ``files.pdiparams`` (``shown`` in errors)."""
    from paddle import inference

    config = inference.Config(files + ".json", files + ".pdiparams")
    config.disable_gpu()
    config.disable_glog_info()
    config.set_cpu_math_library_num_threads(threads)
    try:
        return inference.create_predictor(config)
    except Exception as exc:  # Paddle raises RuntimeError/ValueError/OSError variants
        reason = " ".join(str(exc).split()).rstrip(" .").replace(files, shown)
        raise ExportError(f"paddle.inference cannot load {shown}: {reason}. Re-export the model.") from exc


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
    calibration: dict[str, Any] | None = None,
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
    was and no partial file remains. The metadata records each model file's size and sha256
    and is moved first; an export killed between the renames is refused by every loader
    (:func:`load_export`) until exported again, never used half old, half new.

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
        calibration (dict, optional): written to the metadata as ``"calibration"`` (a temperature, see
            :mod:`paddle_mnist_hapi.deploy.calibrate`), applied by ``Predictor``. Default: None.

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
    check_tolerances(atol, rtol)
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
        if calibration:
            metadata["calibration"] = dict(calibration)
        metadata["files"] = {suffix: _file_record(Path(staged + suffix).read_bytes()) for suffix in MODEL_SUFFIXES}
        Path(staged + METADATA_SUFFIX).write_text(json.dumps(metadata, indent=2) + "\n")
        # verified: move into place, each file by an atomic rename, the metadata first: from then on it
        # names the new files' sha256, so a mix of new and old files is refused by every loader
        written = sorted(staging.iterdir(), key=lambda p: (not p.name.endswith(METADATA_SUFFIX), p.name))
        for moves, path in enumerate(written, start=1):
            os.replace(path, final.parent / path.name)
            _pause_for_tests(moves, path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    Path(prefix + LEGACY_METADATA_SUFFIX).unlink(missing_ok=True)  # an older export's, which jit.load would trip on
    files = [prefix + ".json", prefix + ".pdiparams", prefix + METADATA_SUFFIX]
    return ExportReport(prefix, files, verified["max_abs_diff"], list(batch_sizes), metadata, verified["max_rel_diff"])


def _pause_for_tests(moves: int, moved: str) -> None:
    """Test hook: with ``PADDLE_MNIST_HAPI_PAUSE_EXPORT_MOVE=N:SECONDS``, after the N-th rename say so and wait."""
    after, _, seconds = os.environ.get(_PAUSE_MOVE_ENV, "").partition(":")
    if after and int(after) == moves:
        print(f"{_PAUSE_MOVE_ENV}: moved {moved} ({moves})", file=sys.stderr, flush=True)
        time.sleep(float(seconds))


def _outputs(value: Any) -> list[np.ndarray]:
    """A network's output(s) as a flat list of arrays, in order (as ``paddle.jit.save`` numbers them)."""
    if isinstance(value, (list, tuple)):
        return [array for item in value for array in _outputs(item)]
    if isinstance(value, dict):
        return [array for item in value.values() for array in _outputs(item)]
    return [value.numpy() if hasattr(value, "numpy") else np.asarray(value)]


@dataclass(frozen=True)
class Comparison:
    """Who :func:`compare_outputs` compares, in the words of its messages and of the recorded rule."""

    candidate: str  # short name of the outputs checked, e.g. "exported"
    reference: str  # short name of the outputs they must match, e.g. "trained"
    subject: str  # "The exported model at PREFIX"
    against: str  # "the trained model"
    call: str  # the function whose tolerance to raise, e.g. "export_model"
    otherwise: str  # what to try when the difference is not float32 rounding
    outcome: str  # what the failure left behind


def _paddle_comparison(prefix: str) -> Comparison:
    return Comparison(
        candidate="exported",
        reference="trained",
        subject="The exported model",
        against="the trained model",
        call="export_model",
        otherwise="The traced program computes something else than forward() in eval mode: look in forward() for "
        "Python branches on tensor values or on paddle.in_dynamic_mode(), numpy or Python math on tensors, or "
        "randomness; make them paddle operations (see paddle.jit.to_static's limits).",
        outcome=f"Nothing was written at {prefix}: an earlier export there is unchanged.",
    )


def check_tolerances(atol: float | None, rtol: float) -> None:
    """Raise ``ExportError`` unless ``atol`` (None: scaled) and ``rtol`` are tolerances :func:`compare_outputs` takes.

    Examples:
        >>> check_tolerances(None, 1e-5)
        >>> check_tolerances(-1.0, 1e-5)
        Traceback (most recent call last):
        ...
        paddle_mnist_hapi.errors.ExportError: atol and rtol must be >= 0. Received: atol=-1.0, rtol=1e-05
    """
    if (atol is not None and not atol >= 0) or not rtol >= 0:
        raise ExportError(f"atol and rtol must be >= 0. Received: atol={atol!r}, rtol={rtol!r}")


def compare_outputs(
    reference: Callable[[np.ndarray], list[np.ndarray]],
    candidate: Callable[[np.ndarray], list[np.ndarray]],
    sample: np.ndarray,
    batch_sizes: Sequence[int],
    atol: float | None,
    rtol: float,
    names: Comparison,
) -> dict[str, Any]:
    """Check every output of ``candidate`` against ``reference`` on ``sample[:size]`` for each batch size,
    as ``numpy.allclose(candidate, reference, rtol=rtol, atol=atol)``: raise ``ExportError`` on the first
    output with a value outside ``atol + rtol * |reference|``. ``atol=None`` scales it per output:
    ``DEFAULT_ATOL * max(1, largest |reference value|)`` at the largest batch size.

    Returns:
        dict: ``max_abs_diff``, ``max_rel_diff`` (relative to each output's largest |value|), ``batch_sizes``,
        ``tolerance`` (``rule``, ``rtol``, ``atol`` (the largest used), ``atol_given``), ``output_shapes``.

    Examples:
        >>> names = _paddle_comparison("m")
        >>> big = lambda batch: [batch.sum(axis=1, keepdims=True) * 1e5]    # values near 1e5
        >>> rounded = lambda batch: [big(batch)[0] + 0.5]                    # off by 5e-6 of them
        >>> compare_outputs(big, rounded, np.ones((4, 3), np.float32), (1, 4), None, 1e-5, names)["max_rel_diff"]
        1.6666666666666667e-06
        >>> compare_outputs(big, rounded, np.ones((4, 3), np.float32), (1, 4), 0.1, 0.0, names)
        Traceback (most recent call last):
        ...
        paddle_mnist_hapi.errors.ExportError: The exported model disagrees with the trained model on output 0 ...
    """
    if len(sample) < max(batch_sizes):
        raise ExportError(
            f"sample has {len(sample)} inputs, fewer than the largest batch size {max(batch_sizes)}. "
            f"Give more inputs or smaller batch_sizes. Received: batch_sizes={list(batch_sizes)}"
        )
    expected = {size: reference(sample[:size]) for size in batch_sizes}
    largest = expected[max(batch_sizes)]
    scales = [max(float(np.abs(out).max(initial=0.0)), 1.0) for out in largest]
    atols = [DEFAULT_ATOL * scale if atol is None else float(atol) for scale in scales]
    worst_abs, worst_rel = 0.0, 0.0
    for size in batch_sizes:
        got = candidate(sample[:size])
        if len(got) != len(expected[size]):
            raise ExportError(
                f"{names.subject} returns {len(got)} outputs, {names.against} {len(expected[size])}. "
                f"{names.otherwise} {names.outcome}"
            )
        for index, (out, ref) in enumerate(zip(got, expected[size], strict=True)):
            if out.shape != ref.shape:
                raise ExportError(
                    f"Output {index} of {names.subject[0].lower()}{names.subject[1:]} has shape {list(out.shape)}, "
                    f"{names.against}'s {list(ref.shape)} (batch size {size}). {names.otherwise} {names.outcome}"
                )
            diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
            allowed = atols[index] + rtol * np.abs(ref.astype(np.float64))
            abs_diff = float(diff.max(initial=0.0))
            rel_diff = abs_diff / scales[index]
            worst_abs, worst_rel = max(worst_abs, abs_diff), max(worst_rel, rel_diff)
            if not (diff <= allowed).all():
                raise ExportError(_disagreement(names, index, len(got), size, out, ref, diff, allowed, scales[index],
                                                atols[index], rtol))  # fmt: skip
    rule = f"|{names.candidate} - {names.reference}| <= atol + rtol * |{names.reference}|"
    return {
        "max_abs_diff": worst_abs,
        "max_rel_diff": worst_rel,
        "batch_sizes": list(batch_sizes),
        "tolerance": {
            "rule": f"numpy.allclose: {rule}, every value of every output",
            "rtol": rtol,
            "atol": max(atols),
            "atol_given": atol,
        },
        "output_shapes": [list(out.shape[1:]) if out.ndim else [] for out in largest],
    }


def _verify(
    network: paddle.nn.Layer,
    predictor: Any,
    sample: np.ndarray,
    batch_sizes: Sequence[int],
    atol: float | None,
    rtol: float,
    prefix: str,
) -> dict[str, Any]:
    """:func:`compare_outputs` of the export's ``paddle.inference`` predictor against the network in eval mode."""

    def trained(batch: np.ndarray) -> list[np.ndarray]:
        with paddle.no_grad():
            return _outputs(network(paddle.to_tensor(batch)))

    was_training = network.training
    network.eval()
    try:
        return compare_outputs(trained, lambda batch: run_predictor_outputs(predictor, batch), sample, batch_sizes,
                               atol, rtol, _paddle_comparison(prefix))  # fmt: skip
    finally:
        if was_training:
            network.train()


def _disagreement(
    names: Comparison,
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
        f"{names.call}(..., rtol={max(10 * rtol, 1e-4):g}) or atol={abs_diff * 2:.2g}."
        if rel_diff < 1e-4
        else names.otherwise
    )
    return (
        f"{names.subject} disagrees with {names.against} on output {index} (of {count}, shape "
        f"{list(out.shape)}) at batch size {size}: value {at} is {float(out[where]):.7g}, {names.reference} "
        f"{float(ref[where]):.7g}; allowed |diff| <= atol + rtol * |{names.reference}| = {atol:.3g} + {rtol:.3g} * "
        f"{abs(float(ref[where])):.4g}. Over the output: max abs diff {abs_diff:.3g}, max rel diff {rel_diff:.3g} "
        f"(relative to its largest |value|, {scale:.4g}). {hint} {names.outcome}"
    )
