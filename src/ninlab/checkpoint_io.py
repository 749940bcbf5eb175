"""Checkpoint writes that a kill cannot corrupt.

Lightning's ``TorchCheckpointIO`` saves through an fsspec transaction, which for local paths writes a temporary file
in the system temp dir and then ``shutil.move``s it: across file systems (``/tmp`` on tmpfs, runs on disk) that move
is a copy straight into ``last.ckpt``, and nothing is fsynced, so a kill or power cut mid-copy leaves a torn
checkpoint that ``--ckpt_path last`` would then try to resume. :class:`AtomicCheckpointIO` writes through
:func:`ninlab.atomic.atomic_open` instead (same directory, fsync, ``os.replace``).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem

from ninlab.atomic import atomic_open

__all__ = ["AtomicCheckpointIO"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """:class:`~lightning.fabric.plugins.TorchCheckpointIO` with atomic, durable writes of local checkpoints.

    Remote paths (``s3://``...) keep Lightning's own saving, where object stores make each upload atomic.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        """Write ``checkpoint`` to ``path`` so that ``path`` holds either the previous file or the complete new one."""
        protocol = get_filesystem(path).protocol
        local = "file" in (protocol if isinstance(protocol, tuple) else (protocol,))
        if storage_options is not None or not local:
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with atomic_open(path) as file:
            torch.save(checkpoint, file)
