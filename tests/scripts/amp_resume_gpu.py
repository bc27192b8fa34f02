"""ResumeCkpt with AMP, for real, on a GPU: the loss scaler and EMA's float32 average survive a resume.

    python tests/scripts/amp_resume_gpu.py [WORK_DIR]

For O1 and O2 it trains an MLP on real MNIST with ``prepare(amp_configs=...)`` (a loss
scale that doubles every 3 good steps) and ``EMA``: once straight for 3 epochs, and once
for 2 epochs then resumed for the 3rd in a new process. It prints ``O1: exact`` and
``O2: exact`` when the resumed run ends with the straight run's scaler state (scale,
good/bad step counts), weights and EMA average, bit for bit, and the average is float32
(under O2 the weights are float16); else it exits 1. Without a CUDA GPU it prints
``skipped: ...`` and exits 0 (Paddle disables AMP and its scaler on CPU).
``--device cpu`` runs the same comparisons there without a scaler: a smoke test of
this script only. ``tests/test_resume_modes.py::test_amp_resume_on_a_gpu`` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def has_gpu() -> bool:
    import paddle

    return paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


def train(args: argparse.Namespace) -> None:
    """One run (a child process): train to ``--epochs`` with ResumeCkpt, write what it ended with."""
    os.environ.setdefault("FLAGS_cudnn_deterministic", "1")
    import paddle

    from paddle_mnist_hapi import MNIST, create_model, specs_for
    from paddle_mnist_hapi.callbacks import EMA, ResumeCkpt

    paddle.set_device(args.device)
    paddle.seed(0)
    np.random.seed(0)
    net = create_model("mlp")
    model = paddle.Model(net, *specs_for("mlp"))
    amp = {"level": args.level, "init_loss_scaling": 1024.0, "incr_every_n_steps": 3}
    model.prepare(paddle.optimizer.Adam(1e-3, parameters=net.parameters()), paddle.nn.CrossEntropyLoss(),
                  paddle.metric.Accuracy(), amp_configs=amp)  # fmt: skip
    ema, ckpt = EMA(decay=0.9, keep="trained"), ResumeCkpt(args.save_dir)
    model.fit(MNIST("train", limit=512), batch_size=64, epochs=args.epochs, verbose=0, callbacks=[ckpt, ema])
    scaler = model._scaler.state_dict() if model._scaler is not None else {}
    arrays = {f"param/{k}": v.numpy() for k, v in model.network.state_dict().items()}
    arrays.update({f"ema/{k}": v for k, v in ema.averaged_weights().items()})
    np.savez(args.out + ".npz", **arrays)
    Path(args.out + ".json").write_text(json.dumps({
        "scaler": {k: np.asarray(v).tolist() for k, v in scaler.items()},
        "param_dtypes": sorted({str(v.dtype) for v in model.network.state_dict().values()}),
        "ema_dtypes": sorted({str(v.dtype) for v in ema.averaged_weights().values()}),
        "resumed_from": ckpt.report["resumed_from"],
    }))  # fmt: skip


def run(level: str, save_dir: Path, epochs: int, out: Path, device: str) -> dict:
    command = [sys.executable, __file__, "--child", "--level", level, "--save-dir", str(save_dir),
               "--epochs", str(epochs), "--out", str(out), "--device", device]  # fmt: skip
    subprocess.run(command, check=True, timeout=1200)
    with np.load(f"{out}.npz") as data:
        arrays = {k: data[k] for k in data.files}
    return {**json.loads(Path(f"{out}.json").read_text()), "arrays": arrays}


def check(level: str, work: Path, device: str) -> list[str]:
    straight = run(level, work / f"{level}-straight", 3, work / f"{level}-straight-out", device)
    run(level, work / f"{level}-resumed", 2, work / f"{level}-first-out", device)
    resumed = run(level, work / f"{level}-resumed", 3, work / f"{level}-resumed-out", device)  # a new process
    problems = []
    if not (resumed["resumed_from"] or "").endswith("ckpt-000000016"):
        problems.append(f"did not resume from epoch 2's checkpoint: {resumed['resumed_from']}")
    if resumed["scaler"] != straight["scaler"]:
        problems.append(f"scaler {resumed['scaler']} != straight run's {straight['scaler']}")
    if device == "gpu" and straight["scaler"].get("scale") in (None, [1024.0]):
        problems.append(f"the loss scale never changed ({straight['scaler']}): nothing was checked")
    differ = [k for k in straight["arrays"] if not np.array_equal(straight["arrays"][k], resumed["arrays"][k])]
    if differ:
        problems.append(f"{len(differ)} arrays differ from the straight run's, e.g. {differ[:3]}")
    if resumed["ema_dtypes"] != ["float32"]:
        problems.append(f"EMA's average is {resumed['ema_dtypes']}, not float32 (weights: {resumed['param_dtypes']})")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("work_dir", nargs="?")
    parser.add_argument("--device", default="gpu", choices=["gpu", "cpu"])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--level", default="O1")
    parser.add_argument("--save-dir")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        train(args)
        return 0
    if args.device == "gpu" and not has_gpu():
        print("skipped: no CUDA GPU (Paddle disables AMP and its loss scaler on CPU)")
        return 0
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="amp_resume_"))
    failed = False
    for level in ("O1", "O2"):
        problems = check(level, work, args.device)
        print(f"{level}: exact" if not problems else f"{level}: NOT exact: " + "; ".join(problems), flush=True)
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
