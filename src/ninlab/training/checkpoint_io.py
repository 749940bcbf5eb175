"""How checkpoints are written and read: atomically, and as plain data only.

Writing: Lightning's ``TorchCheckpointIO`` saves through an fsspec transaction, which for local paths writes a
temporary file in the system temp dir and then ``shutil.move``s it: across file systems (``/tmp`` on tmpfs, runs on
disk) that move is a copy straight into ``last.ckpt``, and nothing is fsynced, so a kill or power cut mid-copy
leaves a torn checkpoint that ``--ckpt_path last`` would then try to resume. :class:`SafeCheckpointIO` writes
through :func:`ninlab._runtime.tensor_files.save_atomically` instead (same directory, fsync, ``os.replace``; a full
disk is an ``OSError`` naming the file and the space it needs, not torch's ``RuntimeError``).

Reading: a checkpoint is a pickle, and unpickling can run code. Every checkpoint ninlab opens (``--ckpt_path``,
``export``, ``predict-images``) goes through :func:`read_checkpoint`, i.e. ``torch.load(weights_only=True)``, which
builds only tensors and plain containers, whatever torch's default or ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` say.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem

from ninlab._runtime.tensor_files import save_atomically
from ninlab.errors import CheckpointError
from ninlab.training.checkpoint_checks import refuse_compressed_bomb, refuse_non_finite

__all__ = ["SafeCheckpointIO", "read_checkpoint"]


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint at ``path``, loaded on the CPU as plain data (``weights_only=True``).

    Raises:
        CheckpointError: No such file, or a file that is truncated, foreign or carries code (nothing of it runs), a
            decompression bomb (refused before it is inflated) or holds NaN/inf weights.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}; pass a .ckpt from a run's checkpoints/ folder")
    refuse_compressed_bomb(path)
    try:
        with warnings.catch_warnings():  # a pickle of another protocol is refused below; torch's warning is noise
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for truncated, foreign or code-carrying files
        raise CheckpointError(_unreadable_message(path, error)) from error
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} is not a training checkpoint (found a {type(checkpoint).__name__})")
    refuse_non_finite(checkpoint, path)
    return checkpoint


def _unreadable_message(path: Path, error: Exception) -> str:
    """ninlab's line for a file ``torch.load(weights_only=True)`` refused.

    Never torch's own text where it mentions ``weights_only``: it advises retrying with ``weights_only=False``, which
    is exactly what must not be done with a file that failed here.
    """
    text = " ".join(str(error).split())
    start = f"{path} cannot be read safely as a checkpoint"
    code = re.search(r"GLOBAL ([\w.]+)", text)
    if code:
        return (f"{start}: it refers to code ({code[1]}), which no checkpoint needs; it was tampered with or is not a "
                "ninlab checkpoint, and nothing of it was run")  # fmt: skip
    if "legacy .tar format" in text:
        return (f"{start}: it is in PyTorch's legacy tar format, which cannot be read as plain data; it is not a "
                "checkpoint of ninlab fit (those are zip files), and nothing of it was run")  # fmt: skip
    refused = re.search(r"WeightsUnpickler error: (.*?)(?: Check the documentation|$)", text)
    if refused or "weights_only" in text:
        detail = f" ({refused[1][:120]})" if refused else ""
        return (f"{start}: it is a raw pickle or holds data the plain-data reader refuses{detail}; it is not a "
                "checkpoint of ninlab fit, and nothing of it was run")  # fmt: skip
    return (f"{start}: it is truncated, damaged or not a PyTorch checkpoint ({type(error).__name__}: "
            f"{text[:200]})")  # fmt: skip


def _is_local(path: str | os.PathLike) -> bool:
    protocol = get_filesystem(path).protocol
    return "file" in (protocol if isinstance(protocol, tuple) else (protocol,))


class SafeCheckpointIO(TorchCheckpointIO):
    """:class:`~lightning.fabric.plugins.TorchCheckpointIO` with atomic, durable writes and weights-only reads.

    Remote paths (``s3://``...) keep Lightning's own handling, where object stores make each upload atomic.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        """Write ``checkpoint`` to ``path`` so that ``path`` holds either the previous file or the complete new one."""
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        save_atomically(checkpoint, path)  # a full disk: one OSError naming the file and the room it needs

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None):
        """Read a local checkpoint with :func:`read_checkpoint` (``weights_only`` is always True for local files)."""
        if not _is_local(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        return read_checkpoint(path)
