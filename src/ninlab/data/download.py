"""Downloading a dataset file: streamed with a progress bar, size-capped, md5-checked, and written atomically."""

from __future__ import annotations

import hashlib
import urllib.error
from pathlib import Path
from urllib.request import urlopen

from tqdm import tqdm

from ninlab._runtime.atomic import atomic_open
from ninlab._runtime.tensor_files import free_bytes
from ninlab.errors import DataError

__all__ = ["download_file"]

_CHUNK = 1 << 20
MAX_DOWNLOAD_BYTES = 256 << 20
"""The most a download may bring: the largest official file (the CIFAR-10 archive) is 163 MiB."""


def download_file(url: str, dest: Path, md5: str, max_bytes: int = MAX_DOWNLOAD_BYTES) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    The bytes are written through :func:`ninlab._runtime.atomic.atomic_open` and replace ``dest`` only once their md5
    matches, so ``dest`` is either absent or complete and verified. The temporary file is removed on any
    failure, ``KeyboardInterrupt`` included. A server announcing or sending more than ``max_bytes``, or more than
    the disk has room for, is cut off.

    Raises:
        DataError: the download failed, was larger than ``max_bytes`` or the free space, or its md5 is not ``md5``.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        digest = hashlib.md5()
        with atomic_open(dest) as out, urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            free = free_bytes(dest.parent)
            limit = min(max_bytes, free) if free is not None else max_bytes
            _refuse_oversized(url, dest, total or 0, limit, free)
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=None) as bar:
                received = 0  # not bar.n: a disabled bar (no terminal) counts nothing
                while chunk := response.read(_CHUNK):
                    received += len(chunk)
                    _refuse_oversized(url, dest, received, limit, free)
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            if digest.hexdigest() != md5:  # inside the block: the file is then never moved into place
                raise DataError(
                    f"{url}: expected md5 {md5}, downloaded a file with md5 {digest.hexdigest()}; "
                    f"the server sent something else, retry later or fetch {dest.name} by hand"
                )
    except (OSError, urllib.error.URLError) as error:
        raise DataError(
            f"{url}: expected to download {dest.name}, failed with {error}; check the network, "
            f"or put the file in {dest.parent} yourself"
        ) from error
    return dest


def _refuse_oversized(url: str, dest: Path, size: int, limit: int, free: int | None) -> None:
    if size > limit:
        room = f"the {free} bytes free in {dest.parent}" if free is not None and free < limit else f"{limit} bytes"
        raise DataError(
            f"{url}: expected {dest.name} to take at most {room}, the server sends {size} bytes or more; "
            f"free space, or fetch {dest.name} by hand into {dest.parent}"
        )
