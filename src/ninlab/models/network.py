"""The one class every NiN variant is built by: a tuple of stage specs (:mod:`ninlab.models.stages`) made layers.

Paper: Lin, Chen & Yan, "Network In Network", ICLR 2014, https://arxiv.org/abs/1312.4400. The registered variants
(:mod:`ninlab.models.nin`) differ only in their stage tuples and defaults.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ninlab.errors import ConfigError, InputSizeError, unknown_choice
from ninlab.models.layers import GlobalAvgPool, MLPConv
from ninlab.models.stages import NUM_CLASSES, Block, Pool, Stage, spatial_out_size

__all__ = ["NiN"]

_ACT_LAYERS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU}
_NORM_LAYERS: dict[str, type[nn.Module] | None] = {"batchnorm": nn.BatchNorm2d, "none": None}


def _resolve_layer(value, table: dict, option: str):
    """Accept a layer class or its name in ``table`` (names let configs and the CLI choose layers)."""
    if value is None or isinstance(value, type):
        return value
    if isinstance(value, str) and value.lower() in table:
        return table[value.lower()]
    raise unknown_choice(option, value, table, " or an nn.Module class")


class NiN(nn.Module):
    """A Network-in-Network classifier built from a tuple of stage specs.

    ``features`` holds the blocks, pools and dropouts; ``head`` pools each class map to one logit (plus a linear
    layer when ``linear_head``). ``forward_features``, ``forward_head`` and ``forward`` are the model API shared by
    every variant, with the attributes ``num_classes``, ``in_chans``, ``design_size`` and ``min_input_size``.

    Args:
        stages: The network as data; ``NUM_CLASSES`` in a channel count becomes ``num_classes``.
        in_chans: Input channels (1 for Fashion-MNIST, 3 for CIFAR).
        num_classes: Number of classes (logits).
        act_layer: Activation after every conv (class or name: relu, gelu, silu, elu).
        norm_layer: Norm after every conv of the blocks that allow one (class or name: batchnorm, none).
        drop_rate: Overrides the dropout probability of every dropout stage (None keeps the stage spec's).
        final_act: Whether the last block ends in an activation. The papers apply a ReLU to the class maps;
            turning it off avoids the "dead class map" failure (loss stuck at ln(num_classes)).
        linear_head: Width of a linear layer after global pooling (None = no dense layer, the NiN way).
        name: The registered variant name, used in error messages.
        design_size: The input height and width the variant was designed for: ``ninlab summary``'s default input
            and a checkpoint's input size when it stores none. The network takes any size from ``min_input_size``
            up; it never resizes (``--data.image_size`` does, in the datamodule).
    """

    def __init__(
        self,
        stages: Sequence[Stage],
        *,
        in_chans: int,
        num_classes: int,
        act_layer: type[nn.Module] | str = nn.ReLU,
        norm_layer: type[nn.Module] | str | None = None,
        drop_rate: float | None = None,
        final_act: bool = True,
        linear_head: int | None = None,
        name: str = "nin",
        design_size: int = 224,
    ) -> None:
        super().__init__()
        if in_chans < 1 or num_classes < 1:
            raise ConfigError(f"{name} needs in_chans >= 1 and num_classes >= 1, got {in_chans} and {num_classes}")
        if drop_rate is not None and not 0.0 <= drop_rate < 1.0:
            raise ConfigError(f"{name}: drop_rate must be in [0, 1), got {drop_rate}")
        act_layer = _resolve_layer(act_layer, _ACT_LAYERS, "act_layer")
        norm_layer = _resolve_layer(norm_layer, _NORM_LAYERS, "norm_layer")
        self.name, self.in_chans, self.num_classes, self.design_size = name, in_chans, num_classes, design_size

        def width(channels: int) -> int:
            return num_classes if channels == NUM_CLASSES else channels

        last_block = max(i for i, stage in enumerate(stages) if isinstance(stage, Block))
        layers: list[nn.Module] = []
        channels = in_chans
        for i, stage in enumerate(stages):
            if isinstance(stage, Block):
                block_final_act = stage.final_act if stage.final_act is not None else (i < last_block or final_act)
                block = MLPConv(
                    channels, width(stage.conv), stage.kernel, stage.stride, stage.padding,
                    tuple(width(c) for c in stage.mlp), act_layer=act_layer,
                    norm_layer=norm_layer if stage.norm else None, final_act=block_final_act,
                )  # fmt: skip
                channels = block.out_chans
                layers.append(block)
            elif isinstance(stage, Pool):
                pool = nn.MaxPool2d if stage.kind == "max" else nn.AvgPool2d
                layers.append(pool(stage.kernel, stage.stride, ceil_mode=stage.ceil_mode))
            else:
                layers.append(nn.Dropout(stage.p if drop_rate is None else drop_rate))
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [GlobalAvgPool(), nn.Flatten()]
        if linear_head is not None:
            head.append(nn.Linear(channels, num_classes))
        elif channels != num_classes:
            raise ConfigError(f"{name}: the last block outputs {channels} maps but num_classes is {num_classes}")
        self.head = nn.Sequential(*head)
        self.min_input_size = next(s for s in range(1, 4097) if spatial_out_size(self.features, s) > 0)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InputSizeError` unless ``x`` is (B, in_chans, H, W) with H and W large enough."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            found = "x".join(str(d) for d in x.shape)
            raise InputSizeError(
                f"{self.name} expects a batch of {self.in_chans}-channel images (B x {self.in_chans} x H x W), "
                f"got a tensor of shape {found}; convert the images or build the model with in_chans={x.shape[1]}"
                if x.ndim == 4
                else f"{self.name} expects a 4-d batch (B x C x H x W), got shape {found}; add a batch dimension"
            )
        h, w = x.shape[-2:]
        if min(h, w) < self.min_input_size:
            m = self.min_input_size
            raise InputSizeError(
                f"input {self.in_chans}x{h}x{w} is too small for {self.name}: the smallest is "
                f"{self.in_chans}x{m}x{m}; resize the images (e.g. --data.image_size {m})"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Run the blocks: (B, in_chans, H, W) -> (B, C, h, w); C = num_classes unless there is a linear head."""
        self.check_input(x)
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Pool the feature maps to logits: (B, C, h, w) -> (B, num_classes)."""
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images: (B, in_chans, H, W) -> (B, num_classes)."""
        return self.forward_head(self.forward_features(x))
