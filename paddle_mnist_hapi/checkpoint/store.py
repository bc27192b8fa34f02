"""On-disk checkpoints: atomic, verified, pickle-free.

A checkpoint is a directory ``<save_dir>/ckpt-<global step, 9 digits>/``::

    model.safetensors      network state_dict (parameters and buffers)
    optimizer.safetensors  optimizer accumulators, keyed by parameter structure
    state.json             epoch, step, LR schedule, RNG, callbacks, fingerprint ...
    manifest.json          sha256 and size of each file above; written last

It is written in ``<save_dir>/.tmp-*``, every file fsynced, then renamed into
place, so a checkpoint is visible only when complete. Loading executes no
pickle: tensors are safetensors, the rest is JSON.

Examples:
    >>> import tempfile, paddle
    >>> store = CheckpointStore(tempfile.mkdtemp())
    >>> path = store.write(7, {"model": {"w": paddle.ones([2])}}, {"epoch": 0})
    >>> path.name, [c.name for c in store.scan() if c.valid]
    ('ckpt-000000007', ['ckpt-000000007'])
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paddle_mnist_hapi.errors import CheckpointError

__all__ = ["FORMAT_VERSION", "CheckpointInfo", "CheckpointStore", "read_tensors"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
PREFIX = "ckpt-"
MANIFEST = "manifest.json"
STATE = "state.json"
# test hook: seconds to wait between writing the files and the manifest (exercises kills mid-write)
_SLOW_WRITE_ENV = "PADDLE_MNIST_HAPI_SLOW_CKPT_WRITE"


@dataclass
class CheckpointInfo:
    """One checkpoint directory and whether it passed verification."""

    path: Path
    global_step: int
    valid: bool
    reason: str = ""
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def read_tensors(path: Path) -> dict[str, Any]:
    """Load a safetensors file as Paddle tensors (no pickle involved), eager also under ``paddle.enable_static()``."""
    from safetensors.paddle import load_file

    from paddle_mnist_hapi._private.static_graph import eager

    with eager():
        return load_file(str(path))


class CheckpointStore:
    """Writes, verifies, lists and prunes the checkpoints of one run directory.

    Args:
        save_dir (str|PathLike): the run's checkpoint directory (created if missing).
    """

    def __init__(self, save_dir: str | os.PathLike[str]) -> None:
        self.save_dir = Path(save_dir)
        # checkpoints verified or written by this process: retention reads these, never re-hashes
        self._known: dict[Path, CheckpointInfo] = {}

    def write(self, global_step: int, tensors: dict[str, dict[str, Any]], state: dict[str, Any]) -> Path:
        """Write one checkpoint atomically; return its final path.

        ``tensors`` maps a file stem (``model``, ``optimizer``) to a dict of
        Paddle tensors; ``state`` is JSON-serializable. Each file is hashed
        once, from the bytes being written.
        """
        from safetensors.paddle import save

        self.save_dir.mkdir(parents=True, exist_ok=True)
        final = self.save_dir / f"{PREFIX}{global_step:09d}"
        tmp = self.save_dir / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            blobs = {
                f"{stem}.safetensors": save({k: v.contiguous() for k, v in group.items()})
                for stem, group in tensors.items()
            }
            blobs[STATE] = json.dumps(state, indent=1, sort_keys=True).encode()
            files: dict[str, dict[str, Any]] = {}
            for name, data in blobs.items():
                _write_file(tmp / name, data)
                files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            delay = float(os.environ.get(_SLOW_WRITE_ENV, "0") or 0)
            if delay:
                time.sleep(delay)
            manifest = {"format": FORMAT_VERSION, "global_step": global_step, "files": files, "time": time.time()}
            _write_file(tmp / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
            _fsync_dir(tmp)
            if final.exists():  # same step written again (e.g. after a rollback): replace it atomically
                self._discard(final)
            os.rename(tmp, final)
            _fsync_dir(self.save_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._known[final] = CheckpointInfo(final, global_step, True, "", state)
        return final

    def verify(self, path: Path) -> CheckpointInfo:
        """Check a checkpoint's manifest and every file's size and sha256."""
        try:
            step = int(path.name[len(PREFIX) :])
        except ValueError:
            return CheckpointInfo(path, -1, False, "not a checkpoint name")
        try:
            manifest = json.loads((path / MANIFEST).read_text())
            files = manifest["files"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return CheckpointInfo(path, step, False, f"manifest missing or unreadable ({exc.__class__.__name__})")
        if manifest.get("format") != FORMAT_VERSION:
            return CheckpointInfo(path, step, False, f"format {manifest.get('format')} != {FORMAT_VERSION}")
        for name, meta in files.items():
            file = path / name
            if not file.is_file():
                return CheckpointInfo(path, step, False, f"{name} is missing")
            if file.stat().st_size != meta["bytes"]:
                return CheckpointInfo(
                    path, step, False, f"{name} has {file.stat().st_size} bytes, expected {meta['bytes']}"
                )
            if _sha256(file) != meta["sha256"]:
                return CheckpointInfo(path, step, False, f"{name} fails its sha256 checksum (corrupt)")
        try:
            state = json.loads((path / STATE).read_text())
        except (OSError, ValueError) as exc:
            return CheckpointInfo(path, step, False, f"state.json unreadable ({exc})")
        return CheckpointInfo(path, step, True, "", state)

    def scan(self) -> list[CheckpointInfo]:
        """All checkpoints, newest first, each verified."""
        if not self.save_dir.is_dir():
            return []
        paths = [p for p in self.save_dir.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
        infos = [self.verify(p) for p in paths]
        self._known = {i.path: i for i in infos if i.valid}
        return sorted(infos, key=lambda i: (i.global_step, i.name), reverse=True)

    def known(self) -> list[CheckpointInfo]:
        """The valid checkpoints this store verified (``scan``) or wrote since, newest first; no hashing."""
        infos = [i for i in self._known.values() if i.path.is_dir()]
        return sorted(infos, key=lambda i: (i.global_step, i.name), reverse=True)

    def clean_tmp(self) -> None:
        """Remove the leftovers of writes that were interrupted."""
        if self.save_dir.is_dir():
            for path in self.save_dir.iterdir():
                if path.name.startswith((".tmp-", ".trash-")):
                    shutil.rmtree(path, ignore_errors=True)

    def _discard(self, path: Path) -> None:
        trash = self.save_dir / f".trash-{path.name}-{uuid.uuid4().hex[:8]}"
        os.rename(path, trash)  # atomic: a half-deleted checkpoint is never visible
        shutil.rmtree(trash, ignore_errors=True)

    def prune(self, keep: set[Path]) -> list[Path]:
        """Delete the known valid checkpoints (see :meth:`known`) not in ``keep``; return what was deleted.

        Invalid checkpoints are left for a person to inspect.
        """
        removed = []
        for info in self.known():
            if info.path not in keep:
                self._discard(info.path)
                self._known.pop(info.path, None)
                removed.append(info.path)
        return removed

    def require(self, path: str | os.PathLike[str]) -> CheckpointInfo:
        """Verify one checkpoint directory or raise ``CheckpointError`` saying why."""
        info = self.verify(Path(path))
        if not info.valid:
            raise CheckpointError(
                f"The checkpoint {path} cannot be used: {info.reason}. Pick another ckpt-* directory "
                f"in {path.parent if isinstance(path, Path) else Path(path).parent}."
            )
        return info
