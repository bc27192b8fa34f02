"""Where one LeNet-5 training step's CPU time goes, per Paddle operator: the profile behind docs/scale.md.

    python bench/step_profile.py                     # the registry's LeNet-5 (fused conv -> ReLU -> pool), batch 256
    python bench/step_profile.py --unfused --batch 64

A plain dygraph loop (forward, loss, backward, Adam; no hapi) under
``paddle.profiler`` on the CPU, after a warm-up. Prints a markdown table of
milliseconds per step and shares of the operators' total, largest first, then
one JSON line. The thread count is Paddle's (``OMP_NUM_THREADS``, 1 unless set).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

_ROW = re.compile(r"^(\S+(?: dygraph)?)\s+(\d+)\s+([\d.]+) / ")


def profile(batch: int, steps: int, unfused: bool) -> dict[str, Any]:
    import numpy as np
    import paddle
    import paddle.profiler as profiler

    from paddle_mnist_hapi import create_model
    from paddle_mnist_hapi.models.layers import FusedSequential

    paddle.set_device("cpu")
    paddle.seed(0)
    network = create_model("lenet5")
    if unfused:
        network.features.__class__ = paddle.nn.Sequential
    assert isinstance(network.features, FusedSequential) != unfused
    optimizer = paddle.optimizer.Adam(learning_rate=2e-3, parameters=network.parameters())
    loss_fn = paddle.nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.standard_normal((batch, 1, 28, 28)).astype("float32"))
    y = paddle.to_tensor(rng.integers(0, 10, (batch, 1)).astype("int64"))

    def step() -> None:
        loss_fn(network(x), y).backward()
        optimizer.step()
        optimizer.clear_grad()

    for _ in range(10):
        step()
    with tempfile.TemporaryDirectory() as tmp:
        trace = profiler.export_chrome_tracing(tmp)
        prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU], on_trace_ready=trace)
        prof.start()
        for _ in range(steps):
            step()
            prof.step()
        out = Path(tmp) / "summary.txt"
        saved, sys.stdout = sys.stdout, out.open("w")  # the profiler prints its tables; keep them for parsing
        try:
            prof.stop()
            prof.summary(sorted_by=profiler.SortedKeys.CPUTotal, op_detail=False, thread_sep=False, time_unit="ms")
        finally:
            sys.stdout.close()
            sys.stdout = saved
        text = out.read_text()
    operators = text.split("Operator Summary", 1)[1]
    rows = [(m.group(1), float(m.group(3)) / steps) for m in map(_ROW.match, operators.splitlines()) if m]
    total = sum(ms for _, ms in rows)
    return {
        "batch": batch,
        "steps": steps,
        "model": "lenet5 unfused" if unfused else "lenet5",
        "operator_ms_per_step": round(total, 3),
        "operators": [{"name": name, "ms": round(ms, 3), "share": round(ms / total, 4)} for name, ms in rows],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--unfused", action="store_true", help="paddle.nn.Sequential instead of FusedSequential")
    args = parser.parse_args(argv)
    result = profile(args.batch, args.steps, args.unfused)
    print(f"| operator ({result['model']}, batch {args.batch}) | ms per step | share |\n|---|---:|---:|")
    for row in result["operators"]:
        if row["share"] >= 0.005:
            print(f"| {row['name']} | {row['ms']:.2f} | {row['share']:.1%} |")
    print(f"| all operators | {result['operator_ms_per_step']:.2f} | 100% |")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
