"""Checksums: md5 as the datasets' official sums use, and when a mismatch is an error.

Policy (``verify`` argument of the loaders): ``True`` refuses any mismatch, ``False`` only reports it, and ``None``
(the default) refuses a mismatch in files ninlab found in its cache or a system directory (they claim to be the
official data) but only reports it for files under an explicit ``root``, which may be a user's own subset or a
re-encoded copy in the same format.
"""

from __future__ import annotations

import hashlib

from ninlab.data.imageset import ImageSet
from ninlab.errors import DataError

__all__ = ["enforcer", "is_strict", "md5_bytes"]


def md5_bytes(data: bytes) -> str:
    """Hex md5 of ``data``."""
    return hashlib.md5(data).hexdigest()


def is_strict(verify: bool | None, origin: str) -> bool:
    """Whether a checksum mismatch is an error for files from ``origin`` (``"root"``, ``"cache"``, ``"system"``)."""
    return verify if verify is not None else origin != "root"


def enforcer(verify: bool | None, origin: str):
    """A check for :func:`ninlab.data.cache.load_or_build` that raises on a mismatch when the policy says so."""
    strict = is_strict(verify, origin)

    def accept(imageset: ImageSet) -> None:
        if strict and imageset.checksum == "mismatch":
            raise DataError(
                f"{imageset.source}: expected the official {imageset.name} {imageset.split} data "
                "(md5 match), found different content; download it again, or pass verify=False "
                "to use a modified copy"
            )

    return accept
