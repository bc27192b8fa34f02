"""The package as a user meets it: callbacks listed, errors importable, bare ``@register_model``, Paddle versions."""

from __future__ import annotations

import configparser
import subprocess

import paddle
import pytest

import paddle_mnist_hapi
from paddle_mnist_hapi import callbacks
from paddle_mnist_hapi._private import paddle_version

from conftest import PYTHON, ROOT


def test_callbacks_all_lists_callbacks_only_sorted():
    assert callbacks.__all__ == sorted(callbacks.__all__)
    for name in callbacks.__all__:
        assert issubclass(getattr(callbacks, name), paddle.callbacks.Callback), name


def test_helpers_live_in_their_modules_and_old_imports_still_work():
    from paddle_mnist_hapi.callbacks.metrics_log import read_metrics

    assert "read_metrics" not in callbacks.__all__ and "read_metrics" not in dir(callbacks)
    assert callbacks.read_metrics is read_metrics
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        callbacks.nope  # noqa: B018


def test_every_error_is_importable_from_the_package():
    from paddle_mnist_hapi import errors

    for name in errors.__all__:
        assert getattr(paddle_mnist_hapi, name) is getattr(errors, name)
        assert issubclass(getattr(paddle_mnist_hapi, name), paddle_mnist_hapi.PaddleMnistError)


def test_register_model_works_bare_as_in_timm():
    from paddle_mnist_hapi.models import registry

    @paddle_mnist_hapi.register_model
    def bare_test_model(num_classes=10):
        return paddle.nn.Sequential(paddle.nn.Flatten(), paddle.nn.Linear(784, num_classes))

    try:
        assert registry.model_entry("bare_test_model").input_kind == "image"
        net = paddle_mnist_hapi.create_model("bare_test_model", num_classes=3)
        assert list(net(paddle.zeros([2, 1, 28, 28])).shape) == [2, 3]
    finally:
        registry._REGISTRY.pop("bare_test_model")


@pytest.mark.parametrize("version", ["3.0.0", "3.3.1", "3.3.0rc1", "0.0.0", None, "unknown"])
def test_supported_or_unknown_paddle_versions_pass_the_check(version, recwarn):
    paddle_version.check(version)
    assert not [w for w in recwarn if "paddle-mnist-hapi" in str(w.message)]


def test_an_older_paddle_is_refused_and_a_newer_one_warned_about():
    with pytest.raises(paddle_mnist_hapi.PaddleVersionError, match=r"needs PaddlePaddle >=3\.0,<3\.4, but 2\.6\.2"):
        paddle_version.check("2.6.2")
    with pytest.warns(UserWarning, match=r"tested with PaddlePaddle >=3\.0,<3\.4.*; 3\.4\.0 is newer"):
        paddle_version.check("3.4.0")


def test_the_checked_range_is_the_one_setup_cfg_declares():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    cpu_extra = config["options.extras_require"]["cpu"].split()
    assert cpu_extra == [f"paddlepaddle{paddle_version.SUPPORTED}"]
    assert paddle_version.installed_version() == paddle.__version__


def _import_package(pythonpath: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = "import sys, paddle_mnist_hapi; print('paddle imported:', 'paddle' in sys.modules)"
    return subprocess.run(
        [PYTHON, "-c", code], env={**env, "PYTHONPATH": pythonpath}, capture_output=True, text=True, timeout=120
    )


def test_import_checks_the_version_without_importing_paddle(tmp_path, subprocess_env):
    result = _import_package(str(ROOT), subprocess_env)
    assert result.returncode == 0, result.stderr
    assert "paddle imported: False" in result.stdout

    # An old Paddle on the path (a stand-in that fails if anything imports it): one clear error.
    (tmp_path / "paddle" / "version").mkdir(parents=True)
    (tmp_path / "paddle" / "__init__.py").write_text("raise RuntimeError('paddle was imported')\n")
    (tmp_path / "paddle" / "version" / "__init__.py").write_text("full_version     = '2.6.2'\n")
    result = _import_package(f"{tmp_path}:{ROOT}", subprocess_env)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("paddle_mnist_hapi.errors.PaddleVersionError: paddle-mnist-hapi needs PaddlePaddle")
    assert "but 2.6.2 is installed" in last_line and "paddle was imported" not in result.stderr
