"""``paddle-mnist``: train, evaluate, export, predict and inspect from the shell.

Subcommands:

- ``train``: the recipe (:func:`paddle_mnist_hapi.recipe.train`); its options
  are generated from :class:`~paddle_mnist_hapi.recipe.TrainConfig`, so every
  config field is an option (``examples/fit_lenet.py`` uses the same builder);
- ``evaluate MODEL``: an exported model (prefix or run directory) on the MNIST
  test set; ``--report DIR`` writes a confusion matrix, the misclassified
  images and per-class precision/recall;
- ``export SOURCE``: convert a Paddle export to ONNX (``--onnx``), or export a
  training checkpoint for ``paddle.inference``;
- ``predict --model MODEL IMAGE...``: classify image files (a table or ``--json``);
- ``info``: versions, device and where the data comes from;
- ``serve --model MODEL``: the model behind HTTP with a page to draw on
  (the ``serve`` extra; see :mod:`paddle_mnist_hapi.serve`).

Exit codes: 0 success; 2 bad input or usage (one ``error: ...`` line on
stderr); 1 an unexpected failure (one line too); 130 interrupted.

Examples:
    >>> main(["predict", "--model", "/no/such/model", "digit.png"])
    2
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import platform
import sys
import time
import typing
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "add_train_arguments", "build_parser", "main"]
__all__ += ["train_config_from_args"]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
PROG = "paddle-mnist"


class UsageError(Exception):
    """A command-line usage error (argparse's), reported as one line.

    Examples:
        >>> try:
        ...     build_parser().parse_args(["predict"])
        ... except UsageError as exc:
        ...     print(exc)
        the following arguments are required: --model, IMAGE (see `paddle-mnist predict --help`)
    """


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of printing usage and exiting."""

    def error(self, message: str) -> typing.NoReturn:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------- train options


def _option_type(hint: Any) -> tuple[Any, bool]:
    """``(inner type, optional)`` for a field type such as ``int | None``."""
    args = typing.get_args(hint)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else str), True
    return hint, False


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a JSON value, got {text!r}") from None


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add one ``--option`` per :class:`~paddle_mnist_hapi.recipe.TrainConfig` field.

    The option is the field name with dashes (``batch_size`` -> ``--batch-size``),
    typed from the annotation (``X | None`` accepts X, ``bool`` gives
    ``--x/--no-x``, ``Literal`` gives choices) and documented by the field's
    ``metadata['help']``. A field added to the config is an option at once.

    Examples:
        >>> parser = add_train_arguments(argparse.ArgumentParser())
        >>> train_config_from_args(parser.parse_args(["--epochs", "2", "--batch-size", "32"])).batch_size
        32
    """
    from paddle_mnist_hapi.models import list_models
    from paddle_mnist_hapi.recipe import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        if not field.init:
            continue
        option = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        help_text = str(field.metadata.get("help", ""))
        if field.name == "model":
            help_text = help_text or f"one of {', '.join(list_models())}"
        kind, _ = _option_type(hints[field.name])
        kwargs: dict[str, Any] = {"dest": field.name, "default": default}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is typing.Literal:
            choices = typing.get_args(kind)
            kwargs.update(choices=choices, type=type(choices[0]))
        elif typing.get_origin(kind) in (list, tuple):
            inner = typing.get_args(kind)
            kwargs.update(nargs="*", type=inner[0] if inner and callable(inner[0]) else str)
        elif kind in (int, float, str) or (isinstance(kind, type) and kind.__module__ in ("pathlib", "builtins")):
            kwargs["type"] = kind
        else:
            kwargs["type"] = _json_value
        suffix = "" if kind is bool else " (default: %(default)s)"
        parser.add_argument(option, help=(help_text + suffix).strip(), **kwargs)
    return parser


def train_config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~paddle_mnist_hapi.recipe.TrainConfig` for parsed training options.

    Examples:
        >>> args = add_train_arguments(argparse.ArgumentParser()).parse_args(["--model", "mlp"])
        >>> train_config_from_args(args).model
        'mlp'
    """
    from paddle_mnist_hapi.recipe import TrainConfig

    names = [f.name for f in dataclasses.fields(TrainConfig) if f.init]
    return TrainConfig(**{name: getattr(args, name) for name in names if hasattr(args, name)})


# --------------------------------------------------------------------------- subcommands


def _cmd_train(args: argparse.Namespace) -> int:
    from paddle_mnist_hapi.models.registry import model_entry
    from paddle_mnist_hapi.recipe import train

    config = train_config_from_args(args)
    model_entry(config.model)  # fail before loading data on a wrong name
    summary = train(config)
    print(f"test accuracy {summary['test_acc']:.2%} in {summary['seconds']:.0f} s; exported to {summary['export']}")
    print(json.dumps(summary))
    return EXIT_OK


def _evaluate_images(predictor: Any, images: np.ndarray, batch_size: int, progress: bool) -> np.ndarray:
    from paddle.hapi.progressbar import ProgressBar

    steps = -(-len(images) // batch_size)
    bar = ProgressBar(num=steps, verbose=1, file=sys.stderr, name="batch") if progress else None
    outputs = []
    for step in range(steps):
        outputs.append(predictor.logits(images[step * batch_size : (step + 1) * batch_size]))
        if bar is not None:
            bar.update(step + 1)
    return np.concatenate(outputs)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from paddle_mnist_hapi.data import MNIST
    from paddle_mnist_hapi.deploy.calibrate import expected_calibration_error
    from paddle_mnist_hapi.deploy.predict import Predictor, softmax

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be positive. Received: --batch-size {args.batch_size}")
    predictor = Predictor(args.model)
    test = MNIST("test", data_dir=args.data_dir, limit=args.limit)
    started = time.perf_counter()
    logits = _evaluate_images(predictor, test.images, args.batch_size, progress=sys.stderr.isatty() and not args.json)
    seconds = time.perf_counter() - started
    labels = test.labels.ravel()
    predicted = logits.argmax(axis=1)
    probabilities = softmax(logits / predictor.temperature)  # calibrated, as predict and serve report them
    loss = float(-np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, None)).mean())
    ece = expected_calibration_error(probabilities.max(axis=1), predicted == labels)
    result: dict[str, Any] = {
        "model": predictor.prefix,
        "samples": len(labels),
        "accuracy": round(float((predicted == labels).mean()), 6),
        "loss": round(loss, 6),
        "misclassified": int((predicted != labels).sum()),
        "ece": round(ece, 6),
        "temperature": predictor.temperature,
        "images_per_second": round(len(labels) / seconds, 1) if seconds > 0 else None,
        "data": test.source,
    }
    if args.report:
        from paddle_mnist_hapi.deploy.reports import write_report

        extra = {"model": predictor.prefix, "data": test.source, "loss": result["loss"]}
        result["report"] = write_report(
            args.report, test.raw_images, labels, predicted, predictor.class_names, extra=extra
        )
    if args.json:
        print(json.dumps(result))
    else:
        print(f"model     {result['model']}")
        print(f"images    {result['samples']} MNIST test images ({result['data']})")
        print(f"accuracy  {result['accuracy']:.2%} ({result['misclassified']} wrong), loss {result['loss']:.4f}")
        print(f"ECE       {result['ece']:.2%} (temperature {result['temperature']:.3g})")
        for kind, path in result.get("report", {}).items():
            print(f"{kind:<17} {path}")
    return EXIT_OK


def _test_sample(count: int = 16) -> Any:
    """Real MNIST test images for the parity checks; None (random inputs) when the data is unavailable."""
    from paddle_mnist_hapi.data import MNIST
    from paddle_mnist_hapi.errors import DataCorruptError, DataNotFoundError

    try:
        return MNIST("test", limit=count).images
    except (DataNotFoundError, DataCorruptError) as exc:
        log.info("Checking on random inputs: %s", _one_line(str(exc)))
        return None


def _cmd_export(args: argparse.Namespace) -> int:
    from paddle_mnist_hapi.errors import ExportError

    source = Path(args.source)
    result: dict[str, Any] = {}
    exported = _exported_prefix(source)
    if exported is None:
        prefix = _export_checkpoint(source, args)
        result["paddle"] = prefix
    else:
        prefix = exported
        if not args.onnx:
            raise ExportError(
                f"{args.source} is already exported for paddle.inference (prefix {prefix}). Pass --onnx to convert "
                "it to ONNX, or pass a training checkpoint to export. Received: source=" + repr(args.source)
            )
        result["paddle"] = prefix
    if args.onnx:
        from paddle_mnist_hapi.deploy.onnx_export import export_onnx

        output = args.output if exported is not None and args.output else None
        report = export_onnx(prefix, output, opset_version=args.opset, sample=_test_sample())
        result["onnx"] = report.to_dict()
    if args.json:
        print(json.dumps(result))
    else:
        print(f"paddle.inference  {result['paddle']}.json + .pdiparams (+ _meta.json)")
        if "onnx" in result:
            onnx = result["onnx"]
            detail = f"opset {onnx['opset_version']}, max abs diff {onnx['max_abs_diff']:.3g}"
            print(f"onnx              {onnx['path']} ({detail})")
    return EXIT_OK


def _exported_prefix(source: Path) -> str | None:
    from paddle_mnist_hapi.deploy.predict import resolve_model_prefix
    from paddle_mnist_hapi.errors import ExportError

    try:
        prefix = resolve_model_prefix(source)
    except ExportError:
        return None
    return prefix if Path(prefix + ".json").is_file() and Path(prefix + ".pdiparams").is_file() else None


def _export_checkpoint(source: Path, args: argparse.Namespace) -> str:
    import paddle

    from paddle_mnist_hapi.deploy.export import export_model
    from paddle_mnist_hapi.errors import CheckpointError, ExportError
    from paddle_mnist_hapi.models import create_model
    from paddle_mnist_hapi.specs import specs_for

    if not source.exists() and not Path(str(source) + ".pdparams").is_file():
        raise ExportError(
            f"Nothing to export at {source}: expected an exported prefix (PREFIX.json + PREFIX.pdiparams), a "
            "training run directory, a ResumeCkpt checkpoint (ckpt-* or its directory) or a model.save() "
            f"checkpoint (PREFIX.pdparams). Received: source={str(source)!r}"
        )
    if not args.model:
        raise UsageError("exporting a checkpoint needs --model NAME (the architecture it was trained with)")
    model = paddle.Model(create_model(args.model), *specs_for(args.model))
    hapi_params = str(source)[: -len(".pdparams")] if str(source).endswith(".pdparams") else str(source)
    if Path(hapi_params + ".pdparams").is_file():
        try:
            model.load(hapi_params, reset_optimizer=True)
        except (ValueError, AssertionError) as exc:
            raise ExportError(
                f"The checkpoint {hapi_params}.pdparams does not fit --model {args.model}: {exc}"
            ) from exc
    else:
        from paddle_mnist_hapi.callbacks.resume import load_weights

        folder = source / "checkpoints" if (source / "checkpoints").is_dir() else source
        try:
            load_weights(model, folder)
        except CheckpointError:
            raise
        except Exception as exc:  # an unreadable directory is a checkpoint error for the user
            raise CheckpointError(f"Cannot read a checkpoint from {source}: {exc}") from exc
    output = args.output or str((source.parent if source.is_file() else source) / "inference" / args.model)
    report = export_model(model, output, sample=_test_sample())
    return report.prefix


def _cmd_predict(args: argparse.Namespace) -> int:
    from paddle_mnist_hapi.deploy.predict import Predictor

    invert = {"auto": "auto", "yes": True, "no": False}[args.invert]
    predictor = Predictor(args.model, invert=invert)
    predictions = predictor.predict_many(args.images)
    if args.json:
        print(json.dumps({"model": predictor.prefix, "predictions": [p.to_dict() for p in predictions]}))
        return EXIT_OK
    width = max(len("image"), *(len(str(p.source)) for p in predictions))
    print(f"{'image':<{width}}  label  confidence  note")
    for p in predictions:
        note = ("not sure" + (f": {p.problem}" if p.problem else "")) if p.uncertain else ""
        print(f"{p.source!s:<{width}}  {p.class_name:<5}  {p.confidence:10.2%}  {note}".rstrip())
    return EXIT_OK


def _version(name: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cmd_info(args: argparse.Namespace) -> int:
    import paddle

    from paddle_mnist_hapi import __version__
    from paddle_mnist_hapi.data.sources import ENV_DIR, cache_path, load_arrays
    from paddle_mnist_hapi.device import resolve_device
    from paddle_mnist_hapi.errors import PaddleMnistError
    from paddle_mnist_hapi.models import list_models

    cuda = bool(paddle.device.is_compiled_with_cuda())
    try:
        arrays = load_arrays(args.data_dir, download=False)
        data: dict[str, Any] = {
            "source": arrays.source,
            "train_images": len(arrays.train_images),
            "test_images": len(arrays.test_images),
            "verified": "standard MNIST MD5 checksums",
        }
    except PaddleMnistError as exc:
        data = {"source": None, "error": _one_line(str(exc))}
    data["cache"] = str(cache_path())
    data[ENV_DIR] = os.environ.get(ENV_DIR)
    packages = ("paddlepaddle", "paddlepaddle-gpu", "numpy", "pillow", "matplotlib", "visualdl")
    info = {
        "paddle_mnist_hapi": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "paddle": paddle.__version__,
        "packages": {name: v for name in packages if (v := _version(name))},
        "onnx": {name: _version(name) for name in ("paddle2onnx", "onnxruntime")},
        "device": {
            "default": resolve_device("auto"),
            "compiled_with_cuda": cuda,
            "gpus": int(paddle.device.cuda.device_count()) if cuda else 0,
            "cpu_threads": os.cpu_count(),
        },
        "data": data,
        "models": list_models(),
    }
    if args.json:
        print(json.dumps(info))
        return EXIT_OK
    onnx = ", ".join(f"{k} {v or 'not installed'}" for k, v in info["onnx"].items())
    device = info["device"]
    print(f"paddle-mnist-hapi {info['paddle_mnist_hapi']}, Paddle {info['paddle']}, Python {info['python']}")
    print(f"packages  {', '.join(f'{k} {v}' for k, v in info['packages'].items())}")
    print(f"onnx      {onnx}")
    print(f"device    {device['default']} (CUDA build: {device['compiled_with_cuda']}, GPUs: {device['gpus']})")
    print(f"data      {data.get('source') or 'not found: ' + data.get('error', '')}")
    print(f"cache     {data['cache']}")
    print(f"models    {', '.join(info['models'])}")
    return EXIT_OK


def _cmd_serve(args: argparse.Namespace) -> int:
    from paddle_mnist_hapi.errors import ConfigError
    from paddle_mnist_hapi.serve import INSTALL_HINT, missing_packages

    missing = missing_packages()
    if missing:
        raise ConfigError(f"`paddle-mnist serve` needs {', '.join(missing)}: run {INSTALL_HINT}")
    if args.max_upload_mb <= 0:
        raise UsageError(f"--max-upload-mb must be positive. Received: {args.max_upload_mb}")
    if not args.read_timeout_s > 0:
        raise UsageError(f"--read-timeout-s must be positive. Received: {args.read_timeout_s}")
    if not 0 <= args.decode_processes <= 64:
        raise UsageError(f"--decode-processes must be in 0..64. Received: {args.decode_processes}")
    from paddle_mnist_hapi.serve.server import run_server

    logging.getLogger("paddle_mnist_hapi.serve").setLevel(logging.INFO)  # one line per request on stderr

    def ready(url: str) -> None:
        print(f"serving {args.model} on {url} (Ctrl+C to stop)", flush=True)

    run_server(
        args.model,
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        decode_processes=args.decode_processes,
        read_timeout_s=args.read_timeout_s,
        on_ready=ready,
    )
    return EXIT_OK


# --------------------------------------------------------------------------- parser and main


def build_parser() -> argparse.ArgumentParser:
    """The ``paddle-mnist`` argument parser (raises :class:`UsageError` on bad usage).

    Examples:
        >>> build_parser().parse_args(["predict", "--model", "m", "a.png"]).images
        ['a.png']
    """
    parser = _Parser(prog=PROG, description="Train, evaluate, export and run MNIST models built on paddle.Model.")
    parser.add_argument("--debug", action="store_true", help="log everything to stderr, with tracebacks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = commands.add_parser("train", help="train, evaluate, export and verify (the recipe)")
    add_train_arguments(train)
    train.set_defaults(handler=_cmd_train)

    evaluate = commands.add_parser("evaluate", help="an exported model on the MNIST test set")
    evaluate.add_argument("model", help="export prefix (model.save(PREFIX, training=False)) or a run directory")
    evaluate.add_argument("--limit", type=int, default=None, help="only the first N test images")
    evaluate.add_argument("--batch-size", type=int, default=500, help="images per inference call (default: 500)")
    evaluate.add_argument("--data-dir", default=None, help="directory with the MNIST IDX files")
    evaluate.add_argument("--report", metavar="DIR", help="write metrics.json, confusion_matrix.png, misclassified.png")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(handler=_cmd_evaluate)

    export = commands.add_parser("export", help="convert an export to ONNX, or export a checkpoint")
    export.add_argument(
        "source", help="export prefix or run directory (with --onnx); or a checkpoint (ckpt-*, PREFIX.pdparams)"
    )
    export.add_argument("--model", help="architecture of a checkpoint (see `paddle-mnist info`)")
    export.add_argument("--output", help="output prefix (checkpoint) or .onnx file (export prefix)")
    export.add_argument("--onnx", action="store_true", help="also write and verify an ONNX model (needs the extra)")
    export.add_argument("--opset", type=int, default=13, help="ONNX opset (default: 13)")
    export.add_argument("--json", action="store_true", help="print one JSON object")
    export.set_defaults(handler=_cmd_export)

    predict = commands.add_parser("predict", help="classify image files (photos of digits welcome)")
    predict.add_argument("--model", required=True, help="export prefix or run directory")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, JPEG, BMP, GIF, TIFF or WebP files")
    predict.add_argument(
        "--invert", choices=("auto", "yes", "no"), default="auto", help="dark-on-light handling (default: auto)"
    )
    predict.add_argument("--json", action="store_true", help="print one JSON object")
    predict.set_defaults(handler=_cmd_predict)

    info = commands.add_parser("info", help="versions, device and where the MNIST data comes from")
    info.add_argument("--data-dir", default=None, help="directory with the MNIST IDX files")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(handler=_cmd_info)

    serve = commands.add_parser("serve", help="the model behind HTTP, with a page to draw on (serve extra)")
    serve.add_argument("--model", required=True, help="export prefix or run directory")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine)")
    serve.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one (default: 8000)")
    serve.add_argument("--max-batch", type=int, default=32, help="most images per model call (default: 32)")
    serve.add_argument("--max-wait-ms", type=float, default=3.0, help="batching wait bound (default: 3)")
    serve.add_argument("--max-upload-mb", type=float, default=10.0, help="request size limit (default: 10)")
    serve.add_argument(
        "--decode-processes", type=int, default=0, help="worker processes decoding uploads (default: 0, threads)"
    )
    serve.add_argument("--read-timeout-s", type=float, default=30.0, help="upload time limit (default: 30)")
    serve.set_defaults(handler=_cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``paddle-mnist`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code.

    Every error a user can cause prints one ``error: ...`` line on stderr and
    returns 2; nothing prints a traceback.

    Examples:
        >>> main(["info", "--json"]) == 0  # doctest: +ELLIPSIS
        {...}
        True
    """
    with warnings.catch_warnings():
        # `import paddle` warns "No ccache found" on every start (Paddle 3.3.1): noise on a CLI's stderr
        warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    from paddle_mnist_hapi.errors import PaddleMnistError

    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    level = logging.DEBUG if args.debug else logging.INFO if args.command == "train" else logging.WARNING
    with _console_logging(level):
        try:
            return int(args.handler(args))
        except (PaddleMnistError, UsageError) as exc:
            print(f"error: {_one_line(str(exc))}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Exception as exc:  # the promise: one line, never a traceback (unless --debug)
            log.debug("unexpected failure", exc_info=True)
            print(
                f"error: unexpected {type(exc).__name__}: {_one_line(str(exc))} (rerun with --debug for details)",
                file=sys.stderr,
            )
            return EXIT_ERROR


@contextlib.contextmanager
def _console_logging(level: int) -> Iterator[None]:
    """Plain messages on stderr at ``level`` while the command runs; the caller's setup afterwards.

    Paddle installs its own root handler on import; it is set aside, not closed.
    """
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(level)
    try:
        yield
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
