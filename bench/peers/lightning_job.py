"""The peers' job with PyTorch Lightning: ``ModelCheckpoint(every_n_train_steps=4, save_last=True)``.

    python bench/peers/lightning_job.py --out OUT --data DATA.npz [--ckpt-dir DIR] [--rounds N]

Resumed with ``trainer.fit(..., ckpt_path="last")``. As its documentation shows
it: a ``LightningModule`` (LeNet-5, Adam, the polynomial schedule stepped every
batch), a shuffled ``DataLoader``, ``seed_everything`` and
``Trainer(deterministic=True)``. See ``bench/peers/job_spec.py``.
"""

from __future__ import annotations

import tempfile
import warnings
from typing import Any

import lightning as L
import torch
from job_spec import (
    BATCH,
    EPOCHS,
    EVERY,
    LR,
    SEED,
    Steps,
    arguments,
    finish,
    load_data,
    polynomial_lr,
    timed,
    timing_report,
)
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class LeNet5(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.network = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
        )  # fmt: skip

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self.network(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.log("acc", (logits.argmax(1) == y).float().mean())
        return loss

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=LR)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: polynomial_lr(step) / LR)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class Progress(L.Callback):
    def __init__(self, steps: Steps) -> None:
        self.steps, self.start = steps, 0

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.start = trainer.global_step  # after a resume: where the checkpoint was

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.steps.done(trainer.global_step)


def fit(
    data: tuple[Any, Any], ckpt_dir: str | None, steps: Steps | None = None
) -> tuple[Any, tuple[float, float], Any]:
    L.seed_everything(SEED, verbose=False)
    images, labels = data
    loader = DataLoader(TensorDataset(torch.from_numpy(images), torch.from_numpy(labels)), batch_size=BATCH,
                        shuffle=True)  # fmt: skip
    module = LeNet5()
    callbacks: list[Any] = []
    if ckpt_dir:
        callbacks.append(L.pytorch.callbacks.ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=EVERY,
                                                             save_last=True))  # fmt: skip
    progress = Progress(steps) if steps is not None else None
    if progress is not None:
        callbacks.append(progress)
    trainer = L.Trainer(
        max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, deterministic=True, callbacks=callbacks,
        enable_checkpointing=bool(ckpt_dir),
    )  # fmt: skip
    seconds = timed(lambda: trainer.fit(module, loader, ckpt_path="last" if ckpt_dir else None))
    return module, seconds, progress


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")  # "The dataloader does not have many workers", "no checkpoint found"
    data = load_data(args.data)
    if args.rounds:
        fit(data, None)  # warm-up
        with tempfile.TemporaryDirectory() as tmp:
            runs = [(fit(data, None)[1], fit(data, f"{tmp}/{n}")[1]) for n in range(args.rounds)]
            pairs = [(wall, wall_ckpt, cpu, cpu_ckpt) for (wall, cpu), (wall_ckpt, cpu_ckpt) in runs]
        finish(args.out, {}, **timing_report(pairs), lightning=L.__version__, torch=torch.__version__)
        return
    steps = Steps(args.out)
    module, seconds, progress = fit(data, args.ckpt_dir, steps)
    weights = {name: tensor.detach().numpy() for name, tensor in module.network.state_dict().items()}
    finish(args.out, weights, start_step=progress.start, trained=steps.count, fit_seconds=seconds[0],
           lightning=L.__version__, torch=torch.__version__)  # fmt: skip


if __name__ == "__main__":
    main()
