"""Train on the whole machine: how many processes and threads, chosen by measurement.

Paddle 3.3's dygraph CPU kernels are single-threaded except the matrix
products (MKL, through Intel OpenMP): ``im2col``/``col2im``, pooling, bias
adds and ReLU run on one core whatever ``OMP_NUM_THREADS`` says, and the
convolution calls one small GEMM per image, too small to split across threads.
On the 2-core reference machine a second thread made LeNet-5 *slower*; a
second process (``paddle.distributed.launch``, gloo) made it faster, because
it parallelizes every kernel (docs/scale.md has the profile and numbers).

A :class:`Plan` is ``procs`` processes × ``threads`` threads each, written
``"PxT"``. :func:`resolve_plan` turns the recipe's ``parallel`` option into
one:

- ``"off"``: today's behaviour, nothing is changed (one process, or whatever
  ``paddle.distributed.launch`` started; Paddle's default of 1 thread);
- ``"auto"``: the fastest plan measured for this machine's core count: first
  the one ``python bench/whole_machine.py --record`` measured on this machine
  (``~/.cache/paddle_mnist_hapi/parallel_table.json``, or the file
  ``PADDLE_MNIST_PARALLEL_TABLE`` names), then :data:`MEASURED` (the project's
  measurements); for a core count measured nowhere, one process per core with
  one thread each, the plan that scaled here (every process keeps a
  single-threaded Paddle busy); then fewer processes if the step's batch
  would leave a process fewer than :data:`MIN_BATCH_PER_PROCESS` images (so
  the default recipe's 64-image steps stay in one process on 2 cores, and a
  ``--batch-size 128`` run takes both);
- ``"PxT"``, e.g. ``"2x1"`` or ``"1x2"``: exactly that.

The recipe records the plan in ``OUTPUT/parallel.json`` when a run starts; a
resumed run uses the recorded plan (``auto``) or must ask for the same one,
so a run is never continued with another number of processes (another data
order) or threads. Under a plan, ``--batch-size`` is the batch of one
optimizer step, all processes together: each of P processes trains
``batch_size / P`` images (:func:`per_process_batch`), so a plan changes how
fast the recipe runs, not what it computes (the same steps, learning rate and
schedule as one process). With ``"off"`` under your own
``paddle.distributed.launch`` it stays per process, as Paddle's launcher has it.

Examples:
    >>> from paddle_mnist_hapi.parallel import Plan, resolve_plan
    >>> resolve_plan("2x1")
    Plan(procs=2, threads=1)
    >>> resolve_plan("auto", cores=2, table={})
    Plan(procs=2, threads=1)
    >>> resolve_plan("auto", cores=16, table={})
    Plan(procs=16, threads=1)
    >>> resolve_plan("auto", cores=16, table={16: "8x2"})
    Plan(procs=8, threads=2)
    >>> str(Plan(1, 2)), Plan(1, 2).cores
    ('1x2', 2)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from paddle_mnist_hapi.errors import ConfigError

__all__ = ["ENV_TABLE", "MEASURED", "MIN_BATCH_PER_PROCESS", "PLAN_FILE", "Plan", "apply_threads", "launch_command"]
__all__ += ["launch_train"]
__all__ += ["machine_table_path", "needs_launch", "prepare_run", "read_machine_table", "record_machine_plan"]
__all__ += ["per_process_batch", "resolve_plan"]

PLAN_FILE = "parallel.json"
ENV_TABLE = "PADDLE_MNIST_PARALLEL_TABLE"


@dataclass(frozen=True)
class Plan:
    """``procs`` training processes (data-parallel ranks) × ``threads`` threads each.

    Examples:
        >>> Plan.parse("4x2"), Plan(4, 2).cores
        (Plan(procs=4, threads=2), 8)
    """

    procs: int = 1
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("procs", "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer. Received: {name}={value!r}")

    def __str__(self) -> str:
        return f"{self.procs}x{self.threads}"

    @property
    def cores(self) -> int:
        """Cores the plan keeps busy (``procs * threads``)."""
        return self.procs * self.threads

    @classmethod
    def parse(cls, text: str) -> Plan:
        """``"PxT"`` → ``Plan(P, T)``."""
        match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(text))
        if not match:
            raise ConfigError(
                "parallel must be 'off', 'auto' or PROCSxTHREADS such as '2x1' (2 processes, 1 thread each). "
                f"Received: parallel={text!r}"
            )
        return cls(int(match.group(1)), int(match.group(2)))


# The fastest plan per core count, measured with `python bench/whole_machine.py` (LeNet-5, the
# library's training path; docs/scale.md has the runs). 2 cores (Intel Xeon, make bench 2026-12-03): 2x1
# trained 1.56x one process at batch 256, 1x2 0.84x. Add a row when you measure another machine.
MEASURED: dict[int, Plan] = {1: Plan(1, 1), 2: Plan(2, 1)}

# The fewest images per process and step for which `auto` starts several processes. Measured on the 2-core
# machine (docs/scale.md): at 32 per process two processes trained 1.1-1.2x one process on the same 64-image
# steps, and the recipe's epochs took as long as in one process (the all-reduce, hapi's Python per step and
# the callbacks are paid per step); at 64 and 128 per process they trained 1.44x and 1.56x.
MIN_BATCH_PER_PROCESS = 64


def resolve_plan(
    parallel: str = "auto", cores: int | None = None, table: dict[int, str] | None = None, batch_size: int | None = None
) -> Plan | None:
    """The :class:`Plan` for a ``parallel`` option; None for ``"off"``.

    Args:
        parallel (str, optional): ``"off"``, ``"auto"`` or ``"PxT"``. Default: ``"auto"``.
        cores (int, optional): cores to plan for; None means the ones this
            process may run on (``os.sched_getaffinity``). Default: None.
        table (dict, optional): ``{cores: "PxT"}`` measured on this machine;
            None reads :func:`machine_table_path`. Default: None.
        batch_size (int, optional): the step's batch, all processes together.
            ``"auto"`` then starts no more processes than leave each
            :data:`MIN_BATCH_PER_PROCESS` images (and an even split): below
            that a process's step is too short to pay for the gradient
            all-reduce and the launcher. None: no limit. Default: None.

    Raises:
        ConfigError: an unknown value.

    Examples:
        >>> resolve_plan("off") is None, resolve_plan("1x2")
        (True, Plan(procs=1, threads=2))
        >>> [resolve_plan("auto", cores=2, table={}, batch_size=b) for b in (64, 128)]
        [Plan(procs=1, threads=1), Plan(procs=2, threads=1)]
    """
    text = str(parallel).strip().lower()
    if text == "off":
        return None
    if text != "auto":
        return Plan.parse(text)
    cores = cores or _available_cores()
    table = read_machine_table() if table is None else table
    plan = Plan.parse(table[cores]) if cores in table else MEASURED.get(cores, Plan(cores, 1))
    procs = plan.procs
    while batch_size is not None and procs > 1 and (batch_size % procs or batch_size // procs < MIN_BATCH_PER_PROCESS):
        procs -= 1
    return Plan(procs, plan.threads)


def per_process_batch(batch_size: int, plan: Plan | None) -> int:
    """The images each process trains per step when ``batch_size`` is the whole step's batch under ``plan``.

    Raises:
        ConfigError: ``batch_size`` does not split evenly over the plan's processes.

    Examples:
        >>> per_process_batch(64, Plan(2, 1)), per_process_batch(64, None), per_process_batch(64, Plan(1, 2))
        (32, 64, 64)
    """
    if plan is None or plan.procs == 1:
        return batch_size
    if batch_size % plan.procs:
        raise ConfigError(
            f"--batch-size is the batch of one step across all {plan.procs} processes of parallel={str(plan)!r}, "
            f"and {batch_size} does not split into {plan.procs} equal parts. Use a multiple of {plan.procs}, such "
            f"as {batch_size - batch_size % plan.procs or plan.procs}, or another --parallel plan. Received: "
            f"batch_size={batch_size}, parallel={str(plan)!r}"
        )
    return batch_size // plan.procs


def machine_table_path() -> Path:
    """Where ``bench/whole_machine.py --record`` keeps this machine's measured plans.

    Examples:
        >>> machine_table_path().name
        'parallel_table.json'
    """
    override = os.environ.get(ENV_TABLE)
    return Path(override) if override else Path("~/.cache/paddle_mnist_hapi/parallel_table.json").expanduser()


def read_machine_table() -> dict[int, str]:
    """``{cores: "PxT"}`` measured on this machine (empty when nothing was recorded or the file is unreadable)."""
    try:
        return {int(k): str(v) for k, v in json.loads(machine_table_path().read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def record_machine_plan(cores: int, plan: Plan) -> Path:
    """Record ``plan`` as this machine's fastest for ``cores`` cores (what ``--parallel auto`` then takes).

    Examples:
        >>> import tempfile
        >>> os.environ[ENV_TABLE] = str(Path(tempfile.mkdtemp()) / "table.json")
        >>> _ = record_machine_plan(2, Plan(1, 2)); resolve_plan("auto", cores=2)
        Plan(procs=1, threads=2)
        >>> del os.environ[ENV_TABLE]
    """
    table = read_machine_table() | {cores: str(plan)}
    path = machine_table_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({str(k): v for k, v in sorted(table.items())}, indent=1) + "\n")
    return path


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def apply_threads(threads: int) -> None:
    """Make Paddle's CPU kernels (MKL and OpenMP) use ``threads`` threads from now on.

    Works after ``import paddle`` (``paddle.base.core.set_num_threads``, which sets
    MKL's and OpenMP's thread counts) and sets ``OMP_NUM_THREADS`` and
    ``MKL_NUM_THREADS`` for child processes.

    Examples:
        >>> apply_threads(1); os.environ["OMP_NUM_THREADS"]
        '1'
    """
    import paddle

    Plan(1, threads)  # validates
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    paddle.base.core.set_num_threads(threads)


def _under_launch() -> bool:
    return int(os.environ.get("PADDLE_TRAINERS_NUM", "1")) > 1 or "PADDLE_TRAINER_ENDPOINTS" in os.environ


def prepare_run(
    parallel: str, output: str | os.PathLike[str], resume: bool = True, batch_size: int | None = None
) -> Plan | None:
    """Resolve ``parallel`` for a run directory, check it against the recorded plan, record it, apply its threads.

    Returns the plan (None for ``"off"`` when no plan was recorded). A run
    directory that has a recorded plan is resumed with that plan: ``"auto"``
    and ``"off"`` take it, another explicit plan is refused.

    Raises:
        ConfigError: an unknown value, a plan other than the one this run started with, or a
            ``batch_size`` that does not split over the plan's processes (checked before anything is written).

    Examples:
        >>> import tempfile
        >>> out = tempfile.mkdtemp()
        >>> prepare_run("1x1", out)
        Plan(procs=1, threads=1)
        >>> prepare_run("auto", out)  # resumed: the recorded plan, whatever this machine would pick
        Plan(procs=1, threads=1)
        >>> prepare_run("2x1", out)
        Traceback (most recent call last):
        ...
        paddle_mnist_hapi.errors.ConfigError: This run directory was started with parallel='1x1' ...
    """
    path = Path(output) / PLAN_FILE
    recorded = _read_plan(path) if resume else None
    requested = resolve_plan(parallel, batch_size=batch_size)
    if recorded is not None:
        explicit = str(parallel).strip().lower() not in ("auto", "off")
        if explicit and requested != recorded:
            raise ConfigError(
                f"This run directory was started with parallel={str(recorded)!r} (processes x threads) and resuming "
                "it with another plan would change the global batch, the data order or the arithmetic. Resume with "
                f"--parallel {recorded} (or auto), or start a new run with another --output. Received: "
                f"parallel={parallel!r}, output={str(output)!r}"
            )
        requested = recorded
    if requested is None:
        return None
    if batch_size is not None:
        per_process_batch(batch_size, requested)
    local = int(os.environ.get("PADDLE_LOCAL_SIZE", os.environ.get("PADDLE_TRAINERS_NUM", "1")))
    if _under_launch() and requested.procs != local:
        raise ConfigError(
            f"paddle.distributed.launch started {local} processes on this machine, but parallel={str(requested)!r} "
            f"asks for {requested.procs}. Under your own launcher use --parallel off (or {local}xT), or let the "
            f"recipe launch itself: run it without the launcher. Received: parallel={parallel!r}"
        )
    if not _under_launch() or os.environ.get("PADDLE_TRAINER_ID", "0") == "0":
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_plan(path, requested)
    apply_threads(requested.threads)
    return requested


def _write_plan(path: Path, plan: Plan) -> None:
    """Record ``plan`` whole: the other ranks read this file while rank 0 writes it, so it is replaced, never
    truncated and rewritten in place."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps({**asdict(plan), "plan": str(plan), "cores": _available_cores()}) + "\n")
    os.replace(partial, path)


def _read_plan(path: Path) -> Plan | None:
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        return Plan(int(record["procs"]), int(record["threads"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"The run's recorded parallel plan is unreadable; delete it to start over with a new plan. "
            f"Received: {path} ({exc})"
        ) from exc


def needs_launch(plan: Plan | None) -> bool:
    """True when ``plan`` wants more processes than this one and no launcher started us.

    Examples:
        >>> needs_launch(Plan(1, 2)), needs_launch(None)
        (False, False)
    """
    return plan is not None and plan.procs > 1 and not _under_launch()


def launch_command(
    plan: Plan, script: str | os.PathLike[str], args: list[str], log_dir: str | os.PathLike[str]
) -> list[str]:
    """The ``paddle.distributed.launch`` command that runs ``script args`` on ``plan.procs`` processes.

    Examples:
        >>> launch_command(Plan(2, 1), "train.py", ["--epochs", "1"], "logs")[2:]
        ['paddle.distributed.launch', '--nproc_per_node', '2', '--log_dir', 'logs', 'train.py', '--epochs', '1']
    """
    return [
        sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(plan.procs),
        "--log_dir", str(log_dir), str(script), *args,
    ]  # fmt: skip


def launch_train(config: Any, plan: Plan) -> dict[str, Any]:
    """Run the recipe's ``train(config)`` on ``plan.procs`` processes with Paddle's launcher; return rank 0's summary.

    Worker logs go to ``OUTPUT/launch/workerlog.N``.

    Raises:
        ConfigError: the launched run failed (the message quotes the end of rank 0's log).
    """
    output = Path(config.output)
    config_json = json.dumps({**asdict(config), "parallel": str(plan)})
    env = dict(os.environ, OMP_NUM_THREADS=str(plan.threads), MKL_NUM_THREADS=str(plan.threads))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")]))
    worker = Path(__file__).resolve().parent / "_private" / "launch_worker.py"
    command = launch_command(plan, worker, [config_json], output / "launch")
    summary_path = output / "summary.json"
    before = summary_path.stat().st_mtime_ns if summary_path.is_file() else None
    proc = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    fresh = summary_path.is_file() and summary_path.stat().st_mtime_ns != before
    if proc.returncode != 0 or not fresh:
        log0 = output / "launch" / "workerlog.0"
        tail = log0.read_text()[-1500:] if log0.is_file() else proc.stdout[-1500:]
        raise ConfigError(
            f"The {plan.procs}-process run failed (exit {proc.returncode}); see {output / 'launch'}. "
            f"End of rank 0's log: {tail}"
        )
    return json.loads(summary_path.read_text())
