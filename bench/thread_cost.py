"""What a second thread costs Paddle: CPU time and thread wake-ups per training step, 1..N threads.

    python bench/thread_cost.py                 # batch 256, 60 steps per thread count
    python bench/thread_cost.py --batch 64 --steps 200

Each thread count runs in its own process (``OMP_NUM_THREADS`` set before
``import paddle``): LeNet-5 from the registry, Adam, a plain dygraph loop over
in-memory batches (no hapi). Over the measured steps it counts the process's
CPU seconds (all threads) and the context switches of all its threads (from
``/proc/self/task/*/status``). Both are counts of work done, so they mean
something even on a loaded machine, unlike images per second. Prints one JSON
object. To see where the time goes, attach ``perf record -p PID`` to a worker
(``python bench/thread_cost.py worker --threads 2 --steps 100000 --ready FILE``
writes FILE once warm).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _context_switches() -> int:
    total = 0
    for status in Path("/proc/self/task").glob("*/status"):
        try:
            for line in status.read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
        except OSError:  # a thread that ended meanwhile
            continue
    return total


def worker(batch: int, steps: int, warmup: int, ready: str | None) -> dict[str, Any]:
    import paddle

    from paddle_mnist_hapi import create_model
    from paddle_mnist_hapi.data import MNIST

    paddle.set_device("cpu")
    paddle.seed(0)
    network = create_model("lenet5")
    optimizer = paddle.optimizer.Adam(2e-3, parameters=network.parameters())
    data = MNIST("train", limit=batch * 8)
    images = [paddle.to_tensor(data.images[i * batch : (i + 1) * batch]) for i in range(8)]
    labels = [paddle.to_tensor(data.labels[i * batch : (i + 1) * batch]) for i in range(8)]

    def step(i: int) -> None:
        loss = paddle.nn.functional.cross_entropy(network(images[i % 8]), labels[i % 8])
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        float(loss)

    for i in range(warmup):
        step(i)
    if ready:
        Path(ready).write_text(str(os.getpid()))
    switches, cpu, wall = _context_switches(), time.process_time(), time.perf_counter()
    for i in range(steps):
        step(i)
    return {
        "threads": int(os.environ.get("OMP_NUM_THREADS", "1")),
        "batch": batch,
        "steps": steps,
        "cpu_s_per_step": (time.process_time() - cpu) / steps,
        "wall_s_per_step": (time.perf_counter() - wall) / steps,
        "context_switches_per_step": (_context_switches() - switches) / steps,
        "os_threads": len(os.listdir("/proc/self/task")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "worker"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="run: only this thread count")
    parser.add_argument("--ready", default=None, help="worker: write this file (with the pid) once warm")
    args = parser.parse_args(argv)
    if args.mode == "worker":
        print(json.dumps(worker(args.batch, args.steps, args.warmup, args.ready)))
        return 0
    counts = [args.threads] if args.threads else list(range(1, (os.cpu_count() or 1) + 1))
    results = []
    for threads in counts:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        command = [sys.executable, __file__, "worker", "--batch", str(args.batch), "--steps", str(args.steps)]
        proc = subprocess.run([*command, "--warmup", str(args.warmup)], env=env, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            sys.stderr.write(f"thread_cost: {threads} thread(s) failed: {proc.stderr[-1500:]}\n")
            continue
        results.append(json.loads(lines[-1]))
    print(json.dumps({"runs": results, "load_average": [round(x, 2) for x in os.getloadavg()]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
