"""The benchmark: ``make bench`` (or ``python bench/run.py [--quick]``).

Measures, on this machine and in one run: training images per second of the
classic Paddle tutorial's pipeline, this library's pipeline and a plain
PyTorch eager loop (same LeNet-5, batch 64, same thread count); the overhead of
the library's callbacks; checkpoint cost per epoch; time to 99% test top-1 with
the default recipe; exported-model inference latency and throughput; and the
HTTP service (`paddle-mnist serve`) under a bounded loopback load (`bench/serve_load.py`).
Writes ``bench/results.json`` and ``bench/results.md``.

Every measurement runs in its own process (``bench/workloads.py``). The
training paths, the PyTorch loop included, share one process and are measured
over a fixed number of steps after a warm-up, interleaved in chunks of 50
steps whose order rotates (A/B/C, B/C/A, ...), so that load from other
processes hits all of them alike. Seconds per epoch are extrapolated
from images per second (60,000 images). On a shared machine the absolute
numbers move; the ratios measured in the same run are what to compare.

    python bench/run.py --quick     # a minute or two, for development
    python bench/run.py             # the full run (about 5-10 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
EPOCH_IMAGES = 60000
PATHS = ["tutorial", "dataset", "stock_conv", "library", "paddle_raw", "torch"]
SERVE_KEYS = [
    "serve_clients", "serve_rps_1", "serve_p50_ms_1", "serve_p99_ms_1", "serve_rps_n", "serve_p50_ms_n",
    "serve_p99_ms_n", "serve_rps_n_unbatched", "serve_p50_ms_n_unbatched", "serve_p99_ms_n_unbatched",
    "serve_rps_1_unbatched", "serve_scaling_n_vs_1", "serve_batching_gain_n", "serve_mean_batch_n", "serve_failed",
]  # fmt: skip


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["PYTHONWARNINGS"] = "ignore"
    env.setdefault("OMP_NUM_THREADS", "1")  # Paddle's own default; PyTorch gets the same
    return env


def _run(script: str, *args: str, timeout: float = 1800) -> dict[str, Any] | None:
    command = [sys.executable, str(BENCH / script), *args]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=timeout, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(f"bench: {' '.join(command[1:])} failed ({proc.returncode}):\n{proc.stderr[-2000:]}\n")
        return None
    result = json.loads(lines[-1])
    sys.stderr.write(f"bench: {' '.join(command[2:])}: {time.perf_counter() - started:.0f} s\n")
    return result


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("paddlepaddle", "paddle-mnist-hapi", "numpy", "torch"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def measure(quick: bool) -> dict[str, Any]:
    steps, chunk = (60, 20) if quick else (300, 50)
    results: dict[str, Any] = {"mode": "quick" if quick else "full"}
    load_before = os.getloadavg()

    speeds = _run("workloads.py", "train", "--paths", ",".join(PATHS), "--steps", str(steps), "--chunk", str(chunk))
    speeds = speeds or {}
    results["torch_threads"] = speeds.get("torch_threads")
    for path in PATHS:
        value = speeds.get(f"{path}_img_per_s")
        results[f"{path}_img_per_s"] = value
        results[f"{path}_epoch_s"] = EPOCH_IMAGES / value if value else None
    library, tutorial, torch = (results[f"{p}_img_per_s"] for p in ("library", "tutorial", "torch"))
    results["library_vs_tutorial"] = library / tutorial if library and tutorial else None
    results["library_vs_torch"] = library / torch if library and torch else None

    callback_steps = 50 if quick else 300
    # interleaved on/off rounds: the wall-clock ratio of two 4 s epochs moves by several % between runs
    overhead = _run("workloads.py", "callbacks", "--steps", str(callback_steps), "--rounds", "2" if quick else "6")
    results["callback_overhead_ratio"] = overhead["ratio"] if overhead else None
    results["callbacks_measured"] = overhead["callbacks"] if overhead else []
    results["callback_hook_fraction"] = overhead["hook_fraction"] if overhead else {}

    ckpt = _run("workloads.py", "checkpoint", "--steps", str(20 if quick else 50))
    if ckpt and ckpt.get("available") and library:
        results["ckpt_save_s"], results["ckpt_load_s"] = ckpt["save_s"], ckpt["load_s"]
        results["ckpt_fraction_of_epoch"] = (ckpt["save_s"] + ckpt["load_s"]) / results["library_epoch_s"]
    else:
        results["ckpt_fraction_of_epoch"] = None
    # ResumeCkpt(every_n_steps=4), synchronous and asynchronous, LeNet-5 and an 11.9 M-parameter MLP
    by_model = _run("checkpoint_cost.py", *(["--steps", "24", "--rounds", "1"] if quick else ["--every", "4,10"])) or {}
    results["ckpt_async"] = {
        name: {"every": r["every_n_steps"], "stall_ratio": r["stall_ratio"], "sync_stall_s": r["sync"]["stall_s"],
               "async_stall_s": r["async"]["stall_s"], "sync_cost": r["sync"]["cost"], "async_cost": r["async"]["cost"],
               "sync_cost_cpu": r["sync"]["cost_cpu"], "async_cost_cpu": r["async"]["cost_cpu"]}
        for name, r in by_model.items() if isinstance(r, dict) and "stall_ratio" in r
    }  # fmt: skip
    # the same checkpointed job with PyTorch Lightning and Keras 3 (bench/peers/compare.py)
    peers = _run("peers/compare.py", *(["--kills", "1", "--rounds", "1"] if quick else [])) or {}
    for key in ("peers_img_per_s", "peers_exact", "library_vs_lightning"):
        results[key] = peers.get(key)
    results["peers_seed"] = peers.get("seed")

    to99 = None if quick else _run("workloads.py", "to99", "--ood", "2160")
    results["seconds_to_99"] = to99["seconds_to_99"] if to99 else None
    results["recipe_test_acc"] = to99["test_acc"] if to99 else None
    results["recipe_seconds"] = to99["total_seconds"] if to99 else None
    # the recipe's model on 1,000 digits that are not MNIST (bench/ood_digits.py), through `paddle-mnist predict`
    results["ood_acc"] = to99.get("ood_acc") if to99 else None
    # the matrix (docs/generalisation.md): accuracy per cell (27 framing/stroke/softness cells and 16 conditions of
    # polarity/lighting/colour/format), the worst cell, and the calibration error there and on the MNIST test set
    ood = (to99 or {}).get("ood") or {}
    results["ood_cells"] = {name: row["accuracy"] for name, row in {**ood.get("cells", {}), **ood.get(
        "conditions", {})}.items()} or None  # fmt: skip
    results["ood_worst_cell"] = ood.get("worst_cell")
    results["ood_ece"] = ood.get("ece")
    results["mnist_test_ece"] = (to99 or {}).get("mnist_test_ece")

    # the whole machine: the library's fastest plan on all cores vs PyTorch on all cores (bench/whole_machine.py)
    whole = _run("whole_machine.py", *(["--quick"] if quick else ["--to99"])) or {}
    for key in ("whole_machine_img_per_s", "whole_machine_config", "torch_whole_machine_img_per_s"):
        results[key] = whole.get(key)
    results["torch_whole_machine_config"] = whole.get("torch_whole_machine_config")
    results["whole_machine_vs_torch"] = whole.get("whole_machine_vs_torch")
    results["whole_machine_seconds_to_99"] = whole.get("whole_machine_seconds_to_99")
    results["whole_machine_to99_config"] = whole.get("whole_machine_to99_config")
    # the whole 8-epoch recipe, start of train() to the last evaluation: one process (batch 64) vs the whole machine
    results["recipe_train_seconds"] = _last_evaluation(to99)
    results["whole_machine_recipe_train_seconds"] = _last_evaluation(whole.get("to99"))
    results["whole_machine_recipe_test_acc"] = (whole.get("to99") or {}).get("test_acc")

    inference = _run("workloads.py", "inference", "--iterations", str(300 if quick else 2000)) or {}
    for key in (
        "infer_b1_p50_ms",
        "infer_b1_p99_ms",
        "infer_b256_img_per_s",
        "dygraph_b1_p50_ms",
        "dygraph_b1_p99_ms",
        "dygraph_b256_img_per_s",
    ):
        results[key] = inference.get(key)

    # the HTTP service (bench/serve_load.py): loopback load test at 1 and N clients, batched and not
    serve_args = ("--requests", "100", "--rounds", "2") if quick else ("--requests", "100", "--rounds", "10")
    serve = _run("serve_load.py", *serve_args) or {}
    for key in SERVE_KEYS:
        results[key] = serve.get(key)

    results["machine"] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "threads": int(_env()["OMP_NUM_THREADS"]),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    results["versions"] = _versions()
    results["settings"] = {
        "batch_size": 64,
        "steps": steps,
        "chunk": chunk,
        "callback_steps": callback_steps,
        "model": "lenet5",
    }
    results["raw"] = {"train_img_per_s": speeds, "callbacks": overhead, "checkpoint": ckpt, "to99": to99}
    results["raw"]["checkpoint_cost"] = by_model
    results["raw"]["whole_machine"] = whole
    return results


def _last_evaluation(run: dict[str, Any] | None) -> float | None:
    evaluations = (run or {}).get("evaluations") or []
    return evaluations[-1]["seconds"] if evaluations else None


def _fmt(value: Any, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{suffix}"


def _percent(value: Any, digits: int) -> str:
    return _fmt(value * 100 if value is not None else None, digits, "%")


def _to99_config(config: dict[str, Any] | None) -> str:
    return f"{config['plan']}, `--batch-size {config['batch_size']}`" if config else "n/a"


def _plan(config: dict[str, Any] | None) -> str:
    """``2 processes x 1 thread, batch 256`` for a whole-machine configuration."""
    if not config:
        return "n/a"
    return f"{config['procs']} process(es) × {config['threads']} thread(s), batch {config['batch']}"


def markdown(r: dict[str, Any]) -> str:
    """The README table."""
    tutorial = r.get("tutorial_img_per_s")

    def vs_tutorial(key: str) -> str:
        value = r.get(key)
        return _fmt(value / tutorial, 2, "×") if value and tutorial else "n/a"

    m = r["machine"]
    worst = r.get("ood_worst_cell") or {}
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} thread(s) per framework; "
        f"paddlepaddle {r['versions']['paddlepaddle']}, torch {r['versions']['torch']}, "
        f"Python {r['versions']['python']}. Load average {m['load_average_before'][0]} → "
        f"{m['load_average_after'][0]} ({r['mode']} run).",
        "",
        "| Training, LeNet-5, batch 64 | images/s | s/epoch (60k) | vs tutorial |",
        "|---|---:|---:|---:|",
    ]
    rows = [
        ("Paddle tutorial (vision MNIST + ToTensor/Normalize + `fit`, stock `nn.Conv2D`)", "tutorial"),
        ("library `MNIST` Dataset + `fit`, stock `nn.Conv2D`", "dataset"),
        ("library data path (`InMemoryLoader` + `fit`), stock `nn.Conv2D`", "stock_conv"),
        ("**library path** (`InMemoryLoader` + `fit`, the zoo's `layers.Conv2D`)", "library"),
        ("plain Paddle dygraph loop (no hapi), same model", "paddle_raw"),
        ("PyTorch 2.13 eager loop, same LeNet-5", "torch"),
    ]
    for label, key in rows:
        lines.append(
            f"| {label} | {_fmt(r.get(f'{key}_img_per_s'))} | {_fmt(r.get(f'{key}_epoch_s'), 1)} "
            f"| {vs_tutorial(f'{key}_img_per_s')} |"
        )
    lines += [
        "",
        "| Other measurements | value |",
        "|---|---:|",
        f"| library path / PyTorch loop (images/s) | {_fmt(r.get('library_vs_torch'), 2, '×')} |",
        f"| callbacks all on / all off (seconds) | {_fmt(r.get('callback_overhead_ratio'), 2, '×')} |",
        f"| `ResumeCkpt` save + load per epoch / epoch time | {_fmt(r.get('ckpt_fraction_of_epoch'), 4)} |",
        *_checkpoint_rows(r.get("ckpt_async") or {}),
        f"| default recipe: seconds to 99% test top-1 | {_fmt(r.get('seconds_to_99'), 0, ' s')} |",
        f"| default recipe: MNIST test top-1 / non-MNIST digits (`bench/ood_digits.py`) | "
        f"{_percent(r.get('recipe_test_acc'), 2)} / {_percent(r.get('ood_acc'), 1)} |",
        f"| non-MNIST matrix: worst cell; ECE on the matrix / on the MNIST test set | {worst.get('cell', 'n/a')} "
        f"{_percent(worst.get('accuracy'), 1)}; {_percent(r.get('ood_ece'), 2)} / "
        f"{_percent(r.get('mnist_test_ece'), 2)} |",
        f"| exported model (`paddle.inference`), batch 1: p50 / p99 | {_fmt(r.get('infer_b1_p50_ms'), 3)} / "
        f"{_fmt(r.get('infer_b1_p99_ms'), 3)} ms |",
        f"| dygraph model, batch 1: p50 / p99 | {_fmt(r.get('dygraph_b1_p50_ms'), 3)} / "
        f"{_fmt(r.get('dygraph_b1_p99_ms'), 3)} ms |",
        f"| whole machine: library's fastest plan ({_plan(r.get('whole_machine_config'))}) | "
        f"{_fmt(r.get('whole_machine_img_per_s'))} images/s |",
        f"| whole machine: PyTorch's fastest ({_plan(r.get('torch_whole_machine_config'))}) | "
        f"{_fmt(r.get('torch_whole_machine_img_per_s'))} images/s |",
        f"| whole machine: library / PyTorch | {_fmt(r.get('whole_machine_vs_torch'), 2, '×')} |",
        f"| whole machine: recipe with `--parallel auto` ({_to99_config(r.get('whole_machine_to99_config'))}), "
        f"seconds to 99% test top-1 | {_fmt(r.get('whole_machine_seconds_to_99'), 0, ' s')} |",
        f"| recipe's default epochs, one process (batch 64) / whole machine: seconds, test top-1 | "
        f"{_fmt(r.get('recipe_train_seconds'), 0, ' s')} / "
        f"{_fmt(r.get('whole_machine_recipe_train_seconds'), 0, ' s')}; "
        f"{_percent(r.get('recipe_test_acc'), 2)} / {_percent(r.get('whole_machine_recipe_test_acc'), 2)} |",
        f"| exported model, batch 256 | {_fmt(r.get('infer_b256_img_per_s'))} images/s |",
        f"| dygraph model, batch 256 | {_fmt(r.get('dygraph_b256_img_per_s'))} images/s |",
        f"| `paddle-mnist serve`, 1 client: requests/s, p50 / p99 | {_fmt(r.get('serve_rps_1'))}, "
        f"{_fmt(r.get('serve_p50_ms_1'), 1)} / {_fmt(r.get('serve_p99_ms_1'), 1)} ms |",
        f"| `paddle-mnist serve`, {r.get('serve_clients') or 'N'} clients: requests/s, p50 / p99 | "
        f"{_fmt(r.get('serve_rps_n'))}, {_fmt(r.get('serve_p50_ms_n'), 1)} / {_fmt(r.get('serve_p99_ms_n'), 1)} ms |",
        f"| same, micro-batching off (`--max-batch 1`) | {_fmt(r.get('serve_rps_n_unbatched'))}, "
        f"{_fmt(r.get('serve_p50_ms_n_unbatched'), 1)} / {_fmt(r.get('serve_p99_ms_n_unbatched'), 1)} ms |",
        f"| serve: N clients / 1 client; batching on / off at N (requests/s) | "
        f"{_fmt(r.get('serve_scaling_n_vs_1'), 2, '×')}; {_fmt(r.get('serve_batching_gain_n'), 2, '×')} |",
        "",
        "Callbacks on (share of the epoch spent in each one's hooks): "
        + (
            ", ".join(f"{name} {share:.1%}" for name, share in r["callback_hook_fraction"].items())
            if r.get("callback_hook_fraction")
            else "n/a"
        )
        + f"; measured over {r['settings']['callback_steps']}-step epochs, so per-epoch work counts more "
        "than in a 938-step epoch.",
        "",
    ]
    if r.get("peers_img_per_s") or r.get("peers_exact"):
        lines += ["The same job with the peers (`bench/peers/compare.py`):", "", peers_markdown(r)]
    return "\n".join(lines)


def _checkpoint_rows(by_model: dict[str, Any]) -> list[str]:
    """Rows of the sync vs async checkpoint cost (``bench/checkpoint_cost.py``)."""
    names = {"lenet5": "LeNet-5", "mlp3072": "11.9 M-parameter MLP"}
    return [
        f"| `ResumeCkpt(every_n_steps={c['every']})`, {names.get(name.split('_')[0], name)}: training-thread stall "
        "per save, sync / async "
        f"(async / sync); fit time with it / without, sync / async | {_fmt(c['sync_stall_s'] * 1e3, 1)} / "
        f"{_fmt(c['async_stall_s'] * 1e3, 1)} ms ({_percent(c['stall_ratio'], 0)}); "
        f"{_percent(c['sync_cost'], 1)} / {_percent(c['async_cost'], 1)} (CPU time: "
        f"{_percent(c.get('sync_cost_cpu'), 1)} / {_percent(c.get('async_cost_cpu'), 1)}) |"
        for name, c in by_model.items()
    ]


def _paired(speeds: dict[str, Any]) -> str:
    """``; paired median X%, quartiles A% to B%`` when the run measured it, else nothing."""
    if speeds.get("checkpoint_cost_paired") is None:
        return ""
    low, high = speeds["checkpoint_cost_paired_quartiles"]
    median = _percent(speeds["checkpoint_cost_paired"], 1)
    return f"; paired median {median}, quartiles {_percent(low, 1)} to {_percent(high, 1)}"


def peers_markdown(r: dict[str, Any]) -> str:
    """The peers table (``bench/peers/compare.py``): the same job with this library, Lightning and Keras."""
    speeds, exact = r.get("peers_img_per_s") or {}, r.get("peers_exact") or {}
    labels = {
        "library": "this library (`ResumeCkpt(dir, every_n_steps=4)`)",
        "lightning": "PyTorch Lightning {} (`ModelCheckpoint(every_n_train_steps=4, save_last=True)`, "
        '`ckpt_path="last"`)',
        "keras": "Keras {}, torch backend (`BackupAndRestore(dir, save_freq=4)`)",
    }
    lines = [
        "| stack | bit-identical to an uninterrupted run after SIGKILL | batches the re-run trained: exactly the ones "
        "owed | `fit` images/s with checkpoints / without (1 thread) | cost of the checkpoints |",
        "|---|---|---|---:|---:|",
    ]
    for stack, label in labels.items():
        s, e = speeds.get(stack) or {}, exact.get(stack) or {}
        label = label.format(s.get(stack) or "").replace("  ", " ").replace(" ,", ",")
        identical = f"{e['identical']} of {e['kills']}" if e else "n/a"
        if e and e["identical"] < e["kills"]:
            identical += f" (weights differ by up to {e['max_abs_diff']:.1e})"
        owed = f"{e['rerun_trained_exactly_the_owed_batches']} of {e['kills']}" if e else "n/a"
        extra = max((run["rerun_batches"] - run["owed"] for run in (e or {}).get("runs", [])), default=0)
        if extra:
            owed += f" (up to {extra} batches trained again)"
        lines.append(
            f"| {label} | {identical} | {owed} | "
            f"{_fmt(s.get('with_checkpoints'))} / {_fmt(s.get('without_checkpoints'))} | "
            f"{_percent(s.get('checkpoint_cost'), 1)} (CPU time {_percent(s.get('checkpoint_cost_cpu'), 1)}"
            f"{_paired(s)}) |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps, no time-to-99%% run")
    parser.add_argument("--out-dir", default=str(BENCH), help="where results.json and results.md go")
    args = parser.parse_args(argv)
    results = measure(args.quick)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
