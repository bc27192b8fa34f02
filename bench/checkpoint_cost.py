"""What ResumeCkpt costs: ``python bench/checkpoint_cost.py [--steps N]`` prints one JSON object.

For LeNet-5, the registry's ``lenet_wide`` and an MLP with ten times LeNet-5's
parameters (784-800-10, 636k), all in one process, interleaved:

- ``epoch_s``: seconds of a 60,000-image training epoch at batch 64 (``fit`` on
  an ``InMemoryLoader``, ``--steps`` steps timed, scaled up);
- ``save_s`` / ``load_s``: one checkpoint written by ``ResumeCkpt`` (model,
  Adam state, RNG, fsyncs, retention) / verified and restored at a resume;
- ``fraction``: ``(save_s + load_s) / epoch_s``, the cost of checkpointing every epoch;
- ``rescan_ratio``: a save as it was before (every kept checkpoint re-read and
  re-hashed twice per save) over a save now (each file hashed once, from the
  bytes written), with ``keep_last=5``.

The machine may be shared: compare the ratios, which are measured side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import paddle

from paddle_mnist_hapi import create_model, specs_for
from paddle_mnist_hapi.callbacks import ResumeCkpt
from paddle_mnist_hapi.checkpoint import CheckpointStore, state
from paddle_mnist_hapi.data import MNIST, InMemoryLoader

BATCH = 64
EPOCH_IMAGES = 60000


def _network(name: str) -> paddle.nn.Layer:
    if name == "mlp800":  # ten times LeNet-5's parameters
        return paddle.nn.Sequential(
            paddle.nn.Flatten(), paddle.nn.Linear(784, 800), paddle.nn.ReLU(), paddle.nn.Linear(800, 10)
        )
    return create_model(name)


def _model(name: str) -> paddle.Model:
    paddle.seed(0)
    network = _network(name)
    model = paddle.Model(network, *specs_for("lenet5"))
    model.prepare(
        paddle.optimizer.Adam(1e-3, parameters=network.parameters()),
        paddle.nn.CrossEntropyLoss(),
        paddle.metric.Accuracy(),
    )
    return model


def measure(name: str, steps: int, directory: Path) -> dict[str, Any]:
    loader = InMemoryLoader(MNIST("train", limit=steps * BATCH), batch_size=BATCH)
    model = _model(name)
    model.fit(loader, epochs=1, verbose=0)  # warm-up
    started = time.perf_counter()
    model.fit(loader, epochs=1, verbose=0)
    epoch_s = (time.perf_counter() - started) * EPOCH_IMAGES / (steps * BATCH)

    ckpt = ResumeCkpt(directory / name, keep_last=2, every_n_steps=max(steps // 5, 1))
    saves: list[float] = []
    flush = ckpt._flush

    def timed_flush(*args: Any, **kwargs: Any) -> None:
        pending = ckpt._pending
        begin = time.perf_counter()
        flush(*args, **kwargs)
        if pending:
            saves.append(time.perf_counter() - begin)

    ckpt._flush = timed_flush  # type: ignore[method-assign]
    model.fit(loader, epochs=1, verbose=0, callbacks=[ckpt])
    save_s = statistics.median(saves)

    resumed = ResumeCkpt(directory / name)
    begin_hook = resumed.on_train_begin
    load: list[float] = []

    def timed_begin(logs: Any = None) -> None:
        begin = time.perf_counter()
        begin_hook(logs)
        load.append(time.perf_counter() - begin)

    resumed.on_train_begin = timed_begin  # type: ignore[method-assign]
    _model(name).fit(loader, epochs=1, verbose=0, callbacks=[resumed])  # finished: resumes, trains nothing
    return {"epoch_s": epoch_s, "save_s": save_s, "load_s": load[0], "fraction": (save_s + load[0]) / epoch_s}


def rescan_ratio(name: str, directory: Path, saves: int = 8) -> float:
    """Seconds of ``saves`` writes with pruning, the old way (two verifying scans) over the new way."""
    model = _model(name)
    tensors = {"model": dict(model.network.state_dict())}
    payload = {"rng": state.rng_state()}
    old, new = CheckpointStore(directory / "old"), CheckpointStore(directory / "new")
    timings = {"old": 0.0, "new": 0.0}
    for step in range(1, saves + 1):
        for kind, store in (("new", new), ("old", old)):  # interleaved
            begin = time.perf_counter()
            store.write(step, tensors, payload)
            if kind == "old":
                keep = {i.path for i in store.scan() if i.valid}  # what retention used to cost:
                keep = {i.path for i in store.scan() if i.valid and i.path in keep}  # two verifying scans
                store.prune({p for p in sorted(keep)[-5:]})
            else:
                store.prune({i.path for i in store.known()[:5]})
            timings[kind] += time.perf_counter() - begin
    return timings["old"] / timings["new"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("lenet5", "lenet_wide", "mlp800"):
            results[name] = measure(name, args.steps, Path(tmp))
            results[name]["rescan_ratio"] = rescan_ratio(name, Path(tmp) / f"rescan-{name}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
