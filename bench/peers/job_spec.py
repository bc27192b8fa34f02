"""The job every stack runs, and what its scripts share (no framework imported here).

LeNet-5 on the first 2,048 real MNIST training images (normalized as the
library does, ``(x - 127.5) / 127.5``), batch 64, shuffled every epoch, 3 epochs
(96 steps), Adam with a polynomial schedule from 2e-3 to 2e-4 over the 96 steps,
loss and accuracy every batch, one thread, a checkpoint every 4 steps.

A job script is run as ``python bench/peers/<stack>_job.py --out OUT [--ckpt-dir DIR]``:
with ``--ckpt-dir`` it checkpoints every 4 steps into DIR and resumes from it
(the same script run again after a kill), without it it runs no checkpointing
at all. ``--rounds N`` instead times N pairs of fits (without, then with
checkpoints, each a fresh model and directory) after a warm-up. It appends one
line per trained batch to ``OUT.steps`` (flushed: a kill loses none) and writes
``OUT.npz`` (the final weights) and ``OUT.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

IMAGES = 2048
BATCH = 64
EPOCHS = 3
EVERY = 4
STEPS = EPOCHS * IMAGES // BATCH
LR, END_LR = 2e-3, 2e-4
SEED = 0


def polynomial_lr(step: int) -> float:
    """The learning rate after ``step`` optimizer steps (power 1, as Paddle's and Keras' PolynomialDecay)."""
    return (LR - END_LR) * (1 - min(step, STEPS) / STEPS) + END_LR


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", required=True, help="prefix of the files this run writes")
    parser.add_argument("--ckpt-dir", default=None, help="checkpoint every 4 steps here and resume from here")
    parser.add_argument("--data", default=None, help="the .npz the driver wrote (images NCHW float32, labels)")
    parser.add_argument("--rounds", type=int, default=0, help="time this many without/with pairs instead")
    return parser.parse_args()


def load_data(path: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 1, 28, 28)`` float32 and labels ``(N,)`` int64 from the driver's .npz."""
    with np.load(path) as data:
        return data["images"], data["labels"]


class Steps:
    """Appends ``{"pid", "step"}`` per trained batch to ``OUT.steps``, flushed."""

    def __init__(self, out: str) -> None:
        self.path, self.count = f"{out}.steps", 0
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)

    def done(self, step: int) -> None:
        self.count += 1
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"pid": os.getpid(), "step": step}) + "\n")


def finish(out: str, weights: dict[str, np.ndarray], **report: Any) -> None:
    np.savez(f"{out}.npz", **weights)
    Path(f"{out}.json").write_text(json.dumps(report))


def timing_report(pairs: list[tuple[float, ...]]) -> dict[str, Any]:
    """``pairs``: (seconds without, seconds with, CPU seconds without, CPU seconds with) of back-to-back fits.

    Images/s of the fastest fit of each kind (on a shared machine the fastest is the least disturbed), the
    cost of the checkpoints from them, ``cost_cpu``, the median of the pairs' process CPU time ratios
    (other processes' load does not enter it; the background writer's work does), and ``cost_paired``, the
    median of the pairs' wall time ratios with their quartiles (each pair ran back to back, so a slow
    minute of the machine enters both of its fits).
    """
    images = STEPS * BATCH
    without, with_ = min(p[0] for p in pairs), min(p[1] for p in pairs)
    cpu = sorted(p[3] / p[2] for p in pairs)  # its upper-middle pair, as in every earlier results.json
    wall = np.quantile([p[1] / p[0] for p in pairs], [0.25, 0.5, 0.75])
    return {"img_per_s_without": images / without, "img_per_s_with": images / with_, "cost": with_ / without - 1,
            "cost_cpu": cpu[len(cpu) // 2] - 1, "cost_paired": float(wall[1]) - 1,
            "cost_paired_quartiles": [float(wall[0]) - 1, float(wall[2]) - 1], "pairs_s": pairs}  # fmt: skip


def timed(fit: Any) -> tuple[float, float]:
    """Wall and process CPU seconds of ``fit()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fit()
    return time.perf_counter() - wall, time.process_time() - cpu
