"""Runs, kills and compares the resume matrix's training processes (tests/scripts/resume_cell.py).

Every child starts in a session of its own and is killed as a process group,
as a scheduler does: Paddle's DataLoader workers outlive a SIGKILLed trainer.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import secrets
import signal
import subprocess
import time
from pathlib import Path

import numpy as np

from conftest import PYTHON, ROOT

SCRIPT = str(ROOT / "tests/scripts/resume_cell.py")
# a kill point is drawn from this seed (and the cell's name); set RESUME_MATRIX_SEED to replay a failure
SEED = int(os.environ.get("RESUME_MATRIX_SEED") or secrets.randbelow(1 << 30))
# flags that change how a run checkpoints, not what it trains: runs that differ only in them share a reference
CADENCE = {"--every-n-steps", "--sleep", "--max-time", "--raise-at", "--hold-at", "--agree-seconds", "--signals"}


def env() -> dict[str, str]:
    variables = dict(os.environ)
    variables["PYTHONPATH"] = os.pathsep.join([str(ROOT), variables.get("PYTHONPATH", "")])
    variables["PYTHONWARNINGS"] = "ignore:No ccache found:UserWarning"
    return variables


def command(save_dir: Path, out: Path, args: list[str], launch_dir: Path | None = None) -> list[str]:
    cmd = [SCRIPT, "--save-dir", str(save_dir), "--out", str(out), *args]
    if launch_dir is None:
        return [PYTHON, *cmd]
    launch = [PYTHON, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(launch_dir)]
    return [*launch, *cmd]


def start(save_dir: Path, out: Path, args: list[str], launch_dir: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        command(save_dir, out, args, launch_dir), env=env(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    """Wait for a child; kill its whole group whatever happens (workers included)."""
    try:
        _, stderr = proc.communicate(timeout=timeout)
    finally:
        kill_group(proc)
    return proc.returncode, stderr or ""


def run(save_dir: Path, out: Path, args: list[str], launch_dir: Path | None = None, expect: int = 0) -> dict:
    code, stderr = finish(start(save_dir, out, args, launch_dir))
    logs = "".join(p.read_text()[-3000:] for p in sorted(launch_dir.glob("workerlog.*"))) if launch_dir else ""
    assert code == expect, f"exit {code}\n{stderr[-3000:]}{logs}"
    return result(out) if expect == 0 and launch_dir is None else {}


def result(out: Path) -> dict:
    return json.loads(Path(f"{out}.json").read_text())


def records(out: Path) -> list[dict]:
    path = Path(f"{out}.batches.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for_step(proc: subprocess.Popen, out: Path, step: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not any(r.get("step", 0) >= step for r in records(out)):
        assert proc.poll() is None, f"the run ended before step {step}: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, f"step {step} not reached in time"
        time.sleep(0.005)


def wait_for_checkpoint(proc: subprocess.Popen, save_dir: Path, step: int, timeout: float = 180) -> None:
    """Until ``save_dir`` holds a checkpoint at global step ``step`` or later; the run must still be going."""
    deadline = time.monotonic() + timeout
    while not any(int(c.name[5:]) >= step for c in save_dir.glob("ckpt-*")):
        assert proc.poll() is None, "training ended before the kill point"
        assert time.monotonic() < deadline, "kill point not reached in time"
        time.sleep(0.02)


def kill_step(name: str, first: int, total: int) -> int:
    """A random global step in [first, total - 1] for this cell, from the session's seed."""
    return random.Random(f"{SEED}/{name}").randint(first, total - 1)


def flag(args: list[str], name: str, default: str | None = None) -> str | None:
    """The value that follows ``name`` in a cell's arguments."""
    return args[args.index(name) + 1] if name in args else default


def first_checkpoint(args: list[str], steps_per_epoch: int) -> int:
    """The global step of the first checkpoint ResumeCkpt writes for a cell: ``--every-n-steps`` moves to the next
    optimizer update (``--accumulate``) that is not an epoch's last batch; every epoch's end is saved anyway."""
    every, accumulate, due = int(flag(args, "--every-n-steps", "0")), int(flag(args, "--accumulate", "1")), False
    for step in itertools.count(1):
        in_epoch = (step - 1) % steps_per_epoch + 1
        due = due or (every > 0 and step % every == 0)
        if in_epoch == steps_per_epoch or (due and in_epoch % accumulate == 0):
            return step
    raise AssertionError("unreachable")


def release(out: Path) -> None:
    """Let a run started with ``--hold-at`` go on."""
    Path(f"{out}.release").touch()


def kill_while_held(proc: subprocess.Popen, save_dir: Path, records_of: Path, step: int, tree: bool = False) -> int:
    """SIGKILL a run that holds after global batch ``step`` (``--hold-at``) once it has written a checkpoint:
    its process group (``tree``: a launcher and everything below it), whatever happens. Asserts it died of
    the signal, not of anything else, and returns the global step of the newest checkpoint it left."""
    try:
        wait_for_step(proc, records_of, step)
        wait_for_checkpoint(proc, save_dir, 1, timeout=120)
    finally:
        (kill_tree if tree else kill_group)(proc)
    code, stderr = finish(proc)
    assert code == -signal.SIGKILL, f"exit {code}, not SIGKILL\n{stderr[-2000:]}"
    return int(max(save_dir.glob("ckpt-*")).name[5:])


def assert_resumed(done: dict, step: int, note: str) -> None:
    """The re-run resumed from the checkpoint at global step ``step`` (> 0), not from the start."""
    report = done["report"]
    assert step > 0 and report["resumed_from"] and report["resumed_from"].endswith(f"ckpt-{step:09d}"), note
    assert report["global_step"] == step, note


def reference_key(args: list[str]) -> tuple[str, ...]:
    key, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in CADENCE:
            skip = True
        else:
            key.append(arg)
    return tuple(key)


class References:
    """Uninterrupted runs, one per training setup, shared by the cells (and by the test modules) of a session."""

    def __init__(self, base: Path) -> None:
        self.base, self.runs = base, {}

    def get(self, args: list[str]) -> Path:
        key = reference_key(args)
        if key not in self.runs:
            directory = self.base / f"ref{len(self.runs)}"
            run(directory / "ckpt", directory / "out", list(key))
            self.runs[key] = directory / "out"
        return self.runs[key]


def arrays(out: Path) -> dict[str, np.ndarray]:
    with np.load(f"{out}.npz") as data:
        return {k: data[k] for k in data.files}


def by_step(out: Path) -> tuple[dict[int, dict], dict[int, dict]]:
    """The batch and evaluation records a run left, the last written winning (a re-run redoes unsaved steps)."""
    batches, evals = {}, {}
    for record in records(out):
        record = {k: v for k, v in record.items() if k != "pid"}
        if "eval" in record:
            evals[record["eval"]] = record
        else:
            batches[record["step"]] = record
    return batches, evals


def board(directory: Path) -> dict[str, list[tuple[int, float]]]:
    from visualdl import LogReader

    # the newest log is the run's (a run killed before its first checkpoint leaves an older file; the board
    # shows the newest, and VisualDL names each run's file by its start time)
    file = max((p for p in directory.iterdir() if p.is_file()), key=lambda p: p.name)
    reader = LogReader(file_path=str(file))
    tags = [t for t in reader.get_tags().get("scalar", []) if "per_sec" not in t and "time" not in t]
    return {tag: [(r.id, r.value) for r in reader.get_data("scalar", tag)] for tag in tags}


def assert_same_run(out: Path, ref: Path, note: str = "", tensor_state: bool = True) -> None:
    """Bit for bit: weights, optimizer, LR, evaluate(), every batch's digest/loss/acc/lr, every evaluation,
    the canary's counters and (with ``tensor_state``) tensor state, and (when written) metrics.jsonl and the board.
    """
    got, want = result(out), result(ref)
    context = f"{note} (RESUME_MATRIX_SEED={SEED})"
    a, b = arrays(out), arrays(ref)
    assert sorted(a) == sorted(b), context
    differ = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not differ, f"{differ[:5]} differ {context}"
    assert got["evaluate"] == want["evaluate"], context
    counters = ("total", "evals", "digest_sum") if tensor_state else ("total", "evals")
    assert [got[k] for k in counters] == [want[k] for k in counters], context
    assert by_step(out) == by_step(ref), f"per-batch or evaluation records differ {context}"
    if Path(f"{ref}.metrics.jsonl").exists():
        assert Path(f"{out}.metrics.jsonl").read_bytes() == Path(f"{ref}.metrics.jsonl").read_bytes(), context
    if Path(f"{ref}.vdl").exists():
        assert board(Path(f"{out}.vdl")) == board(Path(f"{ref}.vdl")), context


def assert_no_batch_repeated(out: Path, resumed_step: int, total: int) -> None:
    """The re-run trained exactly the batches after the checkpoint, once each."""
    rerun_pid = result(out)["pid"]
    steps = [r["step"] for r in records(out) if r["pid"] == rerun_pid and "step" in r]
    assert steps == list(range(resumed_step + 1, total + 1)), f"re-run trained {steps} (RESUME_MATRIX_SEED={SEED})"


def descendants(pid: int) -> list[int]:
    """The processes started under ``pid`` (children, grandchildren ...), read from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def kill_tree(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal a launcher and everything it started (workers may sit in sessions of their own)."""
    below = descendants(proc.pid)
    kill_group(proc, sig)
    for pid in below:
        for send in (lambda p: os.killpg(os.getpgid(p), sig), lambda p: os.kill(p, sig)):
            try:
                send(pid)
            except (ProcessLookupError, PermissionError):
                pass
