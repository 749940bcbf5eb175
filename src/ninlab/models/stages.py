"""A NiN as data: the stage specs every variant is written in, and the spatial-size arithmetic they share.

:class:`ninlab.models.network.NiN` turns a tuple of these specs into layers; the variants in :mod:`ninlab.models.nin`
differ only in their tuples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

__all__ = ["NUM_CLASSES", "Block", "Dropout", "Pool", "Stage", "spatial_out_size"]

NUM_CLASSES = -1
"""Placeholder channel count in a spec, replaced by the model's ``num_classes`` when it is built."""


@dataclass(frozen=True)
class Block:
    """An mlpconv block: a ``kernel`` x ``kernel`` conv to ``conv`` channels, then 1 x 1 convs to ``mlp`` channels.

    ``norm`` says whether the model's norm layer applies to this block; ``final_act`` (None = the model's option
    for its last block, True for the others) whether the block ends in an activation.
    """

    conv: int
    kernel: int
    stride: int = 1
    padding: int = 0
    mlp: tuple[int, ...] = ()
    norm: bool = True
    final_act: bool | None = None


@dataclass(frozen=True)
class Pool:
    """A max or average pool; ``ceil_mode`` reproduces Caffe's output sizes (32 -> 16 -> 8 with 3/2 pools)."""

    kind: Literal["max", "avg"]
    kernel: int
    stride: int
    ceil_mode: bool = False


@dataclass(frozen=True)
class Dropout:
    """Dropout with probability ``p`` unless the model's ``drop_rate`` overrides it."""

    p: float = 0.5


Stage = Block | Pool | Dropout


def _out_size(size: int, module: nn.Module) -> int:
    """Output length along one spatial axis of a conv or pool, as PyTorch computes it (0 or less = invalid)."""
    k, s, p, d = (module.kernel_size, module.stride, module.padding, getattr(module, "dilation", 1))
    k, s, p, d = (v[0] if isinstance(v, tuple) else v for v in (k, s, p, d))
    span = size + 2 * p - d * (k - 1) - 1
    if not getattr(module, "ceil_mode", False):
        return span // s + 1
    out = (span + s - 1) // s + 1
    # PyTorch (like Caffe) drops a last window that would start in the right padding.
    return out - 1 if (out - 1) * s >= size + p else out


def spatial_out_size(module: nn.Module, size: int) -> int:
    """Output length along one spatial axis after every conv and pool inside ``module`` (0 = too small)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
            size = _out_size(size, layer)
            if size <= 0:
                return 0
    return size
