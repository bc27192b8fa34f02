"""docs/your-own-model.md, run as written: its files are taken from the page, its commands run as a user runs them.

A small 3-channel CNN with BatchNorm on generated 32x32 RGB shapes: trained with ``ResumeCkpt``,
SIGKILLed in its own session and resumed, exported with its declared preprocessing, then
``paddle-mnist predict`` and ``evaluate --images`` on PNG files written from the data set and
``paddle-mnist serve`` with real HTTP requests on 127.0.0.1, all compared with the dygraph network.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest
from resume_harness import kill_group, wait_for_checkpoint
from test_serve import call, start_server, stop_server

from paddle_mnist_hapi.deploy.predict import softmax

from conftest import PYTHON, ROOT

DOC = ROOT / "docs" / "your-own-model.md"
KILL_AFTER_STEP = 30  # the first run is SIGKILLed once a checkpoint at this step or later exists


def doc_files() -> dict[str, str]:
    """The page's files: each ```python block right after a ``<!-- file: NAME -->`` line."""
    blocks = re.findall(r"<!-- file: (\S+) -->\n```python\n(.*?)```", DOC.read_text(), flags=re.S)
    return dict(blocks)


def doc_commands() -> list[str]:
    """Every ``$ command`` line of the page's console blocks (comments dropped)."""
    text = DOC.read_text()
    lines = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        lines += [" ".join(line[2:].split("  #")[0].split()) for line in joined.splitlines() if line.startswith("$ ")]
    return lines


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def paddle_mnist(*args: str) -> list[str]:
    """``paddle-mnist ARGS`` as the test runs it (the module, with this interpreter)."""
    return [PYTHON, "-m", "paddle_mnist_hapi.cli", *args]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A directory holding the page's files, as a user would have them."""
    folder = tmp_path_factory.mktemp("your_own_model")
    files = doc_files()
    assert set(files) == {"my_shapes.py", "train_shapes.py", "save_pictures.py"}, sorted(files)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def dygraph_probabilities(project: Path, pictures: list[Path]) -> np.ndarray:
    """The trained network (restored from its last checkpoint) on the pictures' own arrays, in the test process."""
    sys.path.insert(0, str(project))
    try:
        import my_shapes

        from paddle_mnist_hapi import load_weights

        net = my_shapes.small_cnn()
        model = paddle.Model(net, my_shapes.small_cnn.input_spec)
        load_weights(model, project / "runs" / "shapes" / "checkpoints")
        data = my_shapes.Shapes(300, seed=1)
        inputs = np.stack([data[int(path.stem)][0] for path in pictures])
        net.eval()
        with paddle.no_grad():
            return softmax(net(paddle.to_tensor(inputs)).numpy())
    finally:
        sys.path.remove(str(project))
        sys.modules.pop("my_shapes", None)


def test_the_page_runs_end_to_end(project, subprocess_env, tmp_path):
    commands = doc_commands()
    for command in (
        "python train_shapes.py",
        "python save_pictures.py",
        "paddle-mnist predict --model runs/shapes pictures/*/*.png",
        "paddle-mnist evaluate runs/shapes --images pictures",
        "paddle-mnist serve --model runs/shapes",
    ):
        assert command in commands, command  # the page shows what this test runs

    # train; SIGKILL the whole process group mid-training; run again: it resumes from the last checkpoint
    checkpoints = project / "runs" / "shapes" / "checkpoints"
    first = subprocess.Popen(
        [PYTHON, "train_shapes.py"], cwd=project, env=subprocess_env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_checkpoint(first, checkpoints, KILL_AFTER_STEP, timeout=600)
    finally:
        kill_group(first)
        first.communicate(timeout=60)
    assert first.returncode == -9
    assert not (project / "runs" / "shapes" / "inference").exists()  # killed before the export
    killed_at = max(int(c.name[5:]) for c in checkpoints.glob("ckpt-*"))
    second = run([PYTHON, "train_shapes.py"], project, subprocess_env)
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    assert summary["resumed_from"] is not None and int(summary["resumed_from"][-9:]) >= killed_at >= KILL_AFTER_STEP
    assert summary["val_acc"] > 0.9  # 3 classes: chance is 1/3

    # PNG files written from the data set
    assert run([PYTHON, "save_pictures.py"], project, subprocess_env).returncode == 0
    pictures = sorted((project / "pictures").glob("*/*.png"), key=lambda p: int(p.stem))
    assert len(pictures) == 12 and {p.parent.name for p in pictures} <= {"circle", "square", "triangle"}
    expected = dygraph_probabilities(project, pictures)
    names = ["circle", "square", "triangle"]

    # paddle-mnist predict: the dygraph network's labels, with the user's class names
    predicted = run(paddle_mnist("predict", "--model", "runs/shapes", "--json", *map(str, pictures)), project,
                    subprocess_env)  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr
    answers = json.loads(predicted.stdout)["predictions"]
    assert [a["label"] for a in answers] == expected.argmax(1).tolist()
    assert [a["class_name"] for a in answers] == [names[i] for i in expected.argmax(1)]
    np.testing.assert_allclose([a["probabilities"] for a in answers], expected, atol=1e-4)
    table = run(paddle_mnist("predict", "--model", "runs/shapes", *map(str, pictures[:2])), project, subprocess_env)
    assert table.returncode == 0 and names[int(expected[0].argmax())] in table.stdout.splitlines()[1]

    # paddle-mnist export of the ResumeCkpt checkpoint, the network named by its factory (the page's command)
    command = next(c for c in commands if c.startswith("paddle-mnist export runs/shapes/checkpoints"))
    exported = run(paddle_mnist(*shlex.split(command)[1:]), project, subprocess_env)
    assert exported.returncode == 0, exported.stderr[-3000:]
    meta = json.loads((project / "runs/shapes/from_ckpt/small_cnn_meta.json").read_text())
    assert meta["class_names"] == names and meta["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    again = run(paddle_mnist("predict", "--model", "runs/shapes/from_ckpt/small_cnn", "--json", *map(str, pictures)),
                project, subprocess_env)  # fmt: skip
    assert [a["class_name"] for a in json.loads(again.stdout)["predictions"]] == [a["class_name"] for a in answers]

    # paddle-mnist evaluate --images: the folders are the true labels
    evaluated = run(paddle_mnist("evaluate", "runs/shapes", "--images", "pictures", "--json", "--report", "report"),
                    project, subprocess_env)  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    truth = np.array([names.index(p.parent.name) for p in pictures])
    result = json.loads(evaluated.stdout)
    assert result["samples"] == 12
    assert result["accuracy"] == pytest.approx(float((expected.argmax(1) == truth).mean()), abs=1e-6)
    assert (project / "report" / "misclassified.png").is_file()

    # paddle-mnist serve: one real request per picture on 127.0.0.1 (a free port), the server stopped here
    served = start_server(str(project / "runs" / "shapes"), tmp_path / "serve.log", subprocess_env)
    try:
        assert call(served, "GET", "/metadata")[1]["class_names"] == names
        for picture, row in zip(pictures, expected, strict=True):
            status, answer = call(served, "POST", "/predict", picture.read_bytes(), {"Content-Type": "image/png"})
            assert status == 200, answer
            assert answer["label"] == int(row.argmax()) and answer["class_name"] == names[int(row.argmax())]
            assert answer["model_input"].startswith("data:image/png;base64,")
    finally:
        assert stop_server(served.proc) == 0
