"""``paddle-mnist``: train, evaluate, export, predict and inspect from the shell.

Subcommands:

- ``train``: the recipe (:func:`paddle_mnist_hapi.recipe.train`); its options
  are generated from :class:`~paddle_mnist_hapi.recipe.TrainConfig`, so every
  config field is an option (``examples/fit_lenet.py`` uses the same builder);
- ``evaluate MODEL``: an exported model (prefix or run directory) on the MNIST
  test set, or on labelled pictures (``--images DIR``, one folder per class name);
  ``--report DIR`` writes a confusion matrix, the misclassified
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
            help_text = help_text or f"one of {', '.join(list_models())}, or your own as package.module:factory"
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
    from paddle_mnist_hapi.models.user_factory import network_and_specs
    from paddle_mnist_hapi.recipe import train

    config = train_config_from_args(args)
    network_and_specs(config.model, config.input_shape)  # fail before loading data on a wrong name or factory
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
    if args.images is not None:
        return _evaluate_pictures(predictor, args)
    _require_mnist_digit_model(predictor)
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


def _require_mnist_digit_model(predictor: Any) -> None:
    from paddle_mnist_hapi.deploy.image_input import MNIST_DIGITS

    if predictor.preprocessing != MNIST_DIGITS:
        raise UsageError(
            f"evaluate runs the MNIST test set, which only a digit model takes; {predictor.prefix} takes "
            f"{predictor.input_shape} (preprocessing {predictor.preprocessing!r}). Pass --images DIR: a folder "
            f"with one subfolder of pictures per class name ({', '.join(predictor.class_names[:3])}, ...)"
        )


def _evaluate_pictures(predictor: Any, args: argparse.Namespace) -> int:
    """``evaluate --images DIR``: the pictures in ``DIR/<class name>/``, through the export's own preprocessing."""
    from paddle_mnist_hapi.deploy.image_input import labelled_pictures
    from paddle_mnist_hapi.deploy.predict import softmax

    predictor.require_pictures()
    files, labels = labelled_pictures(args.images, predictor.class_names, limit=args.limit)
    started = time.perf_counter()
    inputs = [predictor.preprocess(path) for path in files]  # the first unreadable picture raises
    batch = np.concatenate(inputs)
    logits = _evaluate_images(predictor, batch, args.batch_size, progress=sys.stderr.isatty() and not args.json)
    seconds = time.perf_counter() - started
    predicted = logits.argmax(axis=1)
    probabilities = softmax(logits)
    loss = float(-np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, None)).mean())
    result: dict[str, Any] = {
        "model": predictor.prefix,
        "samples": len(labels),
        "accuracy": round(float((predicted == labels).mean()), 6),
        "loss": round(loss, 6),
        "misclassified": int((predicted != labels).sum()),
        "images_per_second": round(len(labels) / seconds, 1) if seconds > 0 else None,
        "data": str(args.images),
    }
    if args.report:
        from paddle_mnist_hapi.deploy.reports import write_report

        pictures = np.stack([_seen(predictor, x) for x in inputs])
        extra = {"model": predictor.prefix, "data": str(args.images), "loss": result["loss"]}
        result["report"] = write_report(args.report, pictures, labels, predicted, predictor.class_names, extra=extra)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"model     {result['model']}")
        print(f"images    {result['samples']} pictures in {result['data']}")
        print(f"accuracy  {result['accuracy']:.2%} ({result['misclassified']} wrong), loss {result['loss']:.4f}")
        for kind, path in result.get("report", {}).items():
            print(f"{kind:<17} {path}")
    return EXIT_OK


def _seen(predictor: Any, model_input: np.ndarray) -> np.ndarray:
    """The picture the model saw, for the report: declared images as they were fed, digits as 28x28."""
    if predictor.image_input is not None:
        return predictor.image_input.picture(model_input)
    from paddle_mnist_hapi.data.dataset import MEAN, STD

    return np.clip(np.round(model_input.reshape(28, 28) * STD + MEAN), 0, 255).astype(np.uint8)


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
        sample = _test_sample() if _is_digit_export(prefix) else None  # random inputs for a model of your own
        report = export_onnx(prefix, output, opset_version=args.opset, sample=sample)
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


def _is_digit_export(prefix: str) -> bool:
    """True when the export at ``prefix`` takes MNIST digits (its metadata says so, or it has none)."""
    from paddle_mnist_hapi.deploy.predict import Predictor

    return Predictor(prefix).preprocessing == "mnist_digits"


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
    from paddle_mnist_hapi.models.user_factory import model_label, network_and_specs

    if not source.exists() and not Path(str(source) + ".pdparams").is_file():
        raise ExportError(
            f"Nothing to export at {source}: expected an exported prefix (PREFIX.json + PREFIX.pdiparams), a "
            "training run directory, a ResumeCkpt checkpoint (ckpt-* or its directory) or a model.save() "
            f"checkpoint (PREFIX.pdparams). Received: source={str(source)!r}"
        )
    if not args.model:
        raise UsageError(
            "exporting a checkpoint needs --model NAME or --model package.module:factory (the architecture it was "
            "trained with)"
        )
    preprocessing = _preprocessing_option(args.preprocessing)
    model = paddle.Model(*network_and_specs(args.model, args.input_shape))
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
    output = args.output or str((source.parent if source.is_file() else source) / "inference" / model_label(args.model))
    digits = preprocessing in (None, "mnist_digits") and np.prod(model._inputs[0].shape[1:]) == 784
    report = export_model(
        model,
        output,
        sample=_test_sample() if digits else None,  # real digits for a digit model, random inputs otherwise
        class_names=args.class_names.split(",") if args.class_names else None,
        preprocessing=preprocessing,
    )
    return report.prefix


def _preprocessing_option(text: str | None) -> Any:
    """``--preprocessing``: ``mnist_digits``, ``none``, or a JSON object of ``ImageInput`` fields."""
    if text is None or text in ("mnist_digits", "none"):
        return text
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise UsageError(
            "--preprocessing takes mnist_digits, none, or a JSON object of ImageInput fields, e.g. "
            f'\'{{"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}\'. Received: --preprocessing {text}'
        )
    return value


def _cmd_predict(args: argparse.Namespace) -> int:
    from paddle_mnist_hapi.deploy.predict import Predictor

    invert = {"auto": "auto", "yes": True, "no": False}[args.invert]
    predictor = Predictor(args.model, invert=invert)
    predictor.require_pictures()  # an arrays-only export: refused before any picture is read
    if args.invert != "auto" and predictor.image_input is not None:
        raise UsageError(f"--invert is for MNIST digit models; {predictor.prefix} declares its own preprocessing")
    predictions = predictor.predict_many(args.images)
    if args.json:
        print(json.dumps({"model": predictor.prefix, "predictions": [p.to_dict() for p in predictions]}))
        return EXIT_OK
    width = max(len("image"), *(len(str(p.source)) for p in predictions))
    label = max(len("label"), *(len(p.class_name) for p in predictions))  # class names of your own may be long
    print(f"{'image':<{width}}  {'label':<{label}}  confidence  note")
    for p in predictions:
        note = ("not sure" + (f": {p.problem}" if p.problem else "")) if p.uncertain else ""
        print(f"{p.source!s:<{width}}  {p.class_name:<{label}}  {p.confidence:10.2%}  {note}".rstrip())
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
    evaluate.add_argument(
        "--images", metavar="DIR", help="labelled pictures instead of MNIST: DIR/<class name>/*.png (any format)"
    )
    evaluate.add_argument("--report", metavar="DIR", help="write metrics.json, confusion_matrix.png, misclassified.png")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(handler=_cmd_evaluate)

    export = commands.add_parser("export", help="convert an export to ONNX, or export a checkpoint")
    export.add_argument(
        "source", help="export prefix or run directory (with --onnx); or a checkpoint (ckpt-*, PREFIX.pdparams)"
    )
    export.add_argument(
        "--model",
        help="architecture of a checkpoint: a registered name (`paddle-mnist info`) or package.module:factory",
    )
    export.add_argument(
        "--input-shape", type=int, nargs="+", metavar="N", help="a factory's input without the batch, e.g. 3 32 32"
    )
    export.add_argument("--class-names", help="comma-separated, one per output class (default: 0..N-1)")
    export.add_argument(
        "--preprocessing",
        help="what a picture needs: mnist_digits, none (arrays only), or ImageInput fields as JSON, e.g. "
        '\'{"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}\' (default: mnist_digits for 28x28 inputs, else none)',
    )
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
