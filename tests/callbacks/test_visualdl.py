"""``VisualDL``: what a real fit writes, read back from the real ``visualdl`` server, and its page in Chromium."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import paddle
import pytest
from fit_helpers import first, lenet
from PIL import Image

from paddle_mnist_hapi.callbacks import LRStepper, ResumeCkpt, VisualDL, prediction_grid
from paddle_mnist_hapi.callbacks.visualdl import trim_log
from paddle_mnist_hapi.errors import ConfigError
from paddle_mnist_hapi.schedules import polynomial_decay

ROOT = Path(__file__).resolve().parents[2]
VISUALDL = str(Path(sys.executable).with_name("visualdl"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Board:
    """The real ``visualdl`` server on loopback, for one log directory."""

    def __init__(self, logdir: Path, home: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "HOME": str(home)}  # visualdl writes ~/.visualdl
        command = [VISUALDL, "--logdir", logdir.name, "--host", "127.0.0.1", "--port", str(self.port)]
        self.process = subprocess.Popen(
            [*command, "-L", "en", "--disable-telemetry"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=logdir.parent,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"visualdl exited: {self.process.stderr.read().decode()[-2000:]}")
            try:
                self.api("components")
                return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"visualdl did not answer on port {self.port} within {timeout} s")

    def get(self, path: str, **query: str | int) -> bytes:
        url = f"{self.url}{path}" + ("?" + urllib.parse.urlencode(query) if query else "")
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read()

    def api(self, name: str, **query: str | int):
        answer = json.loads(self.get(f"/app/api/{name}", **query))
        assert answer["status"] == 0, answer
        return answer["data"]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process.stderr.close()


def fake_fit(board: VisualDL, batches: int, model=None) -> None:
    board.set_model(model or SimpleNamespace(network=None, _optimizer=None, _test_dataloader=None))
    board.on_train_begin()
    for step in range(batches):
        board.on_train_batch_begin(step)
        board.on_train_batch_end(step, {"loss": [1.0], "acc": 0.5, "batch_size": 8})
    board.on_train_end()


def logged_steps(logdir: Path, tag: str = "train/loss") -> list[int]:
    from visualdl import LogReader

    (file,) = logdir.iterdir()  # one file per run: VisualDL shows only the newest file of a directory
    return [record.id for record in LogReader(file_path=str(file)).get_data("scalar", tag)]


def test_global_step_continues_across_fits_in_one_file(tmp_path):
    board = VisualDL(tmp_path / "vdl", log_freq=5, images=0)
    fake_fit(board, 7)
    fake_fit(board, 8)
    assert board.global_step == 15
    assert logged_steps(tmp_path / "vdl") == [5, 10, 15]  # every log_freq-th batch of one continuing count


def test_a_new_run_in_the_same_directory_gets_its_own_newer_file(tmp_path):
    fake_fit(VisualDL(tmp_path / "vdl", log_freq=1, images=0), 2)
    fake_fit(VisualDL(tmp_path / "vdl", log_freq=1, images=0), 1)  # within the same second
    old, new = sorted((tmp_path / "vdl").iterdir())
    from visualdl import LogReader

    assert [r.id for r in LogReader(file_path=str(new)).get_data("scalar", "train/loss")] == [1]
    assert [r.id for r in LogReader(file_path=str(old)).get_data("scalar", "train/loss")] == [1, 2]


def test_a_resumed_run_drops_what_was_logged_after_the_checkpoint(tmp_path):
    board = VisualDL(tmp_path / "vdl", log_freq=2, images=0)
    fake_fit(board, 6)
    state = json.loads(json.dumps(board.state_dict()))  # a checkpoint at step 6
    fake_fit(board, 3)  # steps 7-9 ran, then the process died
    assert logged_steps(tmp_path / "vdl") == [2, 4, 6, 8]
    resumed = VisualDL(tmp_path / "vdl", log_freq=2, images=0)  # a new process
    resumed.load_state_dict(state)
    fake_fit(resumed, 4)
    assert resumed.global_step == 10
    assert logged_steps(tmp_path / "vdl") == [2, 4, 6, 8, 10]  # step 8 once, from the resumed run


def test_trim_log_drops_a_torn_last_record(tmp_path):
    board = VisualDL(tmp_path / "vdl", log_freq=1, images=0)
    fake_fit(board, 3)
    (file,) = (tmp_path / "vdl").iterdir()
    file.write_bytes(file.read_bytes()[:-5])
    assert trim_log(file, max_step=100) == 1
    assert logged_steps(tmp_path / "vdl", "train/samples_per_sec") == [1, 2]  # the last record written
    assert logged_steps(tmp_path / "vdl", "train/loss") == [1, 2, 3]


def vdl_run(tmp_path: Path, train, test, epochs: int, run: str) -> None:
    board = VisualDL(tmp_path / run / "vdl", log_freq=3, images=4)
    callbacks = [ResumeCkpt(tmp_path / run / "ckpt"), board]
    lenet().fit(train, test, batch_size=64, epochs=epochs, verbose=0, callbacks=callbacks)


def test_a_resumed_fit_continues_the_same_log_without_repeating_steps(tmp_path, mnist_train_small, mnist_test_small):
    from visualdl import LogReader

    train, test = first(mnist_train_small, 512), first(mnist_test_small, 64)
    vdl_run(tmp_path, train, test, epochs=2, run="straight")
    vdl_run(tmp_path, train, test, epochs=1, run="resumed")  # "killed" after epoch 1 ...
    vdl_run(tmp_path, train, test, epochs=2, run="resumed")  # ... and the same script run again

    def scalars(run: str, tag: str) -> list[tuple[int, float]]:
        (file,) = (tmp_path / run / "vdl").iterdir()
        return [(r.id, r.value) for r in LogReader(file_path=str(file)).get_data("scalar", tag)]

    assert [step for step, _ in scalars("resumed", "train/loss")] == [3, 6, 9, 12, 15]
    assert scalars("resumed", "train/loss") == scalars("straight", "train/loss")  # exact resume, same values
    assert scalars("resumed", "eval/acc") == scalars("straight", "eval/acc")


class BatchLosses(paddle.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.losses: list[float] = []

    def on_train_batch_end(self, step, logs=None):
        self.losses.append(float(logs["loss"][0]))


def test_a_new_users_short_run_gets_epoch_curves(tmp_path, mnist_train_small):
    """2 epochs of 8 steps with the default log_freq=10: one per-step point, but a point per epoch."""
    from visualdl import LogReader

    schedule = polynomial_decay(epochs=2, steps_per_epoch=8, start_lr=0.004, end_lr=0.0004)
    losses = BatchLosses()
    board = VisualDL(tmp_path / "vdl", images=0)
    lenet(schedule).fit(first(mnist_train_small, 512), batch_size=64, epochs=2, verbose=0,
                        callbacks=[board, LRStepper(), losses])  # fmt: skip
    (file,) = (tmp_path / "vdl").iterdir()
    reader = LogReader(file_path=str(file))

    def scalars(tag: str) -> list[tuple[int, float]]:
        return [(r.id, r.value) for r in reader.get_data("scalar", tag)]

    assert [step for step, _ in scalars("train/loss")] == [10]
    assert [step for step, _ in scalars("epoch/loss")] == [8, 16]
    means = [float(np.mean(losses.losses[:8])), float(np.mean(losses.losses[8:]))]
    assert [value for _, value in scalars("epoch/loss")] == pytest.approx(means, rel=1e-5)  # the epoch's mean
    lrs = [value for _, value in scalars("epoch/lr")]
    assert lrs[0] > lrs[1] > 0.0004  # the schedule is seen decaying
    assert len(scalars("epoch/acc")) == 2


def test_only_rank_0_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("PADDLE_TRAINER_ID", "1")
    assert paddle.distributed.ParallelEnv().local_rank == 1
    board = VisualDL(tmp_path / "vdl", log_freq=1)
    fake_fit(board, 3)
    assert board.global_step == 3  # the step still counts, so every rank agrees on it
    assert not (tmp_path / "vdl").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"log_freq": 0}, "log_freq must be an integer >= 1. Received: log_freq=0"),
        ({"histogram_freq": -1}, "histogram_freq must be an integer >= 0"),
        ({"images": 2.5}, "images must be an integer >= 0"),
        ({"hparams": ["lr"]}, "hparams must be a dict"),
    ],
)
def test_bad_arguments_are_config_errors(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        VisualDL(tmp_path, **kwargs)


def test_prediction_grid_frames_misclassified_images_in_red():
    images = np.zeros((4, 1, 28, 28), np.float32)
    images[:, :, 10:18, 10:18] = 1.0
    grid = prediction_grid(images, np.array([1, 2, 3, 4]), np.array([1, 2, 9, 4]), columns=4)
    cell = grid.shape[1] // 4
    corners = [tuple(grid[1, i * cell + 1]) for i in range(4)]
    assert corners[2][0] > 200 and corners[2][1] < 60  # red frame around the wrong one
    assert corners[0] == corners[1] == corners[3] == (255, 255, 255)
    assert grid[3 + 14 * 3, 3 + 14 * 3].tolist() == [255, 255, 255]  # the digit's bright pixels


@pytest.fixture(scope="module")
def served(tmp_path_factory, mnist_train_small, mnist_test_small):
    """Two real fits (2 epochs, then 1 more) logged by one callback, served by the real ``visualdl``."""
    tmp = tmp_path_factory.mktemp("visualdl")
    train, test = first(mnist_train_small, 512), first(mnist_test_small, 256)
    schedule = polynomial_decay(epochs=3, steps_per_epoch=8, start_lr=0.004, end_lr=0.0004)
    model = lenet(schedule)
    board = VisualDL(tmp / "vdl", log_freq=2, histogram_freq=1, images=16, hparams={"seed": 0, "note": None})
    callbacks = [board, LRStepper()]
    model.fit(train, test, batch_size=64, epochs=2, verbose=0, callbacks=callbacks)
    model.fit(train, test, batch_size=64, epochs=1, verbose=0, callbacks=callbacks)  # the step continues
    assert board._writer is None  # closed at train end
    server = Board(tmp / "vdl", home=tmp)
    try:
        server.wait_ready()
        yield SimpleNamespace(server=server, run=server.api("scalar/tags")["runs"][0], tmp=tmp)
    finally:
        server.stop()


def test_served_scalars_are_on_one_global_step(served):
    server, run = served.server, served.run
    assert set(server.api("scalar/tags")["tags"][0]) == {
        "train/loss", "train/acc", "train/lr", "train/samples_per_sec", "eval/loss", "eval/acc",
        "epoch/loss", "epoch/acc", "epoch/lr",
    }  # fmt: skip
    loss = server.api("scalar/list", run=run, tag="train/loss")
    assert [step for _, step, _ in loss] == list(range(2, 25, 2))  # one count across both fits
    lr = server.api("scalar/list", run=run, tag="train/lr")
    expected = polynomial_decay(epochs=3, steps_per_epoch=8, start_lr=0.004, end_lr=0.0004)
    values = []
    for _ in range(24):
        values.append(expected())
        expected.step()
    assert [value for _, _, value in lr] == pytest.approx(values[1::2], rel=1e-6)  # the lr batches 2, 4, ... used
    epoch_lr = server.api("scalar/list", run=run, tag="epoch/lr")
    assert [step for _, step, _ in epoch_lr] == [8, 16, 24]
    assert [value for _, _, value in epoch_lr] == pytest.approx(values[7::8], rel=1e-6)  # each epoch's last batch
    assert all(v > 100 for _, _, v in server.api("scalar/list", run=run, tag="train/samples_per_sec"))
    acc = server.api("scalar/list", run=run, tag="eval/acc")
    assert [step for _, step, _ in acc] == [8, 16, 24]
    assert acc[-1][2] > 0.5  # real LeNet on real MNIST


def test_served_sample_grid_histograms_and_hparams(served):
    server, run = served.server, served.run
    samples = server.api("image/list", run=run, tag="eval/samples")
    assert [s["step"] for s in samples] == [8, 16, 24]
    png = server.get("/app/api/image/image", run=run, tag="eval/samples", index=2)
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert image.shape[0] > 100 and image.shape[1] > 400
    red = (image[..., 0] > 200) & (image[..., 1] < 60) & (image[..., 2] < 60)
    assert red.any()  # the grid shows misclassified test images

    histograms = server.api("histogram/tags")["tags"][0]
    assert "weights/features.0.weight" in histograms and len(histograms) == 10
    assert len(server.api("histogram/list", run=run, tag="weights/features.0.weight")) == 3  # every epoch

    (trial,) = server.api("hparams/list")
    assert trial["hparams"]["optimizer"] == "Adam" and trial["hparams"]["batch_size"] == 64
    assert trial["hparams"]["lr"] == pytest.approx(0.004) and trial["hparams"]["note"] == "None"
    assert trial["hparams"]["lr_schedule"] == "PolynomialDecay"
    assert json.loads(server.get("/app/api/text/text", run=run, tag="hparams", index=0))["seed"] == 0


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (`make browser` installs it)")
def test_board_renders_charts_in_headless_chromium(served):
    shot = served.tmp / "visualdl.png"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={served.tmp / 'chromium'}", "--window-size=1280,1000", "--virtual-time-budget=15000",
        f"--screenshot={shot}", f"{served.server.url}/app/scalar",
    ]  # fmt: skip
    subprocess.run(command, capture_output=True, timeout=120, check=True)
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    assert pixels.shape[:2] == (1000, 1280)
    chart_lines = (pixels[..., 2] > 150) & (pixels[..., 0] < 120) & (pixels[..., 1] < 120)  # runs are drawn in blue
    assert chart_lines[150:, :1000].sum() > 500, "the scalar page rendered without charts"
    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):
        shutil.copy(shot, ROOT / "docs" / "images" / "visualdl.png")
