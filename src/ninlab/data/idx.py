"""The IDX format of MNIST and Fashion-MNIST (``*-idx3-ubyte``, ``*-idx1-ubyte``, plain or gzipped).

An IDX file is two zero bytes, a dtype code, the number of dimensions, one big-endian uint32 per dimension, then
the values in C order. See http://yann.lecun.com/exdb/mnist/.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from ninlab.errors import DataError

__all__ = ["decode_idx", "read_idx_bytes"]

_MAX_DEFLATE_RATIO = 1032  # deflate's best case (long runs of one byte); a header declaring more is a lie
_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx_bytes(path: Path) -> bytes:
    """The decoded bytes of the IDX file at ``path``, gunzipped when its name ends in ``.gz``.

    Never more than the header declares plus one byte is read (the extra byte tells an oversized file), so a small
    gzip that inflates to gigabytes, or a header declaring more than the file can hold, costs no memory.

    Raises:
        DataError: the file cannot be read, is not valid gzip, or holds more or fewer bytes than its header declares.
    """
    gz = path.suffix == ".gz"
    try:
        with gzip.open(path, "rb") if gz else path.open("rb") as file:
            head = file.read(4)
            dims = head[3] if len(head) == 4 and head[:2] == b"\0\0" else 0
            head += file.read(4 * dims)
            expected = _declared_size(head)
            # Deflate inflates at most ~1032:1, so a header declaring more than that of the file is refused unread.
            room = path.stat().st_size * (_MAX_DEFLATE_RATIO if gz else 1) + 64
            if expected is not None and expected > room:
                raise DataError(
                    f"{path}: expected at most {room} bytes in a {path.stat().st_size}-byte file, found a header "
                    f"declaring {expected}; the file is truncated or corrupt, download it again"
                )
            return head + file.read((expected if expected is not None else len(head)) - len(head) + 1)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(
            f"{path}: expected a readable{' gzip' if gz else ''} IDX file, found {error}; the file is damaged, "
            "download it again"
        ) from error


def _declared_size(head: bytes) -> int | None:
    """Total bytes (header included) an IDX header declares; ``None`` when ``head`` is no complete IDX header."""
    if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in _DTYPES or len(head) < 4 + 4 * head[3]:
        return None  # decode_idx names what is wrong
    shape = np.frombuffer(head, dtype=">u4", count=head[3], offset=4)
    return 4 + 4 * head[3] + math.prod(int(d) for d in shape) * _DTYPES[head[2]].itemsize


def decode_idx(data: bytes, path: Path, ndim: int) -> np.ndarray:
    """Parse IDX bytes into an array with ``ndim`` dimensions (native byte order, no copy for uint8).

    Args:
        data: The decoded file content.
        path: The file it came from, named in errors.
        ndim: The number of dimensions the caller expects (3 for images, 1 for labels).

    Raises:
        DataError: wrong magic number, unknown dtype code, wrong number of dimensions, or a payload whose length
            does not match the header (truncated or oversized file).
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        found = data[:4].hex() or "an empty file"
        raise DataError(f"{path}: expected an IDX file starting with two zero bytes, found {found}; not an IDX file")
    code, dims = data[2], data[3]
    if code not in _DTYPES:
        raise DataError(
            f"{path}: expected an IDX dtype code among {', '.join(f'0x{c:02x}' for c in _DTYPES)}, "
            f"found 0x{code:02x}; the file is corrupt"
        )
    if dims != ndim:
        raise DataError(
            f"{path}: expected an IDX file with {ndim} dimension(s), found {dims}; "
            "images and labels may be swapped or the file is corrupt"
        )
    header = 4 + 4 * dims
    if len(data) < header:
        raise DataError(f"{path}: expected a {header}-byte IDX header, found {len(data)} bytes; the file is truncated")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=dims, offset=4))
    dtype = _DTYPES[code]
    expected = header + math.prod(shape) * dtype.itemsize  # exact: np.prod would wrap around for huge dims
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "oversized (trailing bytes)"
        raise DataError(
            f"{path}: expected {expected} bytes for shape {shape}, found {len(data)}; the file is {state}, "
            "download it again"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="), copy=False)
