"""Optional ONNX export of a verified Paddle export, checked with onnxruntime.

Needs the ``onnx`` extra (``pip install 'paddle-mnist-hapi[onnx]'``:
paddle2onnx 2.1.0 and onnxruntime 1.31.1). :func:`export_onnx` converts
``prefix.json`` + ``prefix.pdiparams`` with paddle2onnx in a child process
(it prints, exits and even aborts on failures; its graph optimizer is switched
off: it would try to ``pip install`` packages at run time), runs
the result with onnxruntime and compares every output with ``paddle.inference`` on the
same inputs at batch size 1 and N, by the rule ``export_model`` uses (``numpy.allclose``,
``atol`` scaled with the outputs unless given: :func:`~paddle_mnist_hapi.deploy.export.compare_outputs`),
then records the outcome in ``prefix_meta.json``. The Paddle export is read once and
checked against the sha256 its metadata records
(:func:`~paddle_mnist_hapi.deploy.export.verified_copy`); both the reference predictor
and the conversion use that checked copy.

Examples:
    >>> import tempfile, paddle
    >>> from paddle_mnist_hapi import create_model, specs_for
    >>> from paddle_mnist_hapi.deploy.export import export_model
    >>> prefix = tempfile.mkdtemp() + "/lenet5"
    >>> _ = export_model(paddle.Model(create_model("lenet5"), *specs_for("lenet5")), prefix)
    >>> if onnx_available():
    ...     report = export_onnx(prefix)
    ...     assert report.max_rel_diff < 1e-5 and report.path.endswith(".onnx")
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from paddle_mnist_hapi.deploy.export import (
    DEFAULT_RTOL,
    Comparison,
    _create_predictor,
    check_tolerances,
    compare_outputs,
    metadata_path,
    read_metadata,
    run_predictor_outputs,
    verified_copy,
)
from paddle_mnist_hapi.errors import ExportError

__all__ = ["DEFAULT_OPSET", "OnnxExportReport", "export_onnx", "load_onnx_session", "onnx_available", "run_onnx"]

log = logging.getLogger(__name__)

#: The opset written by default (paddle2onnx 2.1.0 + onnxruntime 1.31.1: 7..21 convert and match).
DEFAULT_OPSET = 13
_INSTALL_HINT = "Install the onnx extra: pip install 'paddle-mnist-hapi[onnx]' (paddle2onnx, onnxruntime)"


def onnx_available() -> bool:
    """True when both paddle2onnx and onnxruntime can be imported.

    Examples:
        >>> isinstance(onnx_available(), bool)
        True
    """
    return all(importlib.util.find_spec(name) is not None for name in ("paddle2onnx", "onnxruntime"))


@dataclass
class OnnxExportReport:
    """What :func:`export_onnx` wrote and measured.

    Examples:
        >>> OnnxExportReport("m.onnx", 13, 3e-06, [1, 16], {"onnxruntime": "1.31.1"}).to_dict()["opset_version"]
        13
    """

    path: str
    opset_version: int
    max_abs_diff: float
    batch_sizes: list[int]
    versions: dict[str, str]
    max_rel_diff: float = 0.0
    tolerance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


#: The opsets paddle2onnx 2.1.0 can write; outside them it aborts the process (SIGABRT).
OPSET_RANGE = (7, 21)

# Runs in a child process: paddle2onnx prints to the C-level stdout, calls sys.exit(-1) on some
# failures and abort()s on others, none of which a library may do to its caller.
_CONVERT = """
import sys, paddle2onnx
graph, params, out, opset = sys.argv[1:5]
model = paddle2onnx.export(graph, params, save_file=None, opset_version=int(opset), auto_upgrade_opset=True,
                           enable_onnx_checker=True, optimize_tool="None")
if not model:
    sys.exit(3)
with open(out, "wb") as fh:
    fh.write(model)
"""


def _last_error(output: str) -> str:
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in output.splitlines()]
    lines = [line for line in lines if line and "ccache" not in line and not line.startswith("warnings.warn")]
    for line in lines:
        if "[ERROR]" in line or "Failed to convert" in line or "Please set" in line:
            return line.split("\t")[-1].strip(" .")
    return lines[-1].strip(" .") if lines else "no message"


def _convert(prefix: str, opset_version: int, shown: str | None = None) -> tuple[bytes, int]:
    """``(onnx bytes, opset written)``; paddle2onnx runs in a child process (``shown``: the prefix in errors)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "model.onnx")
        command = [sys.executable, "-c", _CONVERT, prefix + ".json", prefix + ".pdiparams", out, str(opset_version)]
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        output = proc.stdout + proc.stderr
        for line in output.splitlines():
            log.debug("paddle2onnx: %s", line)
        if proc.returncode != 0 or not os.path.isfile(out):
            how = f"exit code {proc.returncode}" if proc.returncode >= 0 else f"killed by signal {-proc.returncode}"
            raise ExportError(
                f"paddle2onnx could not convert {shown or prefix} to ONNX opset {opset_version} ({how}): "
                f"{_last_error(output)}. Try another --opset ({OPSET_RANGE[0]}..{OPSET_RANGE[1]}), or deploy "
                "the Paddle export with paddle.inference."
            )
        model = Path(out).read_bytes()
    import onnx

    written = max(
        (o.version for o in onnx.load_from_string(model).opset_import if o.domain in ("", "ai.onnx")), default=0
    )
    return model, int(written)


def load_onnx_session(path: str | os.PathLike[str] | bytes, threads: int = 1) -> Any:
    """An onnxruntime CPU ``InferenceSession`` for an ``.onnx`` file (or its bytes).

    Raises:
        ExportError: onnxruntime is not installed, or the file is missing or invalid.

    Examples:
        >>> load_onnx_session("/no/such/model.onnx")
        Traceback (most recent call last):
        ...
        paddle_mnist_hapi.errors.ExportError: ...
    """
    try:
        import onnxruntime
    except ImportError as exc:
        raise ExportError(f"onnxruntime is not installed. {_INSTALL_HINT}.") from exc
    if not isinstance(path, bytes) and not os.path.isfile(path):
        raise ExportError(f"No ONNX model at {os.fspath(path)}. Export one with `paddle-mnist export PREFIX --onnx`.")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # paddle2onnx leaves unused initializers: onnxruntime warns about each
    try:
        source = path if isinstance(path, bytes) else os.fspath(path)
        return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception classes
        raise ExportError(f"onnxruntime cannot load the ONNX model: {exc}. Re-export it.") from exc


def run_onnx(session: Any, batch: np.ndarray) -> np.ndarray:
    """Run an onnxruntime session on one float32 batch; return the first output.

    Examples:
        >>> if onnx_available():
        ...     import tempfile, paddle
        ...     from paddle_mnist_hapi import create_model, specs_for
        ...     from paddle_mnist_hapi.deploy.export import export_model
        ...     prefix = tempfile.mkdtemp() + "/linear"
        ...     _ = export_model(paddle.Model(create_model("linear"), *specs_for("linear")), prefix)
        ...     session = load_onnx_session(export_onnx(prefix).path)
        ...     assert run_onnx(session, np.zeros((5, 784), np.float32)).shape == (5, 10)  # a flat-input model
    """
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def export_onnx(
    prefix: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    opset_version: int = DEFAULT_OPSET,
    sample: np.ndarray | None = None,
    batch_sizes: Sequence[int] = (1, 16),
    atol: float | None = None,
    rtol: float = DEFAULT_RTOL,
) -> OnnxExportReport:
    """Convert a Paddle export to ONNX and verify it against ``paddle.inference``.

    Every output of the ONNX model must agree with ``paddle.inference``'s as ``numpy.allclose(onnx, paddle,
    rtol=rtol, atol=atol)`` does, the rule of ``export_model``: ``atol``, unless given, is ``1e-5 * max(1,
    largest |value| of that output)``, so a model whose logits reach 1e5 is not refused for float32 rounding.

    Args:
        prefix (str|PathLike): the prefix of ``prefix.json`` + ``prefix.pdiparams``.
        output (str|PathLike, optional): the ``.onnx`` file. Default: ``prefix + '.onnx'``.
        opset_version (int, optional): the ONNX opset. Default: 13.
        sample (np.ndarray, optional): float32 model inputs to compare on; random when None. Default: None.
        batch_sizes (Sequence[int], optional): batch sizes the check runs at. Default: (1, 16).
        atol (float, optional): absolute tolerance; None scales it with each output (above). Default: None.
        rtol (float, optional): relative tolerance. Default: 1e-5.

    Raises:
        ExportError: the extra is missing, the export is missing or mixed, the conversion fails, or ONNX
            disagrees with Paddle.
    """
    try:
        import paddle2onnx
    except ImportError as exc:  # the onnx extra is optional
        raise ExportError(f"paddle2onnx is not installed, so ONNX export is unavailable. {_INSTALL_HINT}.") from exc
    prefix = os.fspath(prefix)
    output = os.fspath(output) if output is not None else prefix + ".onnx"
    check_tolerances(atol, rtol)
    if not OPSET_RANGE[0] <= opset_version <= OPSET_RANGE[1]:
        raise ExportError(
            f"paddle2onnx {paddle2onnx.__version__} writes ONNX opsets {OPSET_RANGE[0]}..{OPSET_RANGE[1]} (outside "
            f"them it aborts). Pass an opset in that range. Received: opset_version={opset_version!r}"
        )
    with verified_copy(prefix) as (copy, metadata):  # raises ExportError when the files are missing or mixed
        reference = _create_predictor(copy, 1, prefix)
        model_bytes, written_opset = _convert(copy, opset_version, shown=prefix)
    session = load_onnx_session(model_bytes)
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in session.get_inputs()[0].shape[1:]]
    if sample is None:
        sample = np.random.default_rng(0).uniform(-1, 1, size=[max(batch_sizes), *shape]).astype(np.float32)
    sample = np.asarray(sample, dtype=np.float32).reshape(-1, *shape)
    name = session.get_inputs()[0].name
    names = Comparison(
        candidate="onnx",
        reference="paddle.inference",
        subject="The ONNX model",
        against="paddle.inference",
        call="export_onnx",
        otherwise=f"Try another opset ({OPSET_RANGE[0]}..{OPSET_RANGE[1]}), or deploy the Paddle export.",
        outcome=f"Nothing was written at {output}.",
    )
    verified = compare_outputs(
        lambda batch: run_predictor_outputs(reference, batch),
        lambda batch: session.run(None, {name: np.ascontiguousarray(batch, dtype=np.float32)}),
        sample,
        batch_sizes,
        atol,
        rtol,
        names,
    )
    verified.pop("output_shapes")
    if metadata and read_metadata(prefix) != metadata:
        raise ExportError(
            f"The export at {prefix} was replaced while it was converted (another export wrote it). Nothing was "
            f"written at {output}; run the ONNX export again. Received: prefix={prefix!r}"
        )
    _write_atomically(Path(output), model_bytes)
    versions = {
        name: importlib.metadata.version(name) for name in ("paddle2onnx", "onnxruntime", "onnx") if _has_dist(name)
    }
    report = OnnxExportReport(output, written_opset, verified["max_abs_diff"], list(batch_sizes), versions,
                              verified["max_rel_diff"], verified["tolerance"])  # fmt: skip
    if metadata:
        metadata["onnx"] = {
            "file": os.path.basename(output),
            "opset_version": written_opset,
            "verified": verified,
            "versions": versions,
        }
        _write_atomically(metadata_path(prefix), (json.dumps(metadata, indent=2) + "\n").encode())
    log.info("ONNX model written to %s (max abs diff vs paddle.inference %.3g)", output, verified["max_abs_diff"])
    return report


def _write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` in one rename: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _has_dist(name: str) -> bool:
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True
