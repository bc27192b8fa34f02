"""``--model package.module:factory``: a network of the user's, wherever the command line takes a model name."""

from __future__ import annotations

import json
import subprocess

import pytest

from paddle_mnist_hapi.errors import ConfigError
from paddle_mnist_hapi.models.user_factory import load_factory, network_and_specs

from conftest import PYTHON

MY_NETS = """
import paddle
from paddle.static import InputSpec

CONSTANT = 3


def digit_net():
    layers = [paddle.nn.Flatten(), paddle.nn.Linear(784, 32), paddle.nn.ReLU(), paddle.nn.Linear(32, 10)]
    return paddle.nn.Sequential(*layers)


def rgb_net():
    return paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.Flatten(), paddle.nn.Linear(4 * 14 * 14, 3))


rgb_net.input_spec = InputSpec([None, 3, 16, 16], "float32", "image")


def not_a_layer():
    return {"weights": 1}


def fails():
    raise RuntimeError("no GPU here")


def bad_spec():
    return digit_net()


bad_spec.input_spec = [3, 32, 32]
"""


@pytest.fixture
def nets(tmp_path, monkeypatch):
    """A directory with the user's module ``my_nets.py`` (and two broken ones), made the current directory."""
    (tmp_path / "my_nets.py").write_text(MY_NETS)
    (tmp_path / "broken_nets.py").write_text("raise ValueError('typo in the module')\n")
    (tmp_path / "needs_torch_nets.py").write_text("import torch_that_is_not_here\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    import sys

    for name in ("my_nets", "broken_nets", "needs_torch_nets"):
        sys.modules.pop(name, None)


def test_a_factory_builds_the_network_with_its_input_spec(nets):
    net, inputs, labels = network_and_specs("my_nets:rgb_net")
    assert type(net).__name__ == "Sequential" and inputs[0].shape == (-1, 3, 16, 16) and labels[0].name == "label"
    assert network_and_specs("my_nets:digit_net")[1][0].shape == (-1, 1, 28, 28)  # MNIST's, by default
    assert network_and_specs("my_nets:digit_net", [784])[1][0].shape == (-1, 784)  # --input-shape first


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("no_such_module:net", "no module named 'no_such_module' in the current directory"),
        ("needs_torch_nets:net", "it imports 'torch_that_is_not_here', which is not installed"),
        ("broken_nets:net", "raised ValueError: typo in the module"),
        ("my_nets:digitnet", "has no attribute 'digitnet' (from --model my_nets:digitnet). Did you mean 'digit_net'"),
        ("my_nets:CONSTANT", "is a int, not a function or class"),
        ("my_nets:not_a_layer", "returned a builtins.dict, not a paddle.nn.Layer"),
        ("my_nets:fails", "Calling my_nets:fails() raised RuntimeError: no GPU here"),
        ("my_nets:bad_spec", "input_spec must be a paddle.static.InputSpec"),
        ("my_nets.py:digit_net", "the module's name, not its file. Did you mean my_nets:digit_net?"),
    ],
)
def test_a_factory_that_cannot_be_used_is_one_clear_error(nets, name, fragment):
    with pytest.raises(ConfigError) as error:
        network_and_specs(name)
    assert fragment in str(error.value)


def test_input_shape_is_for_factories_only():
    with pytest.raises(ConfigError, match="--input-shape is for a network of your own"):
        network_and_specs("lenet5", [784])
    assert callable(load_factory("paddle.vision.models:LeNet"))  # an installed package works too


def _cli(args: list[str], cwd, env) -> subprocess.CompletedProcess[str]:
    command = [PYTHON, "-m", "paddle_mnist_hapi.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False, cwd=cwd)


def test_train_takes_a_factory_and_refuses_a_broken_one_in_one_line(nets, subprocess_env):
    done = _cli(
        ["train", "--model", "my_nets:digit_net", "--epochs", "1", "--limit", "2048", "--fast-epochs", "0",
         "--no-augment", "--output", "run", "--verbose", "0"],
        nets, subprocess_env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["model"] == "my_nets:digit_net" and summary["export"].endswith("inference/digit_net")
    assert summary["test_acc"] > 0.5  # a real network trained on the real MNIST (chance: 0.1)
    meta = json.loads((nets / "run" / "inference" / "digit_net_meta.json").read_text())
    assert meta["preprocessing"]["kind"] == "mnist_digits"

    for args, fragment in [
        (["--model", "my_nets:digitnet"], "Did you mean 'digit_net'"),
        (["--model", "my_nets:rgb_net"], "InputSpec"),  # 3x16x16 network, MNIST samples: refused at fit's start
        (["--model", "lenet5", "--input-shape", "784"], "--input-shape is for a network of your own"),
    ]:
        proc = _cli(["train", *args, "--epochs", "1", "--limit", "64", "--output", "bad", "--verbose", "0"], nets,
                    subprocess_env)  # fmt: skip
        assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
        lines = proc.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and fragment in lines[-1], proc.stderr[-2000:]
