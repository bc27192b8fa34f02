"""The run directory ``ResumeCkpt`` writes: a directory it can write, and the same one on every rank.

:func:`check_save_dir` refuses, when ``ResumeCkpt`` is built, what cannot be a run
directory: an existing file, or a checkpoint (``ckpt-*``) of another run.
:func:`check_run_dir`, at the start of ``fit``, has global rank 0 create the
directory and leave a fresh token in it; every rank then reads the token back
from *its* ``save_dir``. Under ``paddle.distributed.launch`` on several machines
this proves the ranks share one run directory (a shared file system): a machine
with its own disk would resume from nothing while the others resume from a
checkpoint, and the ranks would then wait on each other forever. The ranks
exchange what they saw, so every rank raises the same error together, before
training starts.

Examples:
    >>> import tempfile
    >>> run = Path(tempfile.mkdtemp()) / "run"
    >>> check_save_dir(run); check_run_dir(run); run.is_dir()
    True
    >>> try:
    ...     check_save_dir(run / "ckpt-000000160")
    ... except ConfigError as error:
    ...     print(str(error)[:80])
    ResumeCkpt's save_dir is the directory of one run, but this is one checkpoint of
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import paddle

from paddle_mnist_hapi.errors import ConfigError

__all__ = ["TOKEN_NAME", "check_run_dir", "check_save_dir"]

TOKEN_NAME = ".rank0-token"
_CHECKPOINT_NAME = re.compile(r"ckpt-\d+")


def check_save_dir(save_dir: str | os.PathLike[str]) -> None:
    """Refuse a ``save_dir`` that is an existing file or lies in a ``ckpt-*`` checkpoint directory.

    Raises:
        ConfigError: saying what to pass instead.
    """
    path = Path(save_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"ResumeCkpt's save_dir is the directory of one run (its checkpoints go into it), but {str(path)!r} "
            "is a file. To load weights from a file use model.load(...); to checkpoint, give a directory, e.g. "
            f"ResumeCkpt({str(path.with_suffix('')) + '_run'!r}). Received: save_dir={str(save_dir)!r}"
        )
    checkpoint = next((p for p in (path, *path.parents) if _CHECKPOINT_NAME.fullmatch(p.name)), None)
    if checkpoint is not None:
        raise ConfigError(
            "ResumeCkpt's save_dir is the directory of one run, but this is one checkpoint of a run "
            f"({checkpoint.name}); a run nested inside it would start from nothing. To continue that run, pass "
            f"its run directory: ResumeCkpt({str(checkpoint.parent)!r}). To start a new run from this checkpoint's "
            f"weights: ResumeCkpt('runs/new_run', init_from={str(checkpoint)!r}). Received: save_dir={str(save_dir)!r}"
        )


def _write_token(save_dir: Path, token: str) -> str | None:
    """Create ``save_dir`` and write ``token`` into it; the error, if that failed."""
    try:
        save_dir.mkdir(parents=True, exist_ok=True)
        (save_dir / TOKEN_NAME).write_text(token)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _reads_token(save_dir: Path, token: str | None) -> bool:
    try:
        return token is not None and (save_dir / TOKEN_NAME).read_text() == token
    except OSError:
        return False


def check_run_dir(save_dir: str | os.PathLike[str]) -> None:
    """Create the run directory (global rank 0) and check that every rank sees that same directory.

    In one process it checks that the directory can be created and written. Under
    ``paddle.distributed.launch`` it costs two small ``all_gather_object`` calls.

    Raises:
        ConfigError: the directory cannot be written, or some ranks do not see rank 0's
            (each machine its own disk); raised on every rank at once.
    """
    save_dir = Path(save_dir)
    rank, world = paddle.distributed.get_rank(), paddle.distributed.get_world_size()
    token = f"{uuid.uuid4().hex} {os.uname().nodename} {os.getpid()}"
    error = _write_token(save_dir, token) if rank == 0 else None
    rank0_dir = str(save_dir)
    if world == 1:
        seen = [error is None]
    else:
        written: list = []
        mine = (token, error, rank0_dir) if rank == 0 else None
        paddle.distributed.all_gather_object(written, mine)  # rank 0 has written its token
        token, error, rank0_dir = written[0]
        seen = []
        paddle.distributed.all_gather_object(seen, _reads_token(save_dir, token))  # every rank has read
    if rank == 0 and error is None:
        (save_dir / TOKEN_NAME).unlink(missing_ok=True)
    if error is not None:
        raise ConfigError(
            f"ResumeCkpt cannot write its checkpoints: creating and writing {str(save_dir)!r} failed ({error}). "
            f"Give it a directory you can write, e.g. ResumeCkpt('runs/my_run'). Received: save_dir={str(save_dir)!r}"
        )
    blind = [r for r, ok in enumerate(seen) if not ok]
    if blind:
        raise ConfigError(
            f"ResumeCkpt's save_dir must be shared storage that every rank reads (a shared file system when "
            f"training on several machines): ranks {blind} of {world} do not see the run directory global rank 0 "
            f"writes ({rank0_dir!r} on rank 0). With a directory of its own each machine would resume from "
            "different checkpoints. Point save_dir (fit's save_dir, --output) at one directory on shared storage, "
            f"mounted at the same path on every machine. Received: save_dir={str(save_dir)!r} on rank {rank}"
        )
