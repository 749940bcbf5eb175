"""Atomic file writes: a reader (or a resumed run) sees the old file or the complete new one, never a torn one.

The bytes go to a temporary file in the target's own directory (so the final rename never crosses file systems,
where it would become a copy), are flushed and fsynced, and only then replace the target with :func:`os.replace`;
the directory is fsynced too so the rename itself survives a power cut. A process killed at any point before the
rename leaves the previous file intact plus, at worst, a hidden ``.<name>.*.tmp`` file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_open", "naming_failures"]


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a binary file that replaces ``path`` atomically when the ``with`` block ends without an exception.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    with naming_failures(path):
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make every file private; honour the umask
            with os.fdopen(fd, "wb") as file:
                yield file
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def naming_failures(path: str | os.PathLike) -> Iterator[None]:
    """Re-raise an :class:`OSError` of writing ``path`` with ``path`` as its file name.

    A full disk fails a ``write`` with no file name and a read-only one names the hidden temporary file; the user
    needs to hear which output could not be written.
    """
    try:
        yield
    except OSError as error:
        if error.errno is None or error.filename == str(path):
            raise
        raise OSError(error.errno, error.strerror, str(path)) from error


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    # Not every platform or file system can open a directory for fsync; the rename is still atomic without it.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
