"""``paddle-mnist serve`` as users run it: a real server process on 127.0.0.1 (a free port), real HTTP.

The model is the session's LeNet-5 trained on the real MNIST (``trained_run``); the digits are real
MNIST test images sent as PNG files. Every bad request must get a 4xx with a JSON ``error`` and leave
the server healthy."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image
from test_predict import png_header_only, truncated_png

from paddle_mnist_hapi.data import MNIST
from paddle_mnist_hapi.deploy.predict import Predictor
from paddle_mnist_hapi.deploy.preprocess import mnist_style, to_grayscale

from conftest import PYTHON, ROOT

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install 'paddle-mnist-hapi[serve]'")

COUNT = 40  # real test digits sent one by one
UPLOAD_LIMIT_MB = 1
READ_TIMEOUT_S = 2


@dataclass
class Served:
    """A running ``paddle-mnist serve`` process."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def port(self) -> int:
        return int(urlsplit(self.url).port or 0)

    def log_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()


def start_server(model: str, log: Path, env: dict[str, str], *extra: str, timeout: float = 90) -> Served:
    """Start the server on a free port (``--port 0``), read its URL, wait for ``/health``."""
    command = [PYTHON, "-m", "paddle_mnist_hapi.cli", "serve", "--model", model, "--port", "0", *extra]
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, env=env, cwd=ROOT)
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n") and time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line += os.read(proc.stdout.fileno(), 4096)
    words = [w for w in line.decode().split() if w.startswith("http://127.0.0.1:")]
    if not words:
        stop_server(proc)
        pytest.fail(f"the server did not start: {line!r} {log.read_text(errors='replace')[-2000:]}")
    served = Served(proc, words[0], log)
    while time.monotonic() < deadline:
        try:
            if call(served, "GET", "/health")[0] == 200:
                return served
        except OSError:
            time.sleep(0.2)
    stop_server(proc)
    pytest.fail(f"/health never answered 200: {log.read_text(errors='replace')[-2000:]}")


def stop_server(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM (uvicorn's graceful stop), then SIGKILL after 15 s; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    if proc.stdout:
        proc.stdout.close()
    return proc.returncode


def call(
    served: Served,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One request on a new connection; ``(status, decoded JSON or text)``."""
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        kind = response.getheader("content-type", "")
        return response.status, json.loads(data) if kind.startswith("application/json") else data.decode()
    finally:
        connection.close()


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def multipart(field: str, content: bytes, filename: str = "digit.png") -> tuple[bytes, dict[str, str]]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@pytest.fixture(scope="module")
def digits() -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """Real MNIST test digits as PNG files, their raw pixels and labels."""
    test = MNIST("test", limit=COUNT)
    return [png(raw) for raw in test.raw_images], test.raw_images, test.labels.ravel()


@pytest.fixture(scope="module")
def served(trained_run, tmp_path_factory) -> Served:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["PYTHONWARNINGS"] = "ignore:No ccache found:UserWarning"
    log = tmp_path_factory.mktemp("serve") / "server.log"
    options = ("--max-upload-mb", str(UPLOAD_LIMIT_MB), "--read-timeout-s", str(READ_TIMEOUT_S))
    server = start_server(trained_run["export"], log, env, *options)
    yield server
    assert stop_server(server.proc) == 0, server.log.read_text(errors="replace")[-2000:]  # a clean stop


def assert_healthy(served: Served, digit_png: bytes, label: int) -> None:
    assert call(served, "GET", "/health")[0] == 200
    status, answer = call(served, "POST", "/predict", digit_png, {"Content-Type": "image/png"})
    assert status == 200 and answer["label"] == label, answer


# ----------------------------------------------------------------------------- predictions


def test_real_digits_sent_as_png_are_classified_like_predict(served, digits, trained_run):
    files, _, labels = digits
    answers = []
    for i, content in enumerate(files):
        if i % 2:
            body, headers = multipart("file", content)
        else:
            body, headers = content, {"Content-Type": "image/png"}
        status, answer = call(served, "POST", "/predict", body, headers)
        assert status == 200, answer
        answers.append(answer)
    predicted = np.array([a["label"] for a in answers])
    assert np.mean(predicted == labels) >= 0.95, (predicted, labels)
    # the same preprocessing and model as `paddle-mnist predict` (Predictor) on the same files
    expected = Predictor(trained_run["export"]).predict_many(files)
    assert [p.label for p in expected] == predicted.tolist()
    got = np.array([a["probabilities"] for a in answers])
    assert np.allclose(got, [p.probabilities for p in expected], atol=1e-5)
    first = answers[0]
    assert first.keys() >= {"label", "class_name", "confidence", "probabilities", "model_input"}
    assert len(first["probabilities"]) == 10 and abs(sum(first["probabilities"]) - 1) < 1e-4
    # the 28x28 picture the model saw is the preprocessing's output for that file
    header, encoded = first["model_input"].split(",", 1)
    assert header == "data:image/png;base64"
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))))
    assert seen.shape == (28, 28)
    assert np.abs(seen.astype(int) - mnist_style(to_grayscale(Image.open(io.BytesIO(files[0]))))).max() <= 1


def test_answers_are_calibrated_and_say_when_they_are_not_sure(served, digits, trained_run):
    expected = Predictor(trained_run["export"]).predict_many(digits[0][:1])[0]
    answer = call(served, "POST", "/predict", digits[0][0], {"Content-Type": "image/png"})[1]
    assert answer["uncertain"] is expected.uncertain and answer["confidence"] == pytest.approx(expected.confidence)
    two = np.zeros((120, 240), np.uint8)
    two[15:105, 56:64] = 255  # "1"
    two[20:28, 140:200] = 255  # "7": a bar and a stem
    for row in range(20, 105):
        two[row, 195 - (row - 20) * 40 // 85 : 203 - (row - 20) * 40 // 85] = 255
    status, answer = call(served, "POST", "/predict", png(two), {"Content-Type": "image/png"})
    assert status == 200 and answer["uncertain"] is True, answer
    assert "several separate marks side by side" in answer["problem"]


def test_concurrent_requests_are_batched(served, digits):
    files, _, labels = digits
    before = call(served, "GET", "/health")[1]["batching"]

    def one(i: int) -> int:
        status, answer = call(served, "POST", "/predict", files[i % COUNT], {"Content-Type": "image/png"})
        assert status == 200, answer
        return answer["label"]

    with ThreadPoolExecutor(8) as pool:
        predicted = list(pool.map(one, range(64)))
    assert np.mean(np.array(predicted) == labels[np.arange(64) % COUNT]) >= 0.95
    after = call(served, "GET", "/health")[1]["batching"]
    requests, batches = after["requests"] - before["requests"], after["batches"] - before["batches"]
    assert requests == 64
    assert batches < requests and after["largest_batch"] >= 2, after  # several requests shared a model call


def test_health_metadata_and_page(served, trained_run):
    status, health = call(served, "GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["model"] == "lenet5"
    status, meta = call(served, "GET", "/metadata")
    assert status == 200
    assert meta == json.loads(Path(trained_run["export"] + "_meta.json").read_text())
    status, page = call(served, "GET", "/")
    assert status == 200 and "<canvas" in page and 'id="clear"' in page
    assert "http://" not in page and "https://" not in page  # no external assets
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    connection.request("GET", "/")
    policy = connection.getresponse().getheader("content-security-policy")
    connection.close()
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy


# ----------------------------------------------------------------------------- bad requests


def _header_then_nothing(served: Served, length: int) -> tuple[int, Any]:
    """Announce a huge body and send none of it: the limit must apply before reading."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(
            f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {length}\r\n\r\n".encode()
        )
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read())


def _trickle(served: Served) -> tuple[int, Any]:
    """Announce 1,000 bytes, send 10 and stall: the read time limit lets the connection go."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n")
        sock.sendall(b"\x89PNG\r\n\x1a\n\0\0")
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read())


def _chunked(served: Served, size: int) -> tuple[int, Any]:
    """A body with no Content-Length (chunked), larger than the limit: refused while it streams."""
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    chunk = b"\0" * 65536
    try:
        connection.request(
            "POST", "/predict", body=iter([chunk] * (size // len(chunk))), headers={"Content-Type": "image/png"},
            encode_chunked=True,
        )  # fmt: skip
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    except (BrokenPipeError, ConnectionResetError):  # the server answered and closed before we finished
        pytest.fail("the server closed the connection without an answer")
    finally:
        connection.close()


BAD_REQUESTS = {
    "empty body": (lambda s: call(s, "POST", "/predict", b"", {"Content-Type": "image/png"}), 400, "empty body"),
    "not an image": (lambda s: call(s, "POST", "/predict", b"hello, not a picture"), 422, "not a format Pillow"),
    "truncated png": (lambda s: call(s, "POST", "/predict", truncated_png()), 422, "truncated or corrupt"),
    "decompression bomb": (
        lambda s: call(s, "POST", "/predict", png_header_only(30000, 30000)),
        413,
        "too large to decode safely",
    ),
    "over the pixel limit": (
        lambda s: call(s, "POST", "/predict", png_header_only(6000, 5000)),
        413,
        "30,000,000 pixels",
    ),
    "huge upload": (
        lambda s: call(s, "POST", "/predict", b"\x89PNG" + b"\0" * (UPLOAD_LIMIT_MB * 2**20 + 10)),
        413,
        "larger than the limit",
    ),
    "huge declared length": (lambda s: _header_then_nothing(s, 10**12), 413, "larger than the limit"),
    "huge chunked upload": (lambda s: _chunked(s, 3 * UPLOAD_LIMIT_MB * 2**20), 413, "larger than the limit"),
    "stalled upload": (_trickle, 408, f"did not arrive within {READ_TIMEOUT_S} s (10 bytes came)"),
    "bad content length": (
        lambda s: call(s, "POST", "/predict", b"x", {"Content-Length": "abc"}),
        400,
        "Invalid HTTP request",
    ),
    "json instead of an image": (
        lambda s: call(s, "POST", "/predict", b'{"image": 1}', {"Content-Type": "application/json"}),
        415,
        "is not an image",
    ),
    "form without a file field": (
        lambda s: call(s, "POST", "/predict", *multipart("picture", b"\x89PNG...")),
        422,
        "no file field named 'file'",
    ),
    "malformed form": (
        lambda s: call(s, "POST", "/predict", b"garbage", {"Content-Type": "multipart/form-data"}),
        400,
        "multipart",
    ),
    "blank drawing": (lambda s: call(s, "POST", "/predict", png(np.zeros((280, 280), np.uint8))), 422, "No digit"),
    "wrong method": (lambda s: call(s, "GET", "/predict"), 405, "GET is not allowed on /predict"),
    "wrong method on health": (lambda s: call(s, "DELETE", "/health"), 405, "not allowed"),
    "wrong path": (lambda s: call(s, "GET", "/predictions"), 404, "No such page"),
    "path traversal": (lambda s: call(s, "GET", "/../../etc/passwd"), 404, "No such page"),
    "static file probe": (lambda s: call(s, "GET", "/index.html"), 404, "No such page"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_a_json_4xx_and_the_server_stays_healthy(case, served, digits):
    send, expected_status, fragment = BAD_REQUESTS[case]
    status, answer = send(served)
    assert status == expected_status, (status, answer)
    if isinstance(answer, dict):
        assert fragment in answer["error"], answer
    else:  # the HTTP layer (h11) refuses a malformed request before the application sees it
        assert fragment in answer, answer
    files, _, labels = digits
    assert_healthy(served, files[1], int(labels[1]))


def test_answers_tell_no_file_system_path(served, trained_run, digits):
    directory = str(Path(trained_run["export"]).parent)
    for method, path, body in [("GET", "/health", None), ("GET", "/metadata", None), ("POST", "/predict", b"x")]:
        status, answer = call(served, method, path, body)
        assert status in (200, 422) and directory not in json.dumps(answer), (path, answer)
    answer = call(served, "POST", "/predict", digits[0][0], {"Content-Type": "image/png"})[1]
    assert directory not in json.dumps(answer) and answer["source"] is None


def test_one_log_line_per_request_without_the_image(served, digits):
    marker = f"/log-check-{uuid.uuid4().hex[:8]}"
    call(served, "GET", marker)
    label = call(served, "POST", "/predict", digits[0][0], {"Content-Type": "image/png"})[1]["label"]
    call(served, "POST", "/predict", b"\nGET /forged 200", {"Content-Type": "image/png"})
    call(served, "GET", "/health%0AGET%20/forged%20200")  # a decoded path holding a newline

    def since_marker() -> list[str]:
        lines = served.log_lines()
        starts = [i for i, line in enumerate(lines) if line.startswith(f"GET {marker} ")]
        return lines[starts[0] :] if starts else []

    deadline = time.monotonic() + 10
    while len(since_marker()) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = since_marker()
    assert len(lines) == 4, lines
    assert lines[0].startswith(f"GET {marker} 404 ") and lines[0].endswith(" ms")
    assert lines[1].startswith("POST /predict 200 ") and lines[1].endswith(f" label={label}")
    assert lines[2].startswith("POST /predict 422 ")
    assert not any(line.startswith("GET /forged") for line in lines)  # a request cannot forge log lines
    text = served.log.read_text(errors="replace")
    assert "PNG" not in text and "base64" not in text


def test_decoding_in_worker_processes(trained_run, digits, tmp_path, subprocess_env):
    files, _, labels = digits
    server = start_server(trained_run["export"], tmp_path / "server.log", subprocess_env, "--decode-processes", "1")
    try:
        for content, label in zip(files[:5], labels[:5], strict=True):
            assert_healthy(server, content, int(label))
        status, answer = call(server, "POST", "/predict", truncated_png())
        assert status == 422 and "truncated or corrupt" in answer["error"]
        assert call(server, "POST", "/predict", png_header_only(30000, 30000))[0] == 413
        assert_healthy(server, files[0], int(labels[0]))
    finally:
        assert stop_server(server.proc) == 0


# ----------------------------------------------------------------------------- start-up failures


def _serve(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [PYTHON, "-m", "paddle_mnist_hapi.cli", "serve", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False, cwd=ROOT)


def _one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert proc.stdout == ""


def test_missing_or_broken_model_fails_at_start(tmp_path, subprocess_env):
    _one_line_error(_serve(["--model", str(tmp_path / "none")], subprocess_env), "No exported model at")
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "broken.pdiparams").write_bytes(os.urandom(256))
    _one_line_error(_serve(["--model", str(tmp_path / "broken")], subprocess_env), "paddle.inference cannot load")


def test_port_in_use_fails_at_start(served, trained_run, subprocess_env):
    proc = _serve(["--model", trained_run["export"], "--port", str(served.port)], subprocess_env)
    _one_line_error(proc, f"Cannot listen on 127.0.0.1:{served.port}", "Choose another --port")


def test_missing_serve_extra_says_how_to_install(monkeypatch, capsys, trained_run):
    from paddle_mnist_hapi.cli import main

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if it were not installed
    assert main(["serve", "--model", trained_run["export"]]) == 2
    error = capsys.readouterr().err.strip()
    assert error == "error: `paddle-mnist serve` needs uvicorn: run pip install 'paddle-mnist-hapi[serve]'"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["serve"], "the following arguments are required: --model"),
        (["serve", "--model", "m", "--port", "http"], "argument --port: invalid int value: 'http'"),
        (["serve", "--model", "m", "--max-upload-mb", "0"], "--max-upload-mb must be positive"),
        (["serve", "--model", "m", "--decode-processes", "-1"], "--decode-processes must be in 0..64"),
        (["serve", "--model", "m", "--read-timeout-s", "0"], "--read-timeout-s must be positive"),
    ],
)
def test_serve_usage_errors(args, fragment, capsys):
    from paddle_mnist_hapi.cli import main

    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and fragment in error and "\n" not in error


def test_port_out_of_range_fails_before_loading_the_model(capsys):
    from paddle_mnist_hapi.cli import main

    assert main(["serve", "--model", "/no/such/model", "--port", "70000"]) == 2
    assert "port must be in 0..65535" in capsys.readouterr().err
