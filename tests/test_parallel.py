"""parallel: the --parallel switch (processes x threads), recorded per run and exact under resume."""

from __future__ import annotations

import json
import os

import pytest

from paddle_mnist_hapi.checkpoint.state import cpu_threads
from paddle_mnist_hapi.errors import ConfigError
from paddle_mnist_hapi.parallel import MEASURED, PLAN_FILE, Plan, apply_threads, needs_launch, prepare_run, resolve_plan
from paddle_mnist_hapi.recipe import TrainConfig, train


@pytest.mark.parametrize(
    ("text", "plan"), [("2x1", Plan(2, 1)), ("1X2", Plan(1, 2)), (" 4 x 2 ", Plan(4, 2)), ("off", None)]
)
def test_plans_parse(text, plan) -> None:
    assert resolve_plan(text) == plan


@pytest.mark.parametrize("text", ["2", "0x1", "1x0", "two", "auto2", ""])
def test_bad_plans_are_refused_with_the_accepted_forms(text) -> None:
    with pytest.raises(ConfigError, match=r"'off', 'auto' or PROCSxTHREADS|positive integer"):
        resolve_plan(text)


def test_auto_uses_the_measured_table_then_one_process_per_core() -> None:
    assert resolve_plan("auto", cores=2, table={}) == MEASURED[2] == Plan(2, 1)
    assert resolve_plan("auto", cores=8, table={}) == Plan(8, 1)
    assert resolve_plan("auto", cores=8, table={8: "4x2"}) == Plan(4, 2)
    assert resolve_plan("auto").cores >= 1


@pytest.mark.parametrize(
    ("cores", "batch_size", "plan"),
    [(2, 64, Plan(1, 1)), (2, 128, Plan(2, 1)), (2, 130, Plan(2, 1)), (2, 127, Plan(1, 1)), (8, 256, Plan(4, 1))],
)
def test_auto_leaves_every_process_enough_images_of_the_step(cores, batch_size, plan) -> None:
    assert resolve_plan("auto", cores=cores, table={}, batch_size=batch_size) == plan
    assert resolve_plan("2x1", cores=cores, table={}, batch_size=64) == Plan(2, 1)  # an explicit plan is taken as is


def test_a_run_keeps_the_plan_it_started_with(tmp_path) -> None:
    assert prepare_run("off", tmp_path) is None and not (tmp_path / PLAN_FILE).exists()
    assert prepare_run("1x1", tmp_path) == Plan(1, 1)
    assert json.loads((tmp_path / PLAN_FILE).read_text())["plan"] == "1x1"
    assert prepare_run("auto", tmp_path) == Plan(1, 1)  # resumed: the recorded plan, not this machine's choice
    assert prepare_run("off", tmp_path) == Plan(1, 1)
    with pytest.raises(ConfigError, match=r"started with parallel='1x1'.*--parallel 1x1.*Received: parallel='2x1'"):
        prepare_run("2x1", tmp_path)
    assert prepare_run("1x1", tmp_path, resume=False) == Plan(1, 1)  # a fresh start may choose again
    (tmp_path / PLAN_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        prepare_run("auto", tmp_path)


def test_needs_launch_only_for_several_processes_outside_a_launcher() -> None:
    assert needs_launch(Plan(2, 1)) and not needs_launch(Plan(1, 2)) and not needs_launch(None)


def test_a_run_keeps_its_thread_count_and_applies_it_on_resume(tmp_path) -> None:
    """Whether another thread count changes the arithmetic depends on the CPU (1 and 2 threads trained LeNet-5
    bit-identically on an Intel Xeon with MKL, differently on an AMD EPYC), so a run keeps the count it
    started with: recorded, refused when another is asked for, applied when the run is resumed."""
    try:
        assert prepare_run("1x2", tmp_path) == Plan(1, 2)
        assert json.loads((tmp_path / PLAN_FILE).read_text())["threads"] == 2
        assert cpu_threads() == 2  # what Paddle's OpenMP runtime now uses
        apply_threads(1)  # a new process: Paddle's default of one thread
        with pytest.raises(ConfigError, match=r"started with parallel='1x2'.*Received: parallel='1x1'"):
            prepare_run("1x1", tmp_path)
        assert cpu_threads() == 1  # refused before anything was applied
        assert prepare_run("auto", tmp_path) == Plan(1, 2) and cpu_threads() == 2  # resumed: the recorded count
        assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "2"  # and for launched processes
    finally:
        apply_threads(1)


def test_recipe_runs_on_two_processes_and_resumes_only_with_its_plan(tmp_path) -> None:
    config = dict(model="linear", epochs=1, limit=256, output=str(tmp_path), verbose=0)
    summary = train(TrainConfig(**config, parallel="2x1"))
    assert summary["ranks"] == 2 and summary["config"]["parallel"] == "2x1"
    assert summary["batch_per_process"] == 32  # the step's 64 images, split over the 2 processes
    assert (tmp_path / "launch" / "workerlog.1").is_file()
    assert json.loads((tmp_path / PLAN_FILE).read_text())["plan"] == "2x1"
    with pytest.raises(ConfigError, match="started with parallel='2x1'"):
        train(TrainConfig(**config, parallel="1x1"))
    resumed = train(TrainConfig(**config, parallel="auto"))  # takes the recorded 2x1; the run is finished
    assert resumed["ranks"] == 2 and resumed["resume"]["start_epoch"] == 1


def test_a_batch_that_does_not_split_over_the_processes_is_refused_before_launching(tmp_path) -> None:
    config = TrainConfig(model="linear", epochs=1, limit=256, batch_size=63, output=str(tmp_path), parallel="2x1")
    with pytest.raises(ConfigError, match=r"63 does not split into 2 equal parts\. Use a multiple of 2, such as 62"):
        train(config)
    assert not (tmp_path / "launch").exists() and not (tmp_path / PLAN_FILE).exists()  # nothing recorded


def test_a_plan_that_contradicts_the_users_own_launcher_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PADDLE_TRAINERS_NUM", "4")
    monkeypatch.setenv("PADDLE_LOCAL_SIZE", "4")
    monkeypatch.setenv("PADDLE_TRAINER_ID", "1")
    with pytest.raises(ConfigError, match=r"started 4 processes.*asks for 2.*--parallel off"):
        prepare_run("2x1", tmp_path)
    assert prepare_run("4x1", tmp_path) == Plan(4, 1) and not (tmp_path / PLAN_FILE).exists()  # only rank 0 writes
    assert prepare_run("off", tmp_path) is None


def test_a_rank_reading_the_plan_while_rank_0_records_it_never_sees_a_partial_file(tmp_path) -> None:
    """Under the launcher every rank reads OUTPUT/parallel.json while rank 0 records it again (CI once
    read an empty file there). The record is replaced whole, so a reader sees the old or the new plan."""
    import threading

    from paddle_mnist_hapi.parallel import _read_plan

    prepare_run("1x1", tmp_path)
    errors: list[Exception] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                assert _read_plan(tmp_path / PLAN_FILE) == Plan(1, 1)
            except Exception as exc:  # any failure to read is the bug
                errors.append(exc)
                return

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(2000):
            prepare_run("1x1", tmp_path)
    finally:
        done.set()
        reader.join()
    assert not errors, errors[0]
