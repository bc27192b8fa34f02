"""The metrics file of a run (JSON lines, written by ``MetricsLog``): read it, plot it.

Neither function imports Paddle, and plotting uses matplotlib's object API
(``Figure`` on an Agg canvas), so the user's matplotlib backend (a notebook's,
say) is never switched. ``MetricsLog`` draws its plots in a background process
with ``python -m paddle_mnist_hapi.metrics_file METRICS_FILE OUT_DIR``, off the
training thread.

Examples:
    >>> import json, tempfile, pathlib
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> rows = [{"kind": "step", "step": s, "epoch": 0, "loss": 1 / s, "lr": 0.1} for s in (1, 2, 3)]
    >>> _ = (tmp / "m.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
    >>> len(read_metrics(tmp / "m.jsonl")), [p.name for p in plot_metrics(tmp / "m.jsonl", tmp / "plots")]
    (3, ['loss.png', 'lr.png'])
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from paddle_mnist_hapi.errors import DataCorruptError

__all__ = ["plot_metrics", "read_metrics"]

log = logging.getLogger(__name__)


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a metrics file; an unfinished last line (a killed writer) is ignored.

    Raises:
        DataCorruptError: a line other than the last is not a JSON record.

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.jsonl"
        >>> _ = path.write_text('{"kind": "step", "step": 1}\\n{"kind": "st')
        >>> read_metrics(path)
        [{'kind': 'step', 'step': 1}]
    """
    lines = Path(path).read_text().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break
            raise DataCorruptError(
                f"Line {number} of the metrics file is not a JSON record, so the file is damaged. Delete the "
                f"line or the file. Received: path={str(path)!r}, line={line[:80]!r}"
            ) from exc
    return records


def _series(records: Iterable[dict[str, Any]], kind: str, key: str, x: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for record in records:
        if record.get("kind") == kind and isinstance(record.get(key), (int, float)) and math.isfinite(record[key]):
            xs.append(record[x])
            ys.append(record[key])
    return xs, ys


#: The plots drawn from a metrics file: file name, title, and the record keys they show.
_PLOTS = (
    ("loss", "loss"),
    ("accuracy", "accuracy"),
    ("lr", "learning rate"),
    ("health", "gradient and parameter norms"),
)


def _keys_for(name: str, keys: set[str]) -> list[str]:
    if name == "accuracy":
        acc = sorted(k for k in keys if k.startswith("acc"))
        return acc[:1]
    if name == "health":
        return [k for k in ("grad_norm", "param_norm") if k in keys]
    return [name] if name in keys else []


def plot_metrics(metrics_path: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Plot a metrics file as ``loss.png``, ``accuracy.png``, ``lr.png`` (and ``health.png`` with norms).

    Each PNG has two panels: the ``step`` records against the global step, and
    the ``epoch`` (the training epoch's mean loss, its metrics, its last
    learning rate) and ``eval`` records against the epoch. A quantity absent
    from the file gets no PNG. matplotlib's global state (its backend, pyplot's
    figures) is left alone.

    Examples:
        >>> import json, tempfile, pathlib
        >>> tmp = pathlib.Path(tempfile.mkdtemp())
        >>> rows = [{"kind": "epoch", "step": 8 * e, "epoch": e, "loss": 1 / e, "acc": 0.9} for e in (1, 2)]
        >>> _ = (tmp / "m.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
        >>> [p.name for p in plot_metrics(tmp / "m.jsonl", tmp / "plots")]
        ['loss.png', 'accuracy.png']
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    records = read_metrics(metrics_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keys = {k for r in records for k in r if k not in ("kind", "step", "epoch")}
    written = []
    for name, title in _PLOTS:
        shown = _keys_for(name, keys)
        if not shown:
            continue
        if name == "health":
            path = _plot_health(records, shown, out / "health.png")
            if path is not None:
                written.append(path)
            continue
        fig = Figure(figsize=(11, 4))
        FigureCanvasAgg(fig)
        left, right = fig.subplots(1, 2)
        drawn = False
        for key in shown:
            running = "" if key in ("loss", "lr", "grad_norm", "param_norm") else " (epoch so far)"
            xs, ys = _series(records, "step", key, "step")
            if xs:
                left.plot(xs, ys, label=f"train {key}{running}")
                drawn = True
            for kind, marker, label in (("epoch", "o-", "train (epoch)"), ("eval", "s--", "eval")):
                xs, ys = _series(records, kind, key, "epoch")
                if xs:
                    right.plot([x + 1 for x in xs], ys, marker, label=f"{label} {key}")
                    drawn = True
        if not drawn:
            continue
        left.set(xlabel="global step", ylabel=title, title=f"{title} per step")
        right.set(xlabel="epoch", ylabel=title, title=f"{title} per epoch")
        right.xaxis.set_major_locator(MaxNLocator(integer=True))
        for axes in (left, right):
            axes.grid(alpha=0.3)
            if axes.get_legend_handles_labels()[0]:
                axes.legend()
        if name == "lr":
            for axes in (left, right):
                axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path, dpi=80)
        written.append(path)
    log.info("plot_metrics: wrote %s", ", ".join(str(p) for p in written) or "no plots (no metrics yet)")
    return written


def _plot_health(records: list[dict[str, Any]], keys: list[str], path: Path) -> Path | None:
    """Gradient norm (left axis) and parameter norm (right axis) against the global step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = {key: _series(records, "step", key, "step") for key in keys}
    if not any(xs for xs, _ in series.values()):
        return None
    fig = Figure(figsize=(11, 4))
    FigureCanvasAgg(fig)
    left = fig.subplots()
    axes = {"grad_norm": left, "param_norm": left.twinx() if len(keys) > 1 else left}
    colors = {"grad_norm": "tab:red", "param_norm": "tab:green"}
    for key in keys:
        axes[key].plot(*series[key], color=colors[key], label=key.replace("_", " "))
        axes[key].set_ylabel(key.replace("_", " "), color=colors[key])
    left.set(xlabel="global step", title="gradient norm (global, before clipping) and parameter norm")
    left.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m paddle_mnist_hapi.metrics_file METRICS_FILE OUT_DIR``: write the plots, print their paths."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write("usage: python -m paddle_mnist_hapi.metrics_file METRICS_FILE OUT_DIR\n")
        return 2
    for path in plot_metrics(args[0], args[1]):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
