"""Saving tensors (checkpoints, cache entries) so that a full disk is one clear :class:`OSError`, never a torn file.

Two gaps of :func:`torch.save` on a full disk (or an exceeded quota):

* it never reports the disk: its zip writer swallows the ``ENOSPC`` of the file's ``write`` and raises
  ``RuntimeError: [enforce fail at inline_container.cc] unexpected pos ...`` at the end instead;
* it starts writing whatever the free space, so a run with no room fills the disk before it fails.

:func:`save_atomically` estimates the file's size first (the bytes of every tensor plus a margin for the pickle and
the zip headers) and compares it with the free space ``os.statvfs`` reports, then writes through
:func:`ninlab._runtime.atomic.atomic_open` while keeping the first ``OSError`` of any ``write``, which it raises
in place of torch's ``RuntimeError``. Either way the error names the file and the space it needs, and the previous
file at that path is left as it was. Writes go through a buffered file object, which loops on short writes (NFS).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ninlab._runtime.atomic import atomic_open

__all__ = ["estimated_size", "free_bytes", "save_atomically", "space_error"]

# Beyond the tensor bytes: the pickle (hyperparameters, callback states) and a zip header plus 64-byte alignment per
# record. A ninlab checkpoint measured 23 KiB over its tensors' 831 KiB with ~80 records; these bound it from above.
_MARGIN, _PER_RECORD = 32 * 1024, 512
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT)


def estimated_size(obj: Any) -> int:
    """Bytes :func:`torch.save` will write for ``obj``, from above: every distinct tensor storage plus margins."""
    seen: dict[tuple[int, int], int] = {}
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return sum(seen.values()) + _MARGIN + _PER_RECORD * len(seen)


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Bytes an unprivileged process may still write in ``folder``'s file system; ``None`` where unknown."""
    try:
        stat = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs on Windows; a folder that does not exist yet
        return None
    return stat.f_bavail * stat.f_frsize


def space_error(code: int, path: str | os.PathLike, needed: int, free: int | None) -> OSError:
    """An :class:`OSError` for ``path`` whose text says how much it needs and how much is free."""
    room = f", {_size(free)} free" if free is not None else ""
    return OSError(code, f"{os.strerror(code)} (needs about {_size(needed)}{room})", str(path))


def save_atomically(obj: Any, path: str | os.PathLike) -> None:
    """:func:`torch.save` ``obj`` to ``path`` atomically; a disk without room raises an :class:`OSError` naming both.

    Raises:
        OSError: ``ENOSPC``/``EDQUOT`` with the estimated size and the free space (before anything is written when
            the estimate does not fit), or any other failed write; ``path`` keeps its previous content.
    """
    path = Path(path)
    needed = estimated_size(obj)
    free = free_bytes(path.parent)
    if free is not None and needed > free:
        raise space_error(errno.ENOSPC, path, needed, free)
    writer = None
    try:
        with atomic_open(path) as file:
            writer = _KeepWriteError(file)
            torch.save(obj, writer)
    except (OSError, RuntimeError) as error:
        failed = writer.error if writer is not None and writer.error is not None else error
        if isinstance(failed, OSError) and failed.errno in _NO_ROOM:
            raise space_error(failed.errno, path, needed, free_bytes(path.parent)) from error
        if failed is not error:  # torch's RuntimeError hid the real reason
            raise OSError(failed.errno, failed.strerror, str(path)) from error
        raise


class _KeepWriteError:
    """The file :func:`torch.save` writes into, remembering the first ``OSError`` its zip writer would swallow."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._file.write(data)
        except OSError as error:
            self.error = self.error or error
            raise

    def flush(self) -> None:
        self._file.flush()


def _size(n: float) -> str:
    units = iter(("KiB", "MiB", "GiB"))
    unit = "bytes"
    while n >= 1024 and unit != "GiB":
        n, unit = n / 1024, next(units)
    return f"{n:.0f} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
