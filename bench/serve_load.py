"""A bounded load test of ``paddle-mnist serve`` on 127.0.0.1: throughput and latency at 1 and N clients.

Starts two real server processes on free loopback ports with the same exported LeNet-5: one with
micro-batching (``--max-batch 32 --max-wait-ms 3``, the default) and one without (``--max-batch 1``).
Each client is a thread with its own keep-alive connection that POSTs real MNIST test digits as PNG
files, one after the other. Every measurement is a fixed number of requests (and stops at a time
limit in any case); the servers and concurrency levels are interleaved over rounds so that load
from other processes hits them alike. Prints one JSON object (``--out`` also writes it).

    python bench/serve_load.py                     # 1 and 8 clients, 2 rounds
    python bench/serve_load.py --clients 4 --requests 200 --rounds 1
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
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    latencies = [x for run in runs for x in run["latencies"]]
    ok = sum(run["ok"] for run in runs)
    seconds = sum(run["seconds"] for run in runs)
    return {
        "rps": ok / seconds if seconds else 0.0,
        "p50_ms": _percentile(latencies, 50) * 1e3 if latencies else float("nan"),
        "p99_ms": _percentile(latencies, 99) * 1e3 if latencies else float("nan"),
        "failed": sum(run["failed"] for run in runs),
    }


def _export_untrained_lenet5(folder: str) -> str:
    import paddle

    from paddle_mnist_hapi import create_model, specs_for
    from paddle_mnist_hapi.export import export_model

    paddle.seed(0)
    prefix = str(Path(folder) / "lenet5")
    export_model(paddle.Model(create_model("lenet5"), *specs_for("lenet5")), prefix)
    return prefix


def measure(model: str | None = None, clients: int = 8, requests: int = 400, rounds: int = 2) -> dict[str, Any]:
    """Throughput and latency at 1 and ``clients`` clients, with and without micro-batching."""
    files = digit_pngs()
    with tempfile.TemporaryDirectory() as tmp:
        model = model or _export_untrained_lenet5(tmp)
        with server(model) as batched, server(model, "--max-batch", "1", "--max-wait-ms", "0") as unbatched:
            ports = {"batched": batched, "unbatched": unbatched}
            for port in ports.values():  # warm-up: first requests pay for lazy imports and allocations
                load(port, clients, 4 * clients, files)
            runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
            batching: list[dict[str, Any]] = []
            for round_index in range(rounds):
                order = list(ports) if round_index % 2 == 0 else list(ports)[::-1]
                for concurrency in (1, clients):
                    for name in order:
                        before = _get(ports[name], "/health")[1]["batching"]
                        runs.setdefault((name, concurrency), []).append(load(ports[name], concurrency, requests, files))
                        after = _get(ports[name], "/health")[1]["batching"]
                        if name == "batched" and concurrency == clients:
                            batching.append({k: after[k] - before[k] for k in ("requests", "batches")})
    stats = {key: _summary(value) for key, value in runs.items()}
    one, many = stats[("batched", 1)], stats[("batched", clients)]
    unbatched_many = stats[("unbatched", clients)]
    model_calls = sum(b["batches"] for b in batching)
    return {
        "serve_clients": clients,
        "serve_requests_per_run": requests,
        "serve_rounds": rounds,
        "serve_rps_1": one["rps"],
        "serve_p50_ms_1": one["p50_ms"],
        "serve_p99_ms_1": one["p99_ms"],
        "serve_rps_n": many["rps"],
        "serve_p50_ms_n": many["p50_ms"],
        "serve_p99_ms_n": many["p99_ms"],
        "serve_rps_n_unbatched": unbatched_many["rps"],
        "serve_p50_ms_n_unbatched": unbatched_many["p50_ms"],
        "serve_p99_ms_n_unbatched": unbatched_many["p99_ms"],
        "serve_rps_1_unbatched": stats[("unbatched", 1)]["rps"],
        "serve_scaling_n_vs_1": many["rps"] / one["rps"] if one["rps"] else None,
        "serve_batching_gain_n": many["rps"] / unbatched_many["rps"] if unbatched_many["rps"] else None,
        "serve_mean_batch_n": sum(b["requests"] for b in batching) / model_calls if model_calls else None,
        "serve_failed": sum(s["failed"] for s in stats.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="export prefix or run directory (default: an untrained LeNet-5)")
    parser.add_argument("--clients", type=int, default=8, help="N, the concurrent clients (default: 8)")
    parser.add_argument("--requests", type=int, default=400, help="requests per measurement (default: 400)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default: 2)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    result = measure(args.model, args.clients, args.requests, args.rounds)
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(result)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
