"""What ResumeCkpt costs, synchronous and asynchronous side by side: ``python bench/checkpoint_cost.py``.

Prints one JSON object. For LeNet-5 (62k parameters) and an MLP 784-3072-3072-10
(11.9 M parameters, 143 MB with Adam's moments), in one process, on real MNIST,
batch 64, Adam:

- ``stall_s``: seconds the training thread spends in one save (median over the
  saves of a fit): with ``async_save=False`` the whole save, with the default
  background writer the snapshot and any wait for the write before (``wait_s``,
  when the disk is slower than the checkpoints come; ``snapshot_s`` the rest);
  ``stall_ratio`` is async over sync (the issue's goal: <= 0.10);
- ``write_s``: seconds of one write (serialise, hash, fsync, rename, retention),
  wherever it runs;
- ``cost``: fit time with ``ResumeCkpt(every_n_steps=N)`` over the same fit
  without it, minus 1, for ``sync`` and ``async`` (``--every``), from the fastest
  of ``--rounds`` interleaved rounds whose order rotates (on a shared machine the
  least disturbed); ``cost_cpu``: the same from the process CPU time, median of
  the rounds (other processes' load does not enter it, the writer's work does);
- ``breakdown_ms``: where one save's time goes, phase by phase (the library's own
  steps called one after the other, synchronously; medians).

The machine may be shared: the ratios, measured side by side, are what to compare.

    python bench/checkpoint_cost.py                    # both models, a few minutes on 2 cores
    python bench/checkpoint_cost.py --models lenet5 --steps 60 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paddle

from paddle_mnist_hapi import create_model, specs_for
from paddle_mnist_hapi.callbacks import ResumeCkpt
from paddle_mnist_hapi.checkpoint import retention, state
from paddle_mnist_hapi.checkpoint import store as store_module
from paddle_mnist_hapi.checkpoint.store import CheckpointStore
from paddle_mnist_hapi.checkpoint.writer import CheckpointWriter, all_finite
from paddle_mnist_hapi.data import MNIST, InMemoryLoader

BATCH = 64
MODELS = {"lenet5": "LeNet-5", "mlp3072": "MLP 784-3072-3072-10"}
MODES = ("none", "sync", "async")


def _model(name: str) -> paddle.Model:
    paddle.seed(0)
    if name == "mlp3072":
        network = create_model("mlp", hidden_sizes=(3072, 3072), activation="relu")
    else:
        network = create_model(name)
    model = paddle.Model(network, *specs_for("lenet5"))
    model.prepare(
        paddle.optimizer.Adam(1e-3, parameters=network.parameters()),
        paddle.nn.CrossEntropyLoss(),
        paddle.metric.Accuracy(),
    )
    return model


class _Timed:
    """Seconds the training thread spends in each save of a ResumeCkpt, and each write's duration."""

    def __init__(self, ckpt: ResumeCkpt) -> None:
        self.stalls: list[float] = []
        self.waits: list[float] = []  # of each stall, the time spent waiting for the write before
        self.writes: list[float] = []
        flush, submit, join = ckpt._flush, ckpt._writer.submit, ckpt._writer.join
        waited = [0.0]

        def timed_join() -> None:
            begin = time.perf_counter()
            join()
            waited[0] += time.perf_counter() - begin

        def timed_flush(*args: Any, **kwargs: Any) -> None:
            pending, begin, waited[0] = ckpt._pending, time.perf_counter(), 0.0
            flush(*args, **kwargs)
            if pending:
                self.stalls.append(time.perf_counter() - begin)
                self.waits.append(waited[0])

        def timed_submit(write: Callable[[], Any], name: str) -> None:
            def timed_write() -> None:
                begin = time.perf_counter()
                write()
                self.writes.append(time.perf_counter() - begin)

            submit(timed_write, name)

        ckpt._flush, ckpt._writer.submit, ckpt._writer.join = timed_flush, timed_submit, timed_join  # type: ignore


def _fit(model: paddle.Model, loader: InMemoryLoader, mode: str, every: int, directory: Path) -> dict[str, Any]:
    callbacks, timed = [], None
    if mode != "none":
        ckpt = ResumeCkpt(directory, every_n_steps=every, async_save=mode == "async")
        timed = _Timed(ckpt)
        callbacks.append(ckpt)
    begin, cpu = time.perf_counter(), time.process_time()
    model.fit(loader, epochs=1, verbose=0, callbacks=callbacks)  # the end of fit waits for the last write
    seconds, cpu = time.perf_counter() - begin, time.process_time() - cpu
    return {"seconds": seconds, "cpu": cpu, "stalls": timed.stalls if timed else [],
            "waits": timed.waits if timed else [], "writes": timed.writes if timed else []}  # fmt: skip


def measure(name: str, steps: int, rounds: int, every: int, directory: Path) -> dict[str, Any]:
    """Interleaved rounds of the same fit without ResumeCkpt, with a synchronous and with an asynchronous one."""
    loader = InMemoryLoader(MNIST("train", limit=steps * BATCH), batch_size=BATCH)
    model = _model(name)
    model.fit(loader, epochs=1, verbose=0)  # warm-up
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for round_ in range(rounds):
        order = MODES[round_ % 3 :] + MODES[: round_ % 3]
        for mode in order:
            runs[mode].append(_fit(model, loader, mode, every, directory / f"{mode}-{round_}"))
    out: dict[str, Any] = {"parameters": sum(int(p.size) for p in model.network.parameters()), "steps": steps}
    out["every_n_steps"], out["rounds"] = every, rounds
    for mode in ("sync", "async"):
        stalls = [s for run in runs[mode] for s in run["stalls"]]
        waits = [s for run in runs[mode] for s in run["waits"]]
        writes = [s for run in runs[mode] for s in run["writes"]]
        cpu = [run["cpu"] / none["cpu"] for run, none in zip(runs[mode], runs["none"], strict=True)]
        fastest = min(run["seconds"] for run in runs[mode]) / min(run["seconds"] for run in runs["none"])
        out[mode] = {"stall_s": statistics.median(stalls), "wait_s": statistics.median(waits),
                     "snapshot_s": statistics.median(s - w for s, w in zip(stalls, waits, strict=True)),
                     "write_s": statistics.median(writes),
                     "saves_per_fit": len(stalls) / rounds, "cost": fastest - 1,
                     "cost_cpu": statistics.median(cpu) - 1}  # fmt: skip
    out["fit_s"] = {mode: min(run["seconds"] for run in runs[mode]) for mode in MODES}
    out["stall_ratio"] = out["async"]["stall_s"] / out["sync"]["stall_s"]
    return out


def breakdown(name: str, directory: Path, saves: int = 15) -> dict[str, float]:
    """Milliseconds of each phase of a save (median of ``saves``), the library's steps called in sequence."""
    model = _model(name)
    loader = InMemoryLoader(MNIST("train", limit=4 * BATCH), batch_size=BATCH)
    model.fit(loader, epochs=1, verbose=0)  # the optimizer has its moments
    network, optimizer = model.network, model._optimizer
    store, writer = CheckpointStore(directory), CheckpointWriter(background=False)
    phases: dict[str, list[float]] = {}
    inside: dict[str, float] = {}  # seconds inside store.write, by part
    parts = {  # what store.write calls, timed in place
        "write_safetensors": "  of which serialise + hash the tensor files (from host memory)",
        "_fsync_all": "  of which fsync every file and the directory, at once",
        "_fsync_dir": "  of which fsync the run directory after the rename",
    }
    originals = {attr: getattr(store_module, attr) for attr in parts}

    def timing(attr: str) -> Callable[..., Any]:
        def timed(*args: Any) -> Any:
            begin = time.perf_counter()
            try:
                return originals[attr](*args)
            finally:
                inside[parts[attr]] = inside.get(parts[attr], 0.0) + time.perf_counter() - begin

        return timed

    clock: list[float] = []

    def lap(phase: str) -> None:
        clock.append(time.perf_counter())
        phases.setdefault(phase, []).append(clock[-1] - clock[-2])

    epoch_rng = state.rng_state()  # taken when the epoch began, not at the save
    for attr in parts:
        setattr(store_module, attr, timing(attr))
    try:
        for step in range(1, saves + 1):
            clock[:] = [time.perf_counter()]
            groups = state.training_tensors(network, optimizer)
            lap("training thread: gather the tensors (state_dict, optimizer accumulators)")
            tensors = writer.snapshot(groups)
            lap("training thread: copy them to host memory")
            rng, metrics = state.rng_snapshot(), state.copy_metric_states(model._metrics)
            payload = {"epoch_rng": epoch_rng, "lr": state.lr_state(optimizer)}
            lap("training thread: RNG states, LR, metrics as copies")
            payload.update(rng=state.jsonable_rng(rng), metrics=state.jsonable_metric_states(metrics))
            lap("writer: RNG states and metrics as JSON-ready data")
            all_finite(tensors["model"])
            lap("writer: finite check (host copy)")
            inside.clear()
            store.write(step, tensors, payload)
            lap("writer: store.write (serialise, hash, state.json, manifest, fsync, rename)")
            for part, seconds in inside.items():
                phases.setdefault(part, []).append(seconds)
            store.prune(retention.kept(store.known(), 2, 1, None))
            lap("writer: retention (rename the oldest away; deleted beside the next write)")
    finally:
        for attr, original in originals.items():
            setattr(store_module, attr, original)
    medians = {phase: statistics.median(values) * 1e3 for phase, values in phases.items()}
    medians["total"] = sum(v for k, v in medians.items() if not k.startswith(" "))
    return medians


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--steps", type=int, default=None, help="steps per fit (default: 96 LeNet-5, 40 MLP)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--every", default="4", help="ResumeCkpt(every_n_steps=...); a list measures each")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"load_average_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            steps = args.steps or (96 if name == "lenet5" else 40)
            for n, every in enumerate(int(e) for e in args.every.split(",")):
                key = name if n == 0 else f"{name}_every{every}"
                results[key] = measure(name, steps, args.rounds, every, Path(tmp) / key)
            results[name]["breakdown_ms"] = breakdown(name, Path(tmp) / f"breakdown-{name}")
    results["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
