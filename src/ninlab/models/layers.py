"""Building blocks of Network-in-Network models.

The mlpconv block (Lin, Chen & Yan, "Network In Network", ICLR 2014, https://arxiv.org/abs/1312.4400) is a
k x k convolution followed by a micro-network: a stack of 1 x 1 convolutions, each a fully connected layer applied
at every pixel. Every convolution is followed by an (optional) norm layer and an activation.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["GlobalAvgPool", "MLPConv"]


class MLPConv(nn.Sequential):
    """A k x k convolution followed by a micro-network of 1 x 1 convolutions ("mlpconv").

    Layers are named ``conv0, [norm0,] act0, conv1, [norm1,] act1, ...`` in the order they run, so the parameter
    order matches a plain ``nn.Sequential`` of the same layers.

    Args:
        in_chans: Channels of the input.
        conv_chans: Output channels of the k x k convolution.
        kernel_size: Size k of the first convolution.
        stride: Stride of the first convolution.
        padding: Zero padding of the first convolution.
        mlp_chans: Output channels of each 1 x 1 convolution, in order; empty for no micro-network. The block's
            output channel count is the last entry (or ``conv_chans`` when empty).
        act_layer: Activation class, instantiated after every convolution. ``nn.ReLU`` runs in place.
        norm_layer: Optional norm class (e.g. ``nn.BatchNorm2d``) placed between each convolution and its
            activation; convolutions followed by a norm have no bias (the norm's shift replaces it).
        final_act: Apply the activation after the last convolution. NiN's class-map blocks end in a ReLU in the
            paper; a ReLU that dies there zeroes every class map and stalls training at loss ln(num_classes).
    """

    def __init__(
        self,
        in_chans: int,
        conv_chans: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        mlp_chans: Sequence[int] = (),
        *,
        act_layer: type[nn.Module] = nn.ReLU,
        norm_layer: type[nn.Module] | None = None,
        final_act: bool = True,
    ) -> None:
        widths = [conv_chans, *mlp_chans]
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_chans
        for i, width in enumerate(widths):
            k, s, p = (kernel_size, stride, padding) if i == 0 else (1, 1, 0)
            layers[f"conv{i}"] = nn.Conv2d(channels, width, k, s, p, bias=norm_layer is None)
            if norm_layer is not None:
                layers[f"norm{i}"] = norm_layer(width)
            if final_act or i < len(widths) - 1:
                layers[f"act{i}"] = _activation(act_layer)
            channels = width
        super().__init__(layers)
        self.in_chans = in_chans
        self.out_chans = channels


def _activation(act_layer: type[nn.Module]) -> nn.Module:
    """An instance of ``act_layer``; a ReLU overwrites its input.

    Safe here because neither a convolution's nor a BatchNorm's backward needs its own output, and it saves a pass
    over memory and an activation-sized buffer per layer: on a CPU these memory-bound passes, not the convolutions,
    take a third of a small NiN's training step (docs/benchmarks.md).
    """
    return act_layer(inplace=True) if act_layer is nn.ReLU else act_layer()


class GlobalAvgPool(nn.Module):
    """Global average pooling as a mean over H and W: (B, C, H, W) -> (B, C, 1, 1), or (B, C) with ``flatten``.

    A plain mean rather than ``nn.AdaptiveAvgPool2d(1)``: the adaptive pool's backward has no deterministic CUDA
    kernel, so ``Trainer(deterministic=True)`` would fail on a GPU.
    """

    def __init__(self, flatten: bool = False) -> None:
        super().__init__()
        self.flatten = flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=not self.flatten)

    def extra_repr(self) -> str:
        return f"flatten={self.flatten}"
