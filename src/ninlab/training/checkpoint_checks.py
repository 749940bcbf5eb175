"""Checks of a checkpoint file that ``torch.load(weights_only=True)`` does not make: memory bombs and broken weights.

* A checkpoint is a zip archive whose records ``torch.load`` inflates in memory. ninlab (like ``torch.save``)
  stores records uncompressed, but the format allows deflated ones, so a 2 MB file can declare gigabytes of
  records that would all be allocated. :func:`refuse_compressed_bomb` reads only the zip's central directory and
  refuses a file whose records declare far more bytes than the file holds, before ``torch.load`` opens it.
* A checkpoint of a run that diverged holds NaN or infinite weights; every output of it would be NaN (``ninlab
  test`` would report a NaN loss and exit 0, ``export`` would blame onnxruntime). :func:`refuse_non_finite` names
  the first tensor that is not finite.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ninlab.errors import CheckpointError

__all__ = ["refuse_compressed_bomb", "refuse_non_finite"]

# Weights barely compress (float bits look random): a deflated checkpoint of real weights stays near 1:1, while
# zeros deflate about 1000:1. The slack lets small, very compressible records (the pickle) through.
_MAX_RATIO, _SLACK = 10, 1 << 20


def refuse_compressed_bomb(path: str | os.PathLike) -> None:
    """Refuse a zip checkpoint whose records declare more than ten times the bytes of the file itself.

    A file that is not a zip archive (a legacy or damaged checkpoint) is left for ``torch.load`` to judge.

    Raises:
        CheckpointError: The records would inflate far beyond the file's size.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return
    size = path.stat().st_size
    if declared > _MAX_RATIO * size + _SLACK:
        raise CheckpointError(
            f"{path}: expected a checkpoint whose records take about its {_mib(size)} (ninlab stores tensors "
            f"uncompressed), found records declaring {_mib(declared)} once inflated; it is a decompression bomb or "
            "damaged, and was not loaded"
        )


def refuse_non_finite(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """Refuse a checkpoint with a NaN or infinite value in its weights or optimizer state, naming the first tensor.

    Raises:
        CheckpointError: The first non-finite tensor, with how many of its values are not finite.
    """
    for name, tensor in _tensors({"state_dict": checkpoint.get("state_dict"),
                                  "optimizer_states": checkpoint.get("optimizer_states")}):  # fmt: skip
        if not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            bad = int(finite.numel() - finite.sum())
            raise CheckpointError(
                f"{path}: expected finite weights, found {bad} NaN/inf value(s) of {tensor.numel()} in {name}; the "
                "run that wrote it diverged: use an earlier checkpoint of it, or retrain with a lower --model.lr"
            )


def _tensors(tree: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in nested dicts and lists, with its dotted path (``state_dict.net.0.weight``), in order."""
    if isinstance(tree, torch.Tensor):
        yield prefix, tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from _tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            yield from _tensors(value, f"{prefix}[{index}]")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"
