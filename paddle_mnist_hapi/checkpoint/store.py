"""On-disk checkpoints: atomic, verified, pickle-free.

A checkpoint is a directory ``<save_dir>/ckpt-<global step, 9 digits>/``::

    model.safetensors      network state_dict (parameters and buffers)
    optimizer.safetensors  optimizer accumulators, keyed by parameter structure
    state.json             epoch, step, LR schedule, RNG, callbacks, fingerprint ...
    manifest.json          sha256 and size of each file above; written last

It is written in ``<save_dir>/.tmp-*``, every file and the directory fsynced
(all at once: the filesystem commits them together), then renamed into place,
so a checkpoint is visible only when complete. Loading executes no
pickle: tensors are safetensors, the rest is JSON. The tensors are written from
host memory (:class:`HostTensor`, see :mod:`~paddle_mnist_hapi.checkpoint.writer`
for the snapshot), straight to the file and hashed on the way, without an
intermediate copy of the file's bytes.

Examples:
    >>> import tempfile, paddle
    >>> store = CheckpointStore(tempfile.mkdtemp())
    >>> path = store.write(7, {"model": {"w": paddle.ones([2])}}, {"epoch": 0})
    >>> path.name, [c.name for c in store.scan() if c.valid]
    ('ckpt-000000007', ['ckpt-000000007'])
    >>> read_tensors(path / "model.safetensors")["w"].numpy()
    array([1., 1.], dtype=float32)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from paddle_mnist_hapi.errors import CheckpointError

__all__ = ["FORMAT_VERSION", "CheckpointInfo", "CheckpointStore", "HostTensor", "host_tensor", "read_tensors"]
__all__ += ["dtype_name", "write_safetensors"]

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


class HostTensor(NamedTuple):
    """A tensor's values in host memory and its Paddle dtype name (numpy has no ``bfloat16``: its bits are uint16)."""

    array: np.ndarray
    dtype: str


# Paddle dtype name -> safetensors dtype code (the ones safetensors.paddle reads back)
_SAFETENSORS_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
}  # fmt: skip


_DTYPE_NAMES: dict[Any, str] = {}


def dtype_name(tensor: Any) -> str:
    """``'float32'`` for a Paddle tensor of dtype ``paddle.float32`` (also for numpy arrays)."""
    if isinstance(tensor, np.ndarray):
        return tensor.dtype.name
    dtype = tensor.dtype
    name = _DTYPE_NAMES.get(dtype)
    if name is None:  # str(dtype) runs Python code in Paddle: once per dtype
        name = _DTYPE_NAMES[dtype] = str(dtype).split(".")[-1]
    return name


def host_tensor(tensor: Any) -> HostTensor:
    """A copy of a Paddle tensor in host memory (a numpy array or a ``HostTensor`` is taken as it is)."""
    if isinstance(tensor, HostTensor):
        return tensor
    if isinstance(tensor, np.ndarray):
        return HostTensor(tensor, tensor.dtype.name)
    return HostTensor(tensor.numpy(), dtype_name(tensor))


def write_safetensors(path: Path, tensors: dict[str, HostTensor]) -> dict[str, Any]:
    """Write ``tensors`` as a safetensors file, hashing the bytes on their way to the file (not fsynced).

    Returns the file's ``{"sha256": ..., "bytes": ...}`` for the manifest.

    Raises:
        CheckpointError: a dtype the safetensors format (as Paddle reads it) does not have.
    """
    # widest first, then by name, as safetensors orders them: every tensor stays aligned to its width
    names = sorted(tensors, key=lambda name: (-tensors[name].array.dtype.itemsize, name))
    header: dict[str, Any] = {}
    offset = 0
    for name in names:
        array, dtype = tensors[name]
        if dtype not in _SAFETENSORS_DTYPES:
            raise CheckpointError(
                f"Cannot checkpoint the tensor {name!r} of dtype {dtype}: the safetensors format holds "
                f"{', '.join(sorted(_SAFETENSORS_DTYPES))}. Cast it to one of them. Received: dtype={dtype}"
            )
        header[name] = {"dtype": _SAFETENSORS_DTYPES[dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}  # fmt: skip
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    digest = hashlib.sha256()
    with _rewrite(path) as fh:
        for chunk in (struct.pack("<Q", len(text)), text, *(_raw_bytes(tensors[name].array) for name in names)):
            fh.write(chunk)  # numpy's buffer, no copy; like hashing, it runs without the GIL
            digest.update(chunk)
        fh.truncate()
    return {"sha256": digest.hexdigest(), "bytes": 8 + len(text) + offset}


def _raw_bytes(array: np.ndarray) -> memoryview:
    if sys.byteorder != "little" or not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("<"))  # safetensors is little-endian
    return memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def _rewrite(path: Path) -> Any:
    """``path`` opened for writing from its start; an existing file (in a recycled checkpoint directory) keeps
    its blocks, which the new content overwrites (call ``truncate()`` at the end)."""
    return open(path, "r+b" if path.is_file() else "wb")


def _write_bytes(path: Path, data: bytes) -> None:
    with _rewrite(path) as fh:
        fh.write(data)
        fh.truncate()


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


def _fsync_all(paths: list[Path]) -> None:
    """fsync files and directories concurrently: the filesystem commits them in one go (one by one, each
    fsync waited for its own journal commit: 21 ms for a LeNet-5 checkpoint's four files here, 2.7 ms at once)."""
    fds = [os.open(path, os.O_RDONLY) for path in paths]
    errors: list[OSError] = []

    def fsync(fd: int) -> None:
        try:
            os.fsync(fd)
        except OSError as exc:
            errors.append(exc)

    try:
        pending = [_in_background(fsync, fd) for fd in fds[1:]]
        fsync(fds[0])
        for future in pending:
            if future is not None:
                future.result()
    finally:
        for fd in fds:
            os.close(fd)
    if errors:
        raise errors[0]


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _in_background(function: Callable[..., Any], *args: Any) -> Future[Any] | None:
    """Run ``function(*args)`` on one of a few threads kept for the whole process (a thread started per fsync
    or deletion cost the training thread time: creating and ending one maps and unmaps its stack). None:
    it ran here, at interpreter shutdown, when no thread takes work any more."""
    global _POOL
    try:
        with _POOL_LOCK:
            if _POOL is None:
                _POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="checkpoint io")
            return _POOL.submit(function, *args)
    except RuntimeError:
        function(*args)
        return None


def _forget_pool() -> None:  # a forked child has none of the parent's threads
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


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
        self._deleting: Future[Any] | None = None
        self._spare: list[Path] = []  # discarded checkpoints (.trash-*) whose directory the next write reuses

    def write(self, global_step: int, tensors: dict[str, dict[str, Any]], state: dict[str, Any]) -> Path:
        """Write one checkpoint atomically; return its final path.

        ``tensors`` maps a file stem (``model``, ``optimizer``) to a dict of
        host tensors (:class:`HostTensor`, numpy arrays) or Paddle tensors
        (copied to the host here); ``state`` is JSON-serializable. Each file is
        hashed once, from the bytes being written.
        """
        self.save_dir.mkdir(parents=True, exist_ok=True)
        final = self.save_dir / f"{PREFIX}{global_step:09d}"
        tmp = self._new_tmp(final.name)
        try:
            files: dict[str, dict[str, Any]] = {}
            for stem, group in tensors.items():
                host = {name: host_tensor(value) for name, value in group.items()}
                files[f"{stem}.safetensors"] = write_safetensors(tmp / f"{stem}.safetensors", host)
            data = json.dumps(state, separators=(",", ":"), sort_keys=True).encode()  # no indent: 7x faster
            _write_bytes(tmp / STATE, data)
            files[STATE] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            delay = float(os.environ.get(_SLOW_WRITE_ENV, "0") or 0)
            if delay:
                time.sleep(delay)
            manifest = {"format": FORMAT_VERSION, "global_step": global_step, "files": files, "time": time.time()}
            _write_bytes(tmp / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
            for stale in set(os.listdir(tmp)) - {*files, MANIFEST}:  # of the checkpoint this directory was
                os.unlink(tmp / stale)
            _fsync_all([*(tmp / name for name in files), tmp / MANIFEST, tmp])  # all durable before the rename
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

    def _new_tmp(self, name: str) -> Path:
        """A directory to write checkpoint ``name`` into: a discarded checkpoint's, when there is one.

        Its files are overwritten in place, so no blocks are freed and allocated again (deleting and creating
        a LeNet-5 checkpoint's files cost 40 ms and 4.9 ms of CPU here, overwriting them 16 ms and 1.0 ms).
        """
        tmp = self.save_dir / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        while self._spare:
            try:
                os.rename(self._spare.pop(), tmp)
                return tmp
            except OSError:  # gone (clean_tmp of another process): take the next, or a new directory
                continue
        tmp.mkdir()
        return tmp

    def release_spares(self) -> None:
        """Delete (in the background) the discarded checkpoints kept for reuse; at the end of a run."""
        while self._spare:
            self._delete_later(self._spare.pop())

    def clean_tmp(self) -> None:
        """Remove the leftovers of writes that were interrupted."""
        self._spare.clear()
        if self.save_dir.is_dir():
            for path in self.save_dir.iterdir():
                if path.name.startswith((".tmp-", ".trash-")):
                    shutil.rmtree(path, ignore_errors=True)

    def _discard(self, path: Path) -> None:
        trash = self.save_dir / f".trash-{path.name}-{uuid.uuid4().hex[:8]}"
        os.rename(path, trash)  # atomic: a half-deleted checkpoint is never visible
        self._spare.append(trash)  # the next checkpoint is written into it (see _new_tmp)
        while len(self._spare) > 1:
            self._delete_later(self._spare.pop(0))

    def _delete_later(self, trash: Path) -> None:
        """Deleting is slow on some filesystems (20 ms for a LeNet-5 checkpoint here, mounted with `discard`):
        one deletion at a time runs beside the next write; leftovers go at the next start (clean_tmp)."""
        self.join_deletion()
        self._deleting = _in_background(shutil.rmtree, trash, True)

    def join_deletion(self) -> None:
        """Wait for the deletion running in the background, if any."""
        if self._deleting is not None:
            self._deleting.result()
            self._deleting = None

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
