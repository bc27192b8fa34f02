"""Checkpoint writes off the training thread: a snapshot in host memory, then one background write at a time.

``ResumeCkpt`` takes a snapshot on the training thread (:meth:`CheckpointWriter.snapshot`:
every tensor copied to host memory, the large ones into buffers reused from one
save to the next) and hands the rest of the save (serialise, hash, fsync,
rename, retention) to :meth:`CheckpointWriter.submit`, which runs it in a
background thread while training goes on. At most one write is in flight: a
new snapshot first waits for the write before it, so saves never pile up and
the host buffers are free to reuse. A write that fails is raised on the
training thread as a ``CheckpointError`` by :meth:`~CheckpointWriter.raise_failure`
(``ResumeCkpt`` calls it at every step) or :meth:`~CheckpointWriter.wait`.

Examples:
    >>> import tempfile, paddle
    >>> from paddle_mnist_hapi.checkpoint.store import CheckpointStore
    >>> store, writer = CheckpointStore(tempfile.mkdtemp()), CheckpointWriter()
    >>> net = paddle.nn.Linear(2, 1)
    >>> tensors = writer.snapshot({"model": dict(net.state_dict())})  # host copies: training may go on
    >>> writer.submit(lambda: store.write(1, tensors, {"epoch": 0}), "ckpt-000000001")
    >>> writer.wait()   # the end of fit waits like this
    >>> [c.name for c in store.scan() if c.valid]
    ['ckpt-000000001']
"""

from __future__ import annotations

import atexit
import queue
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from paddle_mnist_hapi.checkpoint.store import HostTensor, dtype_name, host_tensor
from paddle_mnist_hapi.errors import CheckpointError

__all__ = ["STAGED_BYTES", "CheckpointWriter", "all_finite"]

# Host arrays (numpy data of the caller's) of at least this many bytes are copied into buffers kept from one
# save to the next: a fresh allocation of that size costs more in page faults than the copy itself (an 11.9
# M-parameter MLP's weights: 35 ms through Tensor.numpy(), 11 ms into a reused buffer). Tensors in host memory
# always go into kept buffers (see CheckpointWriter.snapshot).
STAGED_BYTES = 1 << 18
_NUMPY_NAMES = {"bfloat16": "uint16"}  # Tensor.numpy() of a bfloat16 tensor: its bits


class _Seen(NamedTuple):
    """How a tensor was copied at the last save, to copy it again quickly (see CheckpointWriter.snapshot)."""

    tensor: Any
    view: np.ndarray  # the tensor's own memory (DLPack)
    address: int  # the tensor's data_ptr() when the view was taken
    shape: list[int]
    host: HostTensor  # the buffer the view is copied into, as the snapshot hands it out


class CheckpointWriter:
    """Writes checkpoints one at a time, in a background thread (or inline with ``background=False``).

    The thread is started with the first write and kept until :meth:`close`, so
    handing a write over costs the training thread no thread start. Writes still
    in flight when the interpreter exits are waited for.

    Args:
        background (bool, optional): run each write in a background thread; False
            runs it inside :meth:`submit`. Default: True.

    Attributes:
        seconds (float): the longest write so far (for ``max_time``'s margin).
    """

    def __init__(self, background: bool = True) -> None:
        self.background = background
        self.seconds = 0.0
        self._thread: threading.Thread | None = None
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], str] | None] = queue.SimpleQueue()
        self._idle = threading.Event()
        self._idle.set()
        self._failure: tuple[str, BaseException] | None = None
        self._buffers: dict[str, np.ndarray] = {}
        self._known: dict[str, dict[str, _Seen]] = {}  # file stem -> tensor name -> how it was copied

    @property
    def busy(self) -> bool:
        """Whether a write is in flight."""
        return not self._idle.is_set()

    def snapshot(self, groups: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, HostTensor]]:
        """Copy ``{file stem: {name: tensor}}`` to host memory, once the write in flight (if any) has finished.

        A tensor in host memory is copied from a view of its memory into a buffer kept from one save to the
        next (about 1 us for a small one, no allocation); the view is used again only while the tensor is
        the same object with the same memory address and shape (an optimizer that updates in place), and
        taken anew otherwise. The arrays returned are valid until the next snapshot.
        """
        self.join()
        out = {}
        for stem, group in groups.items():
            known, copies = self._known.setdefault(stem, {}), {}
            for name, tensor in group.items():  # the training thread waits for this loop: kept lean
                seen = known.get(name)
                if (
                    seen is not None
                    and seen.tensor is tensor
                    and tensor.data_ptr() == seen.address
                    and tensor.shape == seen.shape
                ):
                    np.copyto(seen.host.array, seen.view)
                    copies[name] = seen.host
                    continue
                copies[name] = self._copy(known, f"{stem}/{name}", name, tensor)
            out[stem] = copies
        return out

    def _copy(self, known: dict[str, _Seen], key: str, name: str, tensor: Any) -> HostTensor:
        """``tensor`` copied to host memory; ``known[name]`` remembers how, for the next save (see snapshot)."""
        if isinstance(tensor, (np.ndarray, HostTensor)):  # host data of the caller's: copied all the same
            array, dtype = host_tensor(tensor)
            return HostTensor(self._into_buffer(key, array) if array.nbytes >= STAGED_BYTES else array.copy(), dtype)
        known.pop(name, None)
        dtype = dtype_name(tensor)
        view = None
        if tensor.place.is_cpu_place():
            try:
                view = np.from_dlpack(tensor.detach())  # the tensor's own memory, no copy
            except (BufferError, RuntimeError, TypeError):  # e.g. bfloat16, which DLPack to numpy cannot express
                view = None
        if view is None or view.dtype != _numpy_dtype(dtype):  # on a device, or no view: a copy each time
            return HostTensor(tensor.numpy(), dtype)
        host = HostTensor(np.empty(view.shape, view.dtype), dtype)
        np.copyto(host.array, view)
        known[name] = _Seen(tensor, view, tensor.data_ptr(), tensor.shape, host)
        return host

    def _into_buffer(self, key: str, array: np.ndarray) -> np.ndarray:
        buffer = self._buffers.get(key)
        if buffer is None or buffer.shape != array.shape or buffer.dtype != array.dtype:
            buffer = self._buffers[key] = np.empty(array.shape, array.dtype)
        np.copyto(buffer, array)
        return buffer

    def submit(self, write: Callable[[], Any], name: str) -> None:
        """Run ``write()`` after the write in flight; ``name`` (the checkpoint) goes into a failure's message.

        Raises:
            CheckpointError: the write before failed, or (``background=False``) this one did.
        """
        self.wait()
        if not self.background:
            self._run(write, name)
            self.raise_failure()
            return
        self._idle.clear()
        self._jobs.put((write, name))
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._serve, name="checkpoint writer", daemon=True)
            self._thread.start()
            _RUNNING.add(self)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._run(*job)
            self._idle.set()

    def _run(self, write: Callable[[], Any], name: str) -> None:
        started = time.monotonic()
        try:
            write()
        except BaseException as exc:  # raised on the training thread by raise_failure()
            self._failure = (name, exc)
        finally:
            self.seconds = max(self.seconds, time.monotonic() - started)

    def join(self) -> None:
        """Block until no write is in flight (a failure stays for :meth:`raise_failure`)."""
        self._idle.wait()

    def raise_failure(self) -> None:
        """Raise the failure of a finished write, once, as a ``CheckpointError``; nothing if none failed.

        Raises:
            CheckpointError: naming the checkpoint and the cause (chained as ``__cause__``).
        """
        failure, self._failure = self._failure, None
        if failure is None:
            return
        name, exc = failure
        raise CheckpointError(
            f"Writing the checkpoint {name} failed: {type(exc).__name__}: {exc}. The checkpoints written before "
            "it are complete and untouched. Fix the cause (free disk space, the directory's permissions) and run "
            "the script again: it resumes from the newest of them."
        ) from exc

    def wait(self) -> None:
        """Block until no write is in flight, then raise its failure if it failed (see :meth:`raise_failure`)."""
        self.join()
        self.raise_failure()

    def close(self) -> None:
        """Wait for the write in flight (a failure stays for :meth:`raise_failure`), stop the thread, free the
        host buffers. A later :meth:`submit` starts a new thread."""
        self.join()
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None
        _RUNNING.discard(self)
        self._buffers.clear()
        self._known.clear()


def _numpy_dtype(dtype: str) -> np.dtype | None:
    """The dtype of ``Tensor.numpy()`` for a tensor of Paddle dtype ``dtype`` (None: numpy has none)."""
    try:
        return np.dtype(_NUMPY_NAMES.get(dtype, dtype))
    except TypeError:
        return None


_RUNNING: weakref.WeakSet[CheckpointWriter] = weakref.WeakSet()


@atexit.register
def _finish_writes() -> None:
    """At interpreter exit, a write still in flight completes (its thread is a daemon, so nothing hangs)."""
    for writer in list(_RUNNING):
        writer.join()


def all_finite(tensors: Mapping[str, HostTensor]) -> bool:
    """Whether every floating-point value of ``tensors`` is finite (no NaN, no Inf).

    Examples:
        >>> all_finite({"w": HostTensor(np.array([1.0, np.inf]), "float64")})
        False
    """
    for array, dtype in tensors.values():
        if dtype == "bfloat16":  # uint16 bits: all exponent bits set is Inf or NaN
            if ((array.view(np.uint16) & 0x7F80) == 0x7F80).any():
                return False
        elif np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            return False
    return True
