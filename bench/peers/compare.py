"""The same job with this library, PyTorch Lightning and Keras 3 (torch backend): speed and exactness.

    python bench/peers/compare.py                  # 3 kills and 5 timing rounds per stack (a few minutes)
    python bench/peers/compare.py --kills 1 --rounds 1 --stacks library,lightning

The job (``bench/peers/job_spec.py``): LeNet-5, 2,048 real MNIST training
images, batch 64, 3 epochs, Adam with a polynomial schedule, a checkpoint
every 4 steps, one thread. Each stack is used as its documentation shows:
``ResumeCkpt(dir, every_n_steps=4)``; Lightning's
``ModelCheckpoint(every_n_train_steps=4, save_last=True)`` and
``fit(ckpt_path="last")``; Keras' ``BackupAndRestore(dir, save_freq=4)``.

- ``peers_img_per_s``: ``fit``'s images/s without and with the checkpoints (the
  fastest of the fits of each kind: on a shared machine the least disturbed) and
  ``checkpoint_cost`` (with / without - 1, from those); ``checkpoint_cost_cpu``
  is the median over the pairs of the process CPU time ratio (others' load does
  not enter it); ``checkpoint_cost_paired`` the median over the pairs of the
  wall time ratio, with its quartiles, and ``pairs_s`` every pair's seconds
  (wall, wall with, CPU, CPU with). Fits run in pairs back to back in one
  process, each a fresh model; every stack in its own processes, the stacks'
  rounds interleaved.
- ``peers_exact``: each stack's script is started, SIGKILLed (its whole process
  group; the exit status must say the signal killed it) at a random step after a
  checkpoint exists, and run again to the end; its final weights are compared
  bit for bit with an uninterrupted run of the same script (run twice: a stack
  that is not deterministic by itself is reported as such). Also the batches the
  re-run trained against the ones still owed after its checkpoint.

The kill steps are drawn from ``--seed`` (printed; the same steps for every stack).
Needs ``bench/requirements.txt`` (torch, lightning, keras); a stack whose package
is missing is reported as unavailable. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from job_spec import IMAGES, STEPS, timing_report  # noqa: E402

STACKS = {  # script, a file or directory that exists once the stack has written a checkpoint, packages needed
    "library": ("library_job.py", "ckpt-*", ["paddle"]),
    "lightning": ("lightning_job.py", "last.ckpt", ["torch", "lightning"]),
    "keras": ("keras_job.py", "*", ["torch", "keras"]),
}
TIMEOUT = 900  # seconds: a hang guard, not a measurement


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", KERAS_BACKEND="torch", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _command(stack: str, out: Path, data: Path, *args: str) -> list[str]:
    return [sys.executable, str(HERE / STACKS[stack][0]), "--out", str(out), "--data", str(data), *args]


def _run(command: list[str]) -> None:
    proc = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:3])} exited {proc.returncode}:\n{proc.stderr[-3000:]}")


def _result(out: Path) -> dict[str, Any]:
    return json.loads(Path(f"{out}.json").read_text())


def _weights(out: Path) -> dict[str, np.ndarray]:
    with np.load(f"{out}.npz") as data:
        return {name: data[name] for name in data.files}


def _steps_done(out: Path) -> int:
    path = Path(f"{out}.steps")
    return path.read_text().count("\n") if path.exists() else 0


def available(stack: str) -> bool:
    return all(importlib.util.find_spec(package) is not None for package in STACKS[stack][2])


def write_data(path: Path) -> Path:
    """The first 2,048 real MNIST training images as the library normalizes them, for the other stacks."""
    from paddle_mnist_hapi.data import MNIST

    data = MNIST("train", limit=IMAGES)
    np.savez(path, images=data.images, labels=data.labels.reshape(-1))
    return path


def speed(stacks: list[str], data: Path, rounds: int, pairs: int, work: Path) -> dict[str, Any]:
    """Each stack's images/s without and with checkpoints; the stacks' processes interleaved round by round."""
    found: dict[str, list[tuple[float, ...]]] = {stack: [] for stack in stacks}
    versions: dict[str, Any] = {}
    for round_ in range(rounds):
        for stack in stacks[round_ % len(stacks) :] + stacks[: round_ % len(stacks)]:
            out = work / f"speed-{stack}-{round_}"
            _run(_command(stack, out, data, "--rounds", str(pairs)))
            report = _result(out)
            found[stack] += [tuple(pair) for pair in report["pairs_s"]]
            versions[stack] = {k: v for k, v in report.items() if k in ("paddle", "lightning", "keras", "torch")}
    out: dict[str, Any] = {}
    for stack, timings in found.items():
        report = timing_report(timings)
        out[stack] = {"without_checkpoints": report["img_per_s_without"], "with_checkpoints": report["img_per_s_with"],
                      "checkpoint_cost": report["cost"], "checkpoint_cost_cpu": report["cost_cpu"],
                      "checkpoint_cost_paired": report["cost_paired"],
                      "checkpoint_cost_paired_quartiles": report["cost_paired_quartiles"],
                      "pairs": len(timings), "pairs_s": report["pairs_s"], **versions[stack]}  # fmt: skip
    return out


def kill_and_rerun(stack: str, data: Path, step: int, work: Path) -> dict[str, Any]:
    """Start the stack's job, SIGKILL it at ``step`` or later once a checkpoint exists, run it again to the end."""
    ckpt, out = work / "ckpt", work / "run"
    work.mkdir(parents=True)
    command = _command(stack, out, data, "--ckpt-dir", str(ckpt))
    with open(work / "killed.log", "w") as log:
        proc = subprocess.Popen(command, env=_env(), start_new_session=True, stdout=log, stderr=log, cwd=ROOT)
        try:
            deadline = time.monotonic() + TIMEOUT
            while not (list(ckpt.glob(STACKS[stack][1])) and _steps_done(out) >= step):
                if proc.poll() is not None:
                    log_text = (work / "killed.log").read_text()[-3000:]
                    raise RuntimeError(f"{stack}: the run ended before step {step}: {log_text}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{stack}: step {step} not reached in time")
                time.sleep(0.002)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if proc.returncode != -signal.SIGKILL:
        raise RuntimeError(f"{stack}: the run was not ended by SIGKILL (exit status {proc.returncode})")
    killed_after = _steps_done(out)
    _run(command)
    report = _result(out)
    return {"killed_after": killed_after, "resumed_at": report["start_step"], "rerun_batches": report["trained"],
            "owed": STEPS - report["start_step"], "weights": _weights(out)}  # fmt: skip


def _difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    if a.keys() != b.keys():
        return float("inf")
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)))) for k in a)


def exactness(stacks: list[str], data: Path, kills: int, seed: int, work: Path) -> dict[str, Any]:
    steps = [random.Random(f"{seed}/{n}").randint(6, STEPS - 6) for n in range(kills)]
    out: dict[str, Any] = {}
    for stack in stacks:
        references = []
        for n in range(2):
            ref = work / f"{stack}-reference{n}"
            _run(_command(stack, ref / "run", data, "--ckpt-dir", str(ref / "ckpt")))
            references.append(_weights(ref / "run"))
        runs = [kill_and_rerun(stack, data, step, work / f"{stack}-kill{n}") for n, step in enumerate(steps)]
        for run in runs:
            run["max_abs_diff"] = _difference(run.pop("weights"), references[0])
        out[stack] = {
            "identical": sum(run["max_abs_diff"] == 0 for run in runs),
            "kills": len(runs),
            "max_abs_diff": max(run["max_abs_diff"] for run in runs),
            "rerun_trained_exactly_the_owed_batches": sum(run["rerun_batches"] == run["owed"] for run in runs),
            "deterministic": _difference(references[0], references[1]) == 0,
            "runs": runs,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stacks", default=",".join(STACKS))
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs per stack")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds per stack (2 pairs each)")
    parser.add_argument("--seed", type=int, default=None, help="draws the kill steps (default: random, printed)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else secrets.randbelow(1 << 30)
    wanted = args.stacks.split(",")
    stacks = [stack for stack in wanted if available(stack)]
    result: dict[str, Any] = {"seed": seed, "unavailable": [s for s in wanted if s not in stacks],
                              "load_average_before": os.getloadavg()[0]}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = write_data(work / "data.npz")
        result["peers_img_per_s"] = speed(stacks, data, args.rounds, 2, work) if args.rounds else {}
        result["peers_exact"] = exactness(stacks, data, args.kills, seed, work) if args.kills else {}
    speeds = result["peers_img_per_s"]
    if "library" in speeds and "lightning" in speeds:
        result["library_vs_lightning"] = speeds["library"]["with_checkpoints"] / speeds["lightning"]["with_checkpoints"]
    result["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
