"""An export is used whole or not at all: the metadata records each model file's size and sha256, every
loader checks them, and an export SIGKILLed between its renames is refused, never used half old, half new."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess

import numpy as np
import paddle
import pytest
from test_cli import assert_one_line_error, run

from paddle_mnist_hapi import create_model, specs_for
from paddle_mnist_hapi.deploy.export import export_model, load_inference_predictor, run_predictor
from paddle_mnist_hapi.deploy.onnx_export import export_onnx, onnx_available
from paddle_mnist_hapi.deploy.predict import Predictor
from paddle_mnist_hapi.errors import ExportError
from paddle_mnist_hapi.serve.server import load_checked_predictor

from conftest import PYTHON

MIXED = r"The export at .* is incomplete or mixed: .* export the model again"
OLD_NAMES, NEW_NAMES = [f"old{i}" for i in range(10)], [f"new{i}" for i in range(10)]
BATCH = np.random.default_rng(3).uniform(-1, 1, (4, 1, 28, 28)).astype(np.float32)

# Exports the LeNet-5 whose weights are in argv[1] to the prefix argv[2], with the class names NEW_NAMES.
EXPORT_SCRIPT = """
import sys, paddle
from paddle_mnist_hapi import create_model, export_model, specs_for
net = create_model("lenet5")
net.set_state_dict(paddle.load(sys.argv[1]))
export_model(paddle.Model(net, *specs_for("lenet5")), sys.argv[2], class_names=[f"new{i}" for i in range(10)])
"""


def _lenet(seed: int) -> paddle.Model:
    paddle.seed(seed)
    return paddle.Model(create_model("lenet5"), *specs_for("lenet5"))


def _outcome(prefix, old: Predictor, new: Predictor) -> str:
    """'old' or 'new' when the prefix loads as exactly one of the complete exports, 'refused' when it is
    refused as mixed; fails the test when it loads as anything else (a mixed export in use)."""
    try:
        loaded = Predictor(prefix)
    except ExportError as error:
        assert "incomplete or mixed" in str(error) and "export the model again" in str(error), error
        return "refused"
    logits = loaded.logits(BATCH)
    for name, whole in (("old", old), ("new", new)):
        if loaded.class_names == whole.class_names and np.array_equal(logits, whole.logits(BATCH)):
            return name
    raise AssertionError(f"a mixed export was used: class names {loaded.class_names[:2]}..., logits {logits[0]}")


def _export_killed_after(moves: int, prefix, weights, env) -> None:
    """Run EXPORT_SCRIPT in its own session, pausing after ``moves`` renames, and SIGKILL it there."""
    env = {**env, "PADDLE_MNIST_HAPI_PAUSE_EXPORT_MOVE": f"{moves}:60"}
    proc = subprocess.Popen([PYTHON, "-c", EXPORT_SCRIPT, str(weights), str(prefix)], env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    seen: list[str] = []
    try:
        for line in proc.stderr:  # ends at the latest when the script does (after its 60 s pause)
            seen.append(line)
            if line.startswith("PADDLE_MNIST_HAPI_PAUSE_EXPORT_MOVE: moved"):
                assert line.rstrip().endswith(f"({moves})"), line
                break
        else:
            raise AssertionError(f"the export never made {moves} moves: {''.join(seen)}")
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)


def test_an_export_records_the_size_and_sha256_of_its_model_files(tmp_path):
    report = export_model(_lenet(1), tmp_path / "m")
    meta = json.loads((tmp_path / "m_meta.json").read_text())
    for suffix in (".json", ".pdiparams"):
        data = (tmp_path / f"m{suffix}").read_bytes()
        assert meta["files"][suffix] == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert report.metadata["files"] == meta["files"]


@pytest.mark.parametrize("old_metadata", ["with sha256", "from a release without them"])
@pytest.mark.parametrize("moves", [1, 2], ids=["killed after 1 of 3 renames", "killed after 2 of 3 renames"])
def test_an_export_killed_between_its_renames_is_refused_never_used_mixed(
    tmp_path, subprocess_env, moves, old_metadata
):
    old_model, new_model = _lenet(1), _lenet(2)
    export_model(old_model, tmp_path / "old" / "m", class_names=OLD_NAMES)
    export_model(new_model, tmp_path / "new" / "m", class_names=NEW_NAMES)  # the reference for the new one
    old, new = Predictor(tmp_path / "old" / "m"), Predictor(tmp_path / "new" / "m")
    assert not np.array_equal(old.logits(BATCH), new.logits(BATCH))

    target = tmp_path / "target"
    shutil.copytree(tmp_path / "old", target)
    if old_metadata != "with sha256":  # an export written before the sha256 were recorded
        meta = json.loads((target / "m_meta.json").read_text())
        del meta["files"]
        (target / "m_meta.json").write_text(json.dumps(meta))
    assert _outcome(target / "m", old, new) == "old"
    paddle.save(new_model.network.state_dict(), str(tmp_path / "new.pdparams"))

    _export_killed_after(moves, target / "m", tmp_path / "new.pdparams", subprocess_env)
    assert _outcome(target / "m", old, new) == "refused"
    assert len(list(target.glob(".m.export-*"))) == 1  # the killed export's temporary directory stays behind
    with pytest.raises(ExportError, match=MIXED):
        load_inference_predictor(target / "m")
    with pytest.raises(ExportError, match=MIXED):
        load_checked_predictor(target / "m")  # what `paddle-mnist serve` loads before it binds

    export_model(new_model, target / "m", class_names=NEW_NAMES)  # exporting again repairs it
    assert _outcome(target / "m", old, new) == "new"
    assert sorted(p.name for p in target.iterdir() if not p.name.startswith(".")) == [
        "m.json", "m.pdiparams", "m_meta.json"
    ]  # fmt: skip


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """An export whose .pdiparams is another export's (what a kill between the renames, or model.save
    over an export, leaves), and a copy of the complete one."""
    root = tmp_path_factory.mktemp("mixed")
    export_model(_lenet(1), root / "m", class_names=OLD_NAMES)
    export_model(_lenet(2), root / "other", class_names=NEW_NAMES)
    shutil.copytree(root, root / "whole", ignore=shutil.ignore_patterns("whole"))
    shutil.copy(root / "other.pdiparams", root / "m.pdiparams")
    return root


def test_a_mixed_export_is_refused_by_each_loader_with_one_clear_error(mixed):
    with pytest.raises(ExportError, match=MIXED) as error:
        Predictor(mixed / "m")
    assert "m.pdiparams" in str(error.value) and "m_meta.json" in str(error.value)
    with pytest.raises(ExportError, match=MIXED):
        load_inference_predictor(mixed / "m")
    if onnx_available():
        with pytest.raises(ExportError, match=MIXED):
            export_onnx(mixed / "m", mixed / "x.onnx")
        assert not (mixed / "x.onnx").exists()
    assert Predictor(mixed / "whole" / "m").class_names == OLD_NAMES  # the untouched copy loads


@pytest.mark.parametrize(
    "command",
    [["predict", "--model", "{m}", "{png}"], ["evaluate", "{m}", "--limit", "10"], ["export", "{m}", "--onnx"],
     ["serve", "--model", "{m}", "--port", "0"]],
    ids=["predict", "evaluate", "export --onnx", "serve"],
)  # fmt: skip
def test_the_command_line_refuses_a_mixed_export_with_one_error_line(mixed, command, subprocess_env, tmp_path):
    from PIL import Image

    Image.new("L", (28, 28)).save(tmp_path / "x.png")
    args = [a.format(m=mixed / "m", png=tmp_path / "x.png") for a in command]
    assert_one_line_error(run(args, subprocess_env, timeout=120), "is incomplete or mixed", "export the model again")


def test_an_export_without_sha256_still_loads_with_a_warning(tmp_path, caplog):
    export_model(_lenet(1), tmp_path / "m", class_names=OLD_NAMES)
    meta = json.loads((tmp_path / "m_meta.json").read_text())
    del meta["files"]
    (tmp_path / "m_meta.json").write_text(json.dumps(meta))
    with caplog.at_level("WARNING", logger="paddle_mnist_hapi"):
        predictor = Predictor(tmp_path / "m")
    assert predictor.class_names == OLD_NAMES
    assert "records no sha256 of the model files" in caplog.text and "Export the model again" in caplog.text
    assert run_predictor(load_inference_predictor(tmp_path / "m"), BATCH).shape == (4, 10)


def test_a_bare_model_save_without_metadata_loads_as_it_is(tmp_path, caplog):
    model = _lenet(1)
    model.save(str(tmp_path / "bare"), training=False)
    with caplog.at_level("WARNING", logger="paddle_mnist_hapi"):
        predictor = Predictor(tmp_path / "bare")
    assert predictor.metadata == {} and predictor.class_names == [str(i) for i in range(10)]
    assert "sha256" not in caplog.text
    model.network.eval()
    assert np.allclose(predictor.logits(BATCH), model.network(paddle.to_tensor(BATCH)).numpy(), atol=1e-4)


def test_the_loaded_model_is_the_checked_bytes_whatever_happens_at_the_prefix_meanwhile(mixed, tmp_path, monkeypatch):
    from paddle_mnist_hapi.deploy import export

    whole = shutil.copytree(mixed / "whole", tmp_path / "whole")
    expected = Predictor(whole / "m").logits(BATCH)
    create = export._create_predictor

    def replaced_after_the_check(*args):
        shutil.copy(whole / "other.pdiparams", whole / "m.pdiparams")  # another export's weights, just checked
        return create(*args)

    monkeypatch.setattr(export, "_create_predictor", replaced_after_the_check)
    predictor = Predictor(whole / "m")
    assert predictor.class_names == OLD_NAMES and np.array_equal(predictor.logits(BATCH), expected)
    monkeypatch.undo()
    with pytest.raises(ExportError, match=MIXED):
        Predictor(whole / "m")  # the next load reads the replaced file and refuses it


@pytest.mark.skipif(not onnx_available(), reason="the onnx extra (paddle2onnx, onnxruntime) is missing")
def test_onnx_export_records_nothing_when_the_export_is_replaced_during_the_conversion(tmp_path, monkeypatch):
    from paddle_mnist_hapi.deploy import onnx_export

    export_model(_lenet(1), tmp_path / "m", class_names=OLD_NAMES)
    convert = onnx_export._convert

    def another_export_meanwhile(*args, **kwargs):
        export_model(_lenet(2), tmp_path / "m", class_names=NEW_NAMES)  # a real export, while converting
        return convert(*args, **kwargs)

    monkeypatch.setattr(onnx_export, "_convert", another_export_meanwhile)
    with pytest.raises(ExportError, match=r"was replaced while it was converted .* run the ONNX export again"):
        export_onnx(tmp_path / "m")
    assert not (tmp_path / "m.onnx").exists()
    meta = json.loads((tmp_path / "m_meta.json").read_text())
    assert meta["class_names"] == NEW_NAMES and "onnx" not in meta  # the new export, untouched
    assert Predictor(tmp_path / "m").class_names == NEW_NAMES


def test_the_load_check_bench_measures_both_loads(tmp_path):
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("export_load_check", ROOT / "bench" / "export_load_check.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.measure("lenet5", 2, str(tmp_path))
    assert result["rounds"] == 2 and result["model_files_mb"] > 0.1
    assert 0 < result["check_ms"] and 0 < result["unchecked_ms"] and 0 < result["checked_ms"] and result["ratio"] > 0
