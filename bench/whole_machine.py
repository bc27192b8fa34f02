"""Whole machine against whole machine: the library's fastest plan on all cores vs PyTorch on all cores.

    python bench/whole_machine.py                  # the grid, 3 interleaved rounds (about 5 minutes on 2 cores)
    python bench/whole_machine.py --quick          # 1 round, fewer steps
    python bench/whole_machine.py --to99           # also the recipe's seconds to 99% with --parallel auto
                                                   # and --batch-size 64 x cores (2x1 and 128 on 2 cores)
    python bench/whole_machine.py --record         # and make the fastest plan this machine's --parallel auto

Configurations, each measured in its own process whose thread settings are in
its environment before ``import paddle`` / ``import torch``:

- Paddle, the library's training path (``paddle.Model.fit`` on
  ``InMemoryLoader``, LeNet-5 from the registry, Adam), one process with
  1..N threads (``OMP_NUM_THREADS``), batch 64 and 256;
- the same on P processes × T threads under ``paddle.distributed.launch``
  (gloo) for every P > 1 dividing the N cores, T = N / P, at the same global
  batches (64 and 256, so 64 / P per rank), and at 64 per rank (what the
  recipe's ``--parallel auto`` trains with its default ``--batch-size 64``);
- PyTorch 2.13 eager (``bench/torch_loop.py``), N threads, batch 64 and 256
  (and 1 thread, as a reference only: PyTorch's N-thread run collapses when
  another process holds a core, and this row shows it).

Every configuration runs ``--steps`` steps after a warm-up, timed inside the
process (rank 0 under the launcher; the gradient all-reduce keeps the ranks in
step). The rounds interleave all configurations in a rotating order, so load
from other processes hits them alike; the median over rounds is reported.
Prints one JSON object (and writes it with ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve()
BATCHES = (64, 256)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def grid(ncores: int) -> list[dict[str, Any]]:
    """Every configuration measured on ``ncores`` cores."""
    configs: list[dict[str, Any]] = []
    for batch in BATCHES:
        for threads in range(1, ncores + 1):
            configs.append({"framework": "paddle", "procs": 1, "threads": threads, "batch": batch})
        for procs in range(2, ncores + 1):
            if ncores % procs == 0 and batch % procs == 0:
                configs.append({"framework": "paddle", "procs": procs, "threads": ncores // procs, "batch": batch})
        configs.append({"framework": "torch", "procs": 1, "threads": ncores, "batch": batch})
        if ncores > 1:  # a reference, not a whole-machine candidate: far above the N-thread run = the machine is busy
            configs.append({"framework": "torch", "procs": 1, "threads": 1, "batch": batch})
    for procs in range(2, ncores + 1):  # 64 images per process: what `--parallel auto` starts processes for
        if ncores % procs == 0 and 64 * procs not in BATCHES:
            configs.append({"framework": "paddle", "procs": procs, "threads": ncores // procs, "batch": 64 * procs})
    return configs


def name(config: dict[str, Any]) -> str:
    return f"{config['framework']} {config['procs']}x{config['threads']} b{config['batch']}"


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "bench"), env.get("PYTHONPATH")]))
    env["PYTHONWARNINGS"] = "ignore"
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def run_config(config: dict[str, Any], steps: int, warmup: int, timeout: float = 900) -> dict[str, Any] | None:
    """One configuration measured in a fresh process (or ``procs`` of them): ``img_per_s`` and the worker's details."""
    per_rank = config["batch"] // config["procs"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        worker = [str(HERE), "worker", "--framework", config["framework"], "--batch", str(per_rank)]
        worker += ["--steps", str(steps), "--warmup", str(warmup), "--threads", str(config["threads"])]
        worker += ["--out", str(out)]
        if config["procs"] > 1:
            command = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(config["procs"])]
            command += ["--log_dir", str(Path(tmp) / "logs"), *worker]
        else:
            command = [sys.executable, *worker]
        proc = subprocess.run(
            command, env=_env(config["threads"]), capture_output=True, text=True, timeout=timeout, cwd=tmp
        )
        if proc.returncode != 0 or not out.is_file():
            logs = "".join(p.read_text()[-1500:] for p in sorted(Path(tmp).glob("logs/workerlog.*")))
            sys.stderr.write(f"whole_machine: {name(config)} failed ({proc.returncode}): {proc.stderr[-1500:]}{logs}\n")
            return None
        result = json.loads(out.read_text())
    return {**result, "img_per_s": result["images"] / result["seconds"]}


# ----------------------------------------------------------------------------- inside the measured process


def _paddle_worker(batch: int, steps: int, warmup: int) -> dict[str, Any]:
    import paddle

    from paddle_mnist_hapi import create_model, specs_for
    from paddle_mnist_hapi.data import MNIST, InMemoryLoader

    paddle.set_device("cpu")
    paddle.seed(0)
    network = create_model("lenet5")
    model = paddle.Model(network, *specs_for("lenet5"))
    optimizer = paddle.optimizer.Adam(learning_rate=2e-3, parameters=network.parameters())
    model.prepare(optimizer, paddle.nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    loader = InMemoryLoader(MNIST("train"), batch_size=batch)
    marks: dict[str, float] = {}

    class Clock(paddle.callbacks.Callback):
        def on_train_batch_end(self, step: int, logs: dict[str, Any] | None = None) -> None:
            if step == warmup - 1:
                marks["start"], marks["cpu_start"] = time.perf_counter(), time.process_time()
            marks["end"], marks["cpu_end"] = time.perf_counter(), time.process_time()

    model.fit(loader, epochs=1, verbose=0, num_iters=warmup + steps, callbacks=[Clock()])
    nranks = paddle.distributed.ParallelEnv().nranks
    result = {"images": steps * batch * nranks, "seconds": marks["end"] - marks["start"], "ranks": nranks}
    # CPU seconds of this process (all its threads) per image it trained: what the configuration costs in work,
    # much less sensitive to other processes than the wall clock
    result["cpu_s_per_image"] = (marks["cpu_end"] - marks["cpu_start"]) / (steps * batch)
    if nranks > 1:  # one step's gradient all-reduce: every gradient in one fused buffer, as DataParallel does
        grads = paddle.zeros([sum(int(p.size) for p in network.parameters())])
        for _ in range(5):
            paddle.distributed.all_reduce(grads)
        started = time.perf_counter()
        for _ in range(50):
            paddle.distributed.all_reduce(grads)
        result["allreduce_ms"] = (time.perf_counter() - started) / 50 * 1e3
        result["allreduce_floats"] = int(grads.size)
    return result


def _torch_worker(batch: int, steps: int, warmup: int, threads: int) -> dict[str, Any]:
    from torch_loop import TorchLoop

    loop = TorchLoop(threads=threads, batch_size=batch)
    loop.run(warmup)
    started, cpu_started = time.perf_counter(), time.process_time()
    loop.run(steps)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    threads = loop.torch.get_num_threads()
    return {"images": steps * batch, "seconds": seconds, "threads": threads, "cpu_s_per_image": cpu / (steps * batch)}


def _to99_worker(plan: str, out: str, batch_size: int = 64) -> dict[str, Any]:
    """The default recipe with ``parallel=plan`` (already under the launcher when it has several processes)."""
    import paddle

    from paddle_mnist_hapi import recipe

    started = time.perf_counter()
    evaluations: list[dict[str, float]] = []

    class Clock(paddle.callbacks.Callback):
        def on_eval_end(self, logs: dict[str, Any] | None = None) -> None:
            evaluations.append({"seconds": time.perf_counter() - started, "acc": float((logs or {}).get("acc", 0.0))})

    default_callbacks = recipe.default_callbacks
    recipe.default_callbacks = lambda config, output: [*default_callbacks(config, output), Clock()]
    summary = recipe.train(recipe.TrainConfig(output=out, verbose=0, parallel=plan, batch_size=batch_size))
    reached = next((e["seconds"] for e in evaluations if e["acc"] >= 0.99), None)
    result = {"seconds_to_99": reached, "evaluations": evaluations, "test_acc": summary["test_acc"], "plan": plan}
    return {**result, "batch_size": batch_size}


def seconds_to_99(plan: str, batch_size: int = 64) -> dict[str, Any] | None:
    """The default recipe on ``plan`` (``"PxT"``): seconds from the start of ``train`` in rank 0 to test top-1 ≥ 99%,
    and the wall time of the whole command (process start-up and the launcher included)."""
    procs, threads = (int(x) for x in plan.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        worker = [str(HERE), "to99-worker", "--plan", plan, "--run-dir", str(Path(tmp) / "run"), "--out", str(out)]
        worker += ["--batch", str(batch_size)]
        command = [sys.executable, *worker]
        if procs > 1:
            command = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(procs)]
            command += ["--log_dir", str(Path(tmp) / "logs"), *worker]
        started = time.perf_counter()
        proc = subprocess.run(command, env=_env(threads), capture_output=True, text=True, timeout=1800, cwd=tmp)
        wall = time.perf_counter() - started
        if proc.returncode != 0 or not out.is_file():
            logs = "".join(p.read_text()[-1500:] for p in sorted(Path(tmp).glob("logs/workerlog.*")))
            sys.stderr.write(f"whole_machine: to99 {plan} failed ({proc.returncode}): {proc.stderr[-1500:]}{logs}\n")
            return None
        return {**json.loads(out.read_text()), "wall_seconds": wall}


def _write_rank0(path: str, result: dict[str, Any]) -> None:
    if os.environ.get("PADDLE_TRAINER_ID", "0") == "0":
        Path(path).write_text(json.dumps(result))


# ----------------------------------------------------------------------------- the run


def measure(rounds: int, steps64: int, to99: bool, only: str | None = None) -> dict[str, Any]:
    ncores = cores()
    configs = [c for c in grid(ncores) if only is None or only in name(c)]
    runs: dict[str, list[float]] = {name(c): [] for c in configs}
    allreduce: dict[str, list[float]] = {name(c): [] for c in configs}
    cpu: dict[str, list[float]] = {name(c): [] for c in configs}
    load_before = os.getloadavg()
    for round_ in range(rounds):
        rotation = round_ % max(1, len(configs))
        for config in configs[rotation:] + configs[:rotation]:
            steps = max(10, steps64 * 64 // config["batch"])  # about the same images per configuration
            measured = run_config(config, steps=steps, warmup=max(5, steps // 5))
            speed = measured["img_per_s"] if measured else None
            if measured:
                runs[name(config)].append(speed)
                cpu[name(config)].append(measured["cpu_s_per_image"] * 1e6)
                if "allreduce_ms" in measured:
                    allreduce[name(config)].append(measured["allreduce_ms"])
            sys.stderr.write(f"whole_machine: round {round_ + 1}: {name(config)}: {speed or 0:,.0f} img/s\n")
    table = {
        name(c): {**c, "img_per_s": statistics.median(runs[name(c)]) if runs[name(c)] else None, "runs": runs[name(c)]}
        for c in configs
    }
    for key, values in cpu.items():
        if values:  # CPU microseconds per image of one process (rank 0 under the launcher)
            table[key]["cpu_us_per_image"] = statistics.median(values)
    for key, values in allreduce.items():
        if values:  # one all-reduce of every gradient (fused), milliseconds
            table[key]["allreduce_ms"] = statistics.median(values)

    def best(framework: str) -> dict[str, Any] | None:
        rows = [row for row in table.values() if row["framework"] == framework and row["img_per_s"]]
        if framework == "torch":  # PyTorch on the whole machine: as many threads as cores
            rows = [row for row in rows if row["threads"] == ncores]
        return max(rows, key=lambda row: row["img_per_s"]) if rows else None

    library, torch = best("paddle"), best("torch")
    result: dict[str, Any] = {
        "cores": ncores,
        "rounds": rounds,
        "configs": table,
        "whole_machine_img_per_s": library["img_per_s"] if library else None,
        "whole_machine_config": {k: library[k] for k in ("procs", "threads", "batch")} if library else None,
        "torch_whole_machine_img_per_s": torch["img_per_s"] if torch else None,
        "torch_whole_machine_config": {k: torch[k] for k in ("procs", "threads", "batch")} if torch else None,
    }
    result["whole_machine_vs_torch"] = library["img_per_s"] / torch["img_per_s"] if library and torch else None
    if to99:
        from paddle_mnist_hapi.parallel import MIN_BATCH_PER_PROCESS, resolve_plan

        # the recipe on every core: `--parallel auto` with the smallest step batch that lets it start a process
        # per core (the default 64 stays in one process on 2 cores; the learning rate is the recipe's)
        batch = MIN_BATCH_PER_PROCESS * ncores
        plan = str(resolve_plan("auto", cores=ncores, batch_size=batch))
        result["to99"] = seconds_to_99(plan, batch)
        result["whole_machine_seconds_to_99"] = (result["to99"] or {}).get("seconds_to_99")
        result["whole_machine_to99_config"] = {"plan": plan, "batch_size": batch}
    result["load_average_before"] = [round(x, 2) for x in load_before]
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "worker", "to99-worker"])
    parser.add_argument("--quick", action="store_true", help="run: 1 round, fewer steps")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200, help="run: steps at batch 64 (fewer at batch 256)")
    parser.add_argument("--to99", action="store_true", help="run: also the recipe's seconds to 99%% with auto")
    parser.add_argument("--only", default=None, help="run: only configurations whose name contains this")
    parser.add_argument(
        "--record", action="store_true", help="run: make the fastest Paddle plan this machine's --parallel auto"
    )
    parser.add_argument("--out", default=None, help="where the JSON goes (workers: rank 0's result)")
    parser.add_argument("--framework", choices=["paddle", "torch"], default="paddle")
    parser.add_argument("--batch", type=int, default=64, help="worker: per-rank batch; to99-worker: --batch-size")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plan", default="1x1", help="to99-worker: PxT")
    parser.add_argument("--run-dir", default=None, help="to99-worker: the recipe's output directory")
    args = parser.parse_args(argv)
    if args.mode == "worker":
        if args.framework == "torch":
            result = _torch_worker(args.batch, args.steps, args.warmup, args.threads)
        else:
            result = _paddle_worker(args.batch, args.steps, args.warmup)
        _write_rank0(args.out, result)
        return 0
    if args.mode == "to99-worker":
        _write_rank0(args.out, _to99_worker(args.plan, args.run_dir, args.batch))
        return 0
    rounds, steps = (1, 60) if args.quick else (args.rounds, args.steps)
    result = measure(rounds, steps, args.to99, args.only)
    if args.record and result["whole_machine_config"]:
        from paddle_mnist_hapi.parallel import Plan, record_machine_plan

        config = result["whole_machine_config"]
        result["recorded"] = str(record_machine_plan(result["cores"], Plan(config["procs"], config["threads"])))
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(json.dumps(result))  # one line: bench/run.py reads the last line
    return 0


if __name__ == "__main__":
    sys.exit(main())
