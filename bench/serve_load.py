"""A bounded load test of ``paddle-mnist serve`` on 127.0.0.1: throughput and latency at 1 and N clients.

Starts two real server processes on free loopback ports with the same exported LeNet-5: one with
micro-batching (``--max-batch 32 --max-wait-ms 3``, the default) and one without (``--max-batch 1``).
Each client is a thread with its own keep-alive connection that POSTs real MNIST test digits as PNG
files, one after the other. Every measurement is a fixed number of requests (and stops at a time
limit in any case); the four conditions are interleaved over rounds in a rotating order so that
load from other processes hits them alike. Prints one JSON object (``--out`` also writes it).

    python bench/serve_load.py                     # 1 and 8 clients, 10 rounds of 100 requests each
    python bench/serve_load.py --clients 4 --requests 100 --rounds 2
    python bench/serve_load.py --model runs/demo   # a trained export (default: an untrained LeNet-5,
                                                   # the same computation; labels do not matter here)
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["PYTHONWARNINGS"] = "ignore"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@contextmanager
def server(model: str, *options: str, timeout: float = 120) -> Iterator[int]:
    """A ``paddle-mnist serve`` process on a free loopback port; yields the port, stops it after."""
    command = [sys.executable, "-m", "paddle_mnist_hapi.cli", "serve", "--model", model, "--host", LOOPBACK]
    command += ["--port", "0", *options]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, env=_env(), cwd=ROOT)
        try:
            line, deadline = b"", time.monotonic() + timeout
            while not line.endswith(b"\n") and time.monotonic() < deadline and proc.poll() is None:
                if select.select([proc.stdout], [], [], 0.5)[0]:
                    line += os.read(proc.stdout.fileno(), 4096)
            urls = [w for w in line.decode().split() if w.startswith(f"http://{LOOPBACK}:")]
            if not urls:
                log.seek(0)
                raise RuntimeError(f"the server did not start: {log.read()[-2000:].decode(errors='replace')}")
            port = int(urlsplit(urls[0]).port or 0)
            while time.monotonic() < deadline and _get(port, "/health")[0] != 200:
                time.sleep(0.2)
            yield port
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            proc.stdout.close()


def _get(port: int, path: str) -> tuple[int, Any]:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    except OSError:
        return 0, None
    finally:
        connection.close()


def digit_pngs(count: int = 64) -> list[bytes]:
    """Real MNIST test digits as PNG files."""
    from PIL import Image

    from paddle_mnist_hapi.data import MNIST

    files = []
    for raw in MNIST("test", limit=count).raw_images:
        buffer = io.BytesIO()
        Image.fromarray(raw).save(buffer, "PNG")
        files.append(buffer.getvalue())
    return files


def load(port: int, clients: int, requests: int, files: list[bytes], time_limit: float = 60.0) -> dict[str, Any]:
    """``requests`` POST /predict from ``clients`` concurrent keep-alive connections (stops at ``time_limit``)."""
    lock = threading.Lock()
    issued = 0
    latencies: list[float] = []
    failures: list[str] = []
    stop_at = time.perf_counter() + time_limit

    def client() -> None:
        nonlocal issued
        connection = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
        try:
            while time.perf_counter() < stop_at:
                with lock:
                    if issued >= requests:
                        return
                    index = issued
                    issued += 1
                started = time.perf_counter()
                connection.request("POST", "/predict", files[index % len(files)], {"Content-Type": "image/png"})
                response = connection.getresponse()
                body = response.read()
                elapsed = time.perf_counter() - started
                with lock:
                    if response.status == 200:
                        latencies.append(elapsed)
                    else:
                        failures.append(f"{response.status} {body[:200]!r}")
        except OSError as exc:
            with lock:
                failures.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    return {"ok": len(latencies), "failed": len(failures), "seconds": seconds, "latencies": latencies,
            "failures": failures[:5]}  # fmt: skip


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def _export_untrained_lenet5(folder: str) -> str:
    import paddle

    from paddle_mnist_hapi import create_model, specs_for
    from paddle_mnist_hapi.deploy.export import export_model

    paddle.seed(0)
    prefix = str(Path(folder) / "lenet5")
    export_model(paddle.Model(create_model("lenet5"), *specs_for("lenet5")), prefix)
    return prefix


def measure(
    model: str | None = None, clients: int = 8, requests: int = 100, rounds: int = 10, options: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Throughput and latency at 1 and ``clients`` clients, with and without micro-batching.

    Each round runs the four conditions (batched/unbatched x 1/N clients) one after the other, in an
    order that rotates from round to round; requests/s is the median over rounds, latencies are pooled,
    and the ratios are medians of the per-round ratios (so a burst of load elsewhere spoils one round,
    not the result)."""
    files = digit_pngs()
    conditions = [("batched", 1), ("unbatched", 1), ("batched", clients), ("unbatched", clients)]
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {c: [] for c in conditions}
    batching: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        model = model or _export_untrained_lenet5(tmp)
        with (
            server(model, *options) as batched,
            server(model, *options, "--max-batch", "1", "--max-wait-ms", "0") as unbatched,
        ):
            ports = {"batched": batched, "unbatched": unbatched}
            for port in ports.values():  # warm-up: first requests pay for lazy imports and allocations
                load(port, clients, 4 * clients, files)
            for round_index in range(rounds):
                shift = round_index % len(conditions)
                for name, concurrency in conditions[shift:] + conditions[:shift]:
                    before = _get(ports[name], "/health")[1]["batching"]
                    runs[(name, concurrency)].append(load(ports[name], concurrency, requests, files))
                    after = _get(ports[name], "/health")[1]["batching"]
                    if name == "batched" and concurrency == clients:
                        batching.append({k: after[k] - before[k] for k in ("requests", "batches")})

    def rps(condition: tuple[str, int]) -> list[float]:
        return [run["ok"] / run["seconds"] for run in runs[condition]]

    def ratio(a: tuple[str, int], b: tuple[str, int]) -> float:
        return statistics.median(x / y for x, y in zip(rps(a), rps(b), strict=True))

    result: dict[str, Any] = {"serve_clients": clients, "serve_requests_per_run": requests, "serve_rounds": rounds}
    for (name, concurrency), suffix in zip(conditions, ["1", "1_unbatched", "n", "n_unbatched"], strict=True):
        latencies = [x for run in runs[(name, concurrency)] for x in run["latencies"]]
        result[f"serve_rps_{suffix}"] = statistics.median(rps((name, concurrency)))
        result[f"serve_p50_ms_{suffix}"] = _percentile(latencies, 50) * 1e3
        result[f"serve_p99_ms_{suffix}"] = _percentile(latencies, 99) * 1e3
    result["serve_scaling_n_vs_1"] = ratio(("batched", clients), ("batched", 1))
    result["serve_batching_gain_n"] = ratio(("batched", clients), ("unbatched", clients))
    calls = sum(b["batches"] for b in batching)
    result["serve_mean_batch_n"] = sum(b["requests"] for b in batching) / calls if calls else None
    result["serve_failed"] = sum(run["failed"] for value in runs.values() for run in value)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="export prefix or run directory (default: an untrained LeNet-5)")
    parser.add_argument("--clients", type=int, default=8, help="N, the concurrent clients (default: 8)")
    parser.add_argument("--requests", type=int, default=100, help="requests per measurement (default: 100)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default: 10)")
    parser.add_argument("--decode-processes", type=int, help="passed to both servers (default: theirs)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    options = () if args.decode_processes is None else ("--decode-processes", str(args.decode_processes))
    result = measure(args.model, args.clients, args.requests, args.rounds, options)
    result["serve_decode_processes"] = args.decode_processes
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(result)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
