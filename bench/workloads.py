"""Paddle measurements of the benchmark, one per process: ``python bench/workloads.py NAME [--steps N]``.

Prints one JSON object. ``bench/run.py`` runs these in interleaved rounds and
aggregates them; run one by hand to look at a single number.

Training paths (all LeNet-5 from ``create_model("lenet5")``, Adam, cross
entropy, ``Accuracy``, batch 64, ``paddle.Model.fit``; the clock covers
``--steps`` steps after a warm-up, not whole epochs):

- ``tutorial``: the classic Paddle tutorial: ``paddle.vision.datasets.MNIST``
  (built offline from IDX files of the same data) with a per-sample
  ``ToTensor`` + ``Normalize`` transform, ``fit(dataset, batch_size=64)``, and
  the tutorial's layers (stock ``paddle.nn.Conv2D``).
- ``dataset``: this library's in-memory ``MNIST`` Dataset passed to ``fit``
  (hapi builds its own ``DataLoader``), stock ``paddle.nn.Conv2D``.
- ``library``: this library's training path: ``InMemoryLoader``, the model as
  the registry builds it.
- ``stock_conv``: ``library`` with the registry's ``layers.Conv2D`` and
  ``layers.FusedSequential`` swapped back to stock ``paddle.nn.Conv2D`` and
  ``paddle.nn.Sequential``: the data path's gain alone.
- ``unfused``: ``library`` with only ``layers.FusedSequential`` swapped back to
  ``paddle.nn.Sequential``: ``library`` against it is the fusion's gain.
- ``paddle_raw``: no hapi: a plain dygraph loop over the same batches with the
  fast-conv model (what ``paddle.Model.fit`` itself costs per step).
- ``torch``: the PyTorch eager loop of ``bench/torch_loop.py``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import paddle

from paddle_mnist_hapi import callbacks as library_callbacks
from paddle_mnist_hapi import create_model, specs_for
from paddle_mnist_hapi.data import MNIST, InMemoryLoader, load_arrays
from paddle_mnist_hapi.data.sources import _idx_bytes
from paddle_mnist_hapi.models.layers import Conv2D, FusedSequential

BATCH = 64
WARMUP = 20
EPOCH_IMAGES = 60000


def _model(stock_conv: bool = False, fused: bool = True) -> paddle.Model:
    paddle.seed(0)
    network = create_model("lenet5")
    for layer in network.sublayers():  # the tutorial's layers: same parameters, Paddle's own code
        if stock_conv and type(layer) is Conv2D:
            layer.__class__ = paddle.nn.Conv2D
        if (stock_conv or not fused) and type(layer) is FusedSequential:
            layer.__class__ = paddle.nn.Sequential
    model = paddle.Model(network, *specs_for("lenet5"))
    optimizer = paddle.optimizer.Adam(learning_rate=2e-3, parameters=network.parameters())
    model.prepare(optimizer, paddle.nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    return model


def tutorial_dataset(directory: Path) -> paddle.io.Dataset:
    """The tutorial's data set, offline: IDX files of the same MNIST, per-sample transforms."""
    import paddle.vision.transforms as T

    arrays = load_arrays()
    paths = {}
    for name, array in (("images", arrays.train_images), ("labels", arrays.train_labels)):
        paths[name] = directory / f"train-{name}.gz"
        paths[name].write_bytes(gzip.compress(_idx_bytes(array), compresslevel=1))
    transform = T.Compose([T.ToTensor(), T.Normalize(mean=[0.5], std=[0.5])])
    return paddle.vision.datasets.MNIST(
        image_path=str(paths["images"]),
        label_path=str(paths["labels"]),
        mode="train",
        transform=transform,
        download=False,
    )


class _HapiPath:
    """One training path through ``paddle.Model.fit``."""

    def __init__(self, path: str, directory: Path, train: MNIST) -> None:
        if path == "tutorial":
            self.data: Any = tutorial_dataset(directory)
        elif path == "dataset":
            self.data = train
        elif path in ("library", "stock_conv", "unfused"):
            self.data = InMemoryLoader(train, batch_size=BATCH)
        else:
            raise SystemExit(f"unknown training path {path!r}")
        self.model = _model(stock_conv=path in ("tutorial", "dataset", "stock_conv"), fused=path != "unfused")

    def run(self, steps: int) -> None:
        self.model.fit(self.data, batch_size=BATCH, epochs=1, verbose=0, num_iters=steps)


class _RawPaddleLoop:
    """A plain dygraph loop (no hapi) over ``InMemoryLoader`` batches with the library's model,
    reading loss and accuracy back every step as the PyTorch loop does: what hapi itself costs."""

    def __init__(self, train: MNIST) -> None:
        self.model = _model()
        self.network = self.model.network
        self.optimizer = self.model._optimizer
        self.loss_fn = paddle.nn.CrossEntropyLoss()
        self.loader = InMemoryLoader(train, batch_size=BATCH)
        self.batches = iter(self.loader)

    def run(self, steps: int) -> None:
        self.network.train()
        for _ in range(steps):
            batch = next(self.batches, None)
            if batch is None:
                self.batches = iter(self.loader)
                batch = next(self.batches)
            x, y = paddle.to_tensor(batch[0]), paddle.to_tensor(batch[1])
            logits = self.network(x)
            loss = self.loss_fn(logits, y)
            loss.backward()
            self.optimizer.step()
            self.optimizer.clear_grad()
            _ = float(loss), float((logits.argmax(axis=1, keepdim=True) == y).astype("float32").mean())


def train_speeds(paths: list[str], steps: int, chunk: int) -> dict[str, Any]:
    """Images per second of each training path, measured in one process in
    interleaved chunks of ``chunk`` steps (rotating order) until every path
    has run ``steps`` steps after its warm-up. ``torch`` is the PyTorch loop."""
    with tempfile.TemporaryDirectory() as tmp:
        train = MNIST("train")
        runners: dict[str, Any] = {}
        for path in paths:
            if path == "torch":
                try:
                    from torch_loop import TorchLoop
                except ImportError:
                    continue
                runners[path] = TorchLoop(threads=int(os.environ.get("OMP_NUM_THREADS", "1")))
            elif path == "paddle_raw":
                runners[path] = _RawPaddleLoop(train)
            else:
                runners[path] = _HapiPath(path, Path(tmp), train)
            runners[path].run(WARMUP)
        seconds = dict.fromkeys(runners, 0.0)
        chunks: dict[str, list[float]] = {path: [] for path in runners}
        order = list(runners)
        for index in range(-(-steps // chunk)):
            rotation = index % len(order)
            for path in order[rotation:] + order[:rotation]:
                started = time.perf_counter()
                runners[path].run(chunk)
                elapsed = time.perf_counter() - started
                seconds[path] += elapsed
                chunks[path].append(chunk * BATCH / elapsed)
    done = -(-steps // chunk) * chunk
    result: dict[str, Any] = {"steps": done, "chunk": chunk, "chunks_img_per_s": chunks}
    if "torch" in runners:
        result["torch_version"] = runners["torch"].torch.__version__
        result["torch_threads"] = runners["torch"].torch.get_num_threads()
    for path in runners:
        result[f"{path}_img_per_s"] = done * BATCH / seconds[path]
    return result


def all_library_callbacks(output: Path) -> list[paddle.callbacks.Callback]:
    """Every library callback: the recipe's defaults, plus any other callback class
    in ``paddle_mnist_hapi.callbacks`` that can be built without arguments."""
    from paddle_mnist_hapi.recipe import TrainConfig, default_callbacks

    found = list(default_callbacks(TrainConfig(output=str(output), verbose=0), output))
    present = {type(c) for c in found}
    for name in getattr(library_callbacks, "__all__", []):
        cls = getattr(library_callbacks, name)
        if not (isinstance(cls, type) and issubclass(cls, paddle.callbacks.Callback)) or cls in present:
            continue
        if any(issubclass(cls, p) or issubclass(p, cls) for p in present):
            continue  # a variant of one already on (e.g. two LR steppers would step twice)
        try:
            found.append(cls())
        except Exception:  # needs arguments or is abstract: not one to switch on blindly
            continue
        present.add(cls)
    found.sort(key=lambda c: type(c).__name__ == "EMA")  # EMA goes last, as its docs ask
    return found


class _HookTimer:
    """Adds up the time a callback spends in its hooks, per hook."""

    def __init__(self, callback: paddle.callbacks.Callback) -> None:
        self.seconds: dict[str, float] = {}
        for name in dir(callback):
            if name.startswith("on_") and callable(getattr(callback, name)):
                setattr(callback, name, self._wrap(name, getattr(callback, name)))

    def _wrap(self, name: str, hook: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return hook(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

        return timed


def callback_overhead(steps: int, rounds: int) -> dict[str, Any]:
    """Seconds of one ``steps``-step epoch with every library callback on, over all off."""
    data = MNIST("train", limit=steps * BATCH)
    loader = InMemoryLoader(data, batch_size=BATCH)
    model = _model()
    with tempfile.TemporaryDirectory() as tmp:  # warm-up, with the callbacks' first-use imports (matplotlib, ...)
        model.fit(loader, epochs=1, verbose=0, num_iters=WARMUP, callbacks=all_library_callbacks(Path(tmp)))
    seconds: dict[str, list[float]] = {"on": [], "off": []}
    names: list[str] = []
    hook_seconds: dict[str, float] = {}
    for round_ in range(rounds):
        for mode in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
            with tempfile.TemporaryDirectory() as tmp:
                callbacks = all_library_callbacks(Path(tmp)) if mode == "on" else []
                names = [type(c).__name__ for c in callbacks] or names
                timers = [_HookTimer(c) for c in callbacks]  # where the time goes, callback by callback
                loader.set_epoch(0)
                started = time.perf_counter()
                model.fit(loader, epochs=1, verbose=0, callbacks=callbacks)
                seconds[mode].append(time.perf_counter() - started)
                if mode == "on":
                    hook_seconds = {n: sum(t.seconds.values()) for n, t in zip(names, timers, strict=True)}
    on, off = statistics.median(seconds["on"]), statistics.median(seconds["off"])
    return {
        "steps": steps,
        "on_s": on,
        "off_s": off,
        "ratio": on / off,
        "callbacks": names,
        "hook_fraction": {name: seconds / on for name, seconds in hook_seconds.items()},
        "runs": seconds,
    }


def checkpoint_cost(steps: int) -> dict[str, Any]:
    """Seconds ResumeCkpt spends saving at an epoch end, and resuming from it."""
    ResumeCkpt = getattr(library_callbacks, "ResumeCkpt", None)
    if ResumeCkpt is None:
        return {"available": False}
    loader = InMemoryLoader(MNIST("train", limit=steps * BATCH), batch_size=BATCH)
    with tempfile.TemporaryDirectory() as tmp:
        saving = ResumeCkpt(save_dir=tmp)
        timer = _HookTimer(saving)
        _model().fit(loader, epochs=1, verbose=0, callbacks=[saving])
        save = sum(s for name, s in timer.seconds.items() if name != "on_train_begin")
        resuming = ResumeCkpt(save_dir=tmp)
        timer = _HookTimer(resuming)
        model = _model()
        model.fit(loader, epochs=2, verbose=0, callbacks=[resuming])  # resumes, then trains epoch 2
        load = timer.seconds.get("on_train_begin", 0.0)
    return {"available": True, "save_s": save, "load_s": load}


def seconds_to_99(epochs: int | None, ood: int = 0) -> dict[str, Any]:
    """The default recipe on the real MNIST: seconds from the start of ``train`` until test top-1 >= 99%.

    With ``ood`` > 0, also the exported model's accuracy on that many non-MNIST digits of
    ``bench/ood_digits.py`` (seed 0) through ``paddle-mnist predict``.
    """
    from paddle_mnist_hapi import recipe

    started = time.perf_counter()
    evaluations: list[dict[str, float]] = []

    class Clock(paddle.callbacks.Callback):
        def on_eval_end(self, logs: dict[str, Any] | None = None) -> None:
            acc = float((logs or {}).get("acc", 0.0))
            evaluations.append({"seconds": time.perf_counter() - started, "acc": acc})

    default_callbacks = recipe.default_callbacks
    recipe.default_callbacks = lambda config, output: [*default_callbacks(config, output), Clock()]
    with tempfile.TemporaryDirectory() as tmp:
        config = recipe.TrainConfig(output=tmp, verbose=0)
        if epochs is not None:
            config.epochs = epochs
        try:
            summary = recipe.train(config)
        finally:
            recipe.default_callbacks = default_callbacks
        ood_result = _ood_digits().evaluate(summary["export"], n=ood) if ood else None
        calibration = _mnist_test_calibration(summary["export"])
    reached = next((e["seconds"] for e in evaluations if e["acc"] >= 0.99), None)
    return {
        "seconds_to_99": reached,
        "evaluations": evaluations,
        "test_acc": summary["test_acc"],
        "total_seconds": time.perf_counter() - started,
        "epochs": config.epochs,
        "ood_acc": ood_result["accuracy"] if ood_result else None,
        "ood": ood_result,
        "mnist_test_ece": calibration.get("ece"),
        "temperature": calibration.get("temperature"),
    }


def _mnist_test_calibration(model: str) -> dict[str, Any]:
    """``paddle-mnist evaluate --json`` of the export on the 10,000 MNIST test images (accuracy, ECE, temperature)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "paddle_mnist_hapi.cli", "evaluate", model, "--json"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if proc.returncode == 0 and lines else {}


def _ood_digits() -> Any:
    """``bench/ood_digits.py`` as a module (this file also runs as a script and is loaded by path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_ood_digits", Path(__file__).with_name("ood_digits.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def inference(iterations: int) -> dict[str, Any]:
    """Exported model through ``paddle.inference`` (1 thread) vs the dygraph model: latency and throughput."""
    from paddle_mnist_hapi.deploy.export import export_model, load_inference_predictor, run_predictor

    model = _model()
    images = MNIST("test", limit=256).images
    with tempfile.TemporaryDirectory() as tmp:
        prefix = str(Path(tmp) / "lenet5")
        export_model(model, prefix, sample=images[:16])
        predictor = load_inference_predictor(prefix, threads=1)

        def timings(run: Any, batch: np.ndarray, count: int) -> list[float]:
            for _ in range(max(10, count // 20)):
                run(batch)
            out = []
            for _ in range(count):
                started = time.perf_counter()
                run(batch)
                out.append(time.perf_counter() - started)
            return out

        network = model.network
        network.eval()

        def dygraph(batch: np.ndarray) -> np.ndarray:
            with paddle.no_grad():
                return network(paddle.to_tensor(batch)).numpy()

        infer_b1 = timings(lambda b: run_predictor(predictor, b), images[:1], iterations)
        dygraph_b1 = timings(dygraph, images[:1], iterations)
        big = max(20, iterations // 20)
        infer_b256 = timings(lambda b: run_predictor(predictor, b), images, big)
        dygraph_b256 = timings(dygraph, images, big)
    return {
        "infer_b1_p50_ms": _percentile(infer_b1, 50) * 1e3,
        "infer_b1_p99_ms": _percentile(infer_b1, 99) * 1e3,
        "infer_b256_img_per_s": 256 / statistics.median(infer_b256),
        "dygraph_b1_p50_ms": _percentile(dygraph_b1, 50) * 1e3,
        "dygraph_b1_p99_ms": _percentile(dygraph_b1, 99) * 1e3,
        "dygraph_b256_img_per_s": 256 / statistics.median(dygraph_b256),
        "iterations": iterations,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=["train", "callbacks", "checkpoint", "to99", "inference"])
    parser.add_argument("--paths", default="tutorial,dataset,stock_conv,library,paddle_raw,torch", help="train only")
    parser.add_argument("--chunk", type=int, default=50, help="train only: steps per interleaved chunk")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None, help="to99 only: override the recipe's epochs")
    parser.add_argument("--ood", type=int, default=0, help="to99 only: also evaluate on N non-MNIST digits")
    parser.add_argument("--iterations", type=int, default=1000)
    args = parser.parse_args(argv)
    paddle.set_device("cpu")
    if args.name == "train":
        result = train_speeds(args.paths.split(","), args.steps, args.chunk)
    elif args.name == "callbacks":
        result = callback_overhead(args.steps, args.rounds)
    elif args.name == "checkpoint":
        result = checkpoint_cost(args.steps)
    elif args.name == "to99":
        result = seconds_to_99(args.epochs, args.ood)
    else:
        result = inference(args.iterations)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
