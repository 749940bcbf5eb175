"""Network in Network (NiN) model family.

Paper: Lin, Chen & Yan, "Network In Network", ICLR 2014, https://arxiv.org/abs/1312.4400

Every variant is a stack of mlpconv blocks (:class:`ninlab.models.layers.MLPConv`) and pools, described as data
(a tuple of stage specs, :mod:`ninlab.models.stages`) and built by one class, :class:`NiN`. The last block outputs
one map per class and global average pooling turns the maps into logits: no dense layer, except in ``nin_micro``
whose source has one.

Variants:
    nin_d2l: the AlexNet-shaped NiN of "Dive into Deep Learning" (spec 003), for 1 x 224 x 224 Fashion-MNIST.
    nin_cifar: Lin et al.'s CIFAR-10 network (Caffe model zoo), 32 x 32 inputs.
    nin_imagenet: Lin et al.'s 4-block ImageNet network (Caffe model zoo), 224 x 224 inputs.
    nin_micro: the Lightning example network of spec 000 (three 1 x 1 micro-networks and a linear head).
    nin_fast: a small BatchNorm NiN for fast training on 28 x 28 / 32 x 32 images on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ninlab.errors import ConfigError, InputSizeError
from ninlab.models.layers import GlobalAvgPool, MLPConv
from ninlab.models.registry import register_model
from ninlab.models.stages import NUM_CLASSES, Block, Dropout, Pool, Stage, spatial_out_size

__all__ = ["NiN", "nin_cifar", "nin_d2l", "nin_fast", "nin_imagenet", "nin_micro"]

_ACT_LAYERS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU}
_NORM_LAYERS: dict[str, type[nn.Module] | None] = {"batchnorm": nn.BatchNorm2d, "none": None}


def _resolve_layer(value, table: dict, option: str):
    """Accept a layer class or its name in ``table`` (names let configs and the CLI choose layers)."""
    if value is None or isinstance(value, type):
        return value
    if isinstance(value, str) and value.lower() in table:
        return table[value.lower()]
    raise ConfigError(f"unknown {option} {value!r}; use one of {', '.join(table)} or an nn.Module class")


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
        drop_rate: Overrides the dropout probability of every dropout stage (None keeps the spec's).
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


_D2L: tuple[Stage, ...] = (
    Block(96, 11, stride=4, mlp=(96, 96)),  # (B, 96, 54, 54) at 224
    Pool("max", 3, 2),  # (B, 96, 26, 26)
    Block(256, 5, padding=2, mlp=(256, 256)),
    Pool("max", 3, 2),  # (B, 256, 12, 12)
    Block(384, 3, padding=1, mlp=(384, 384)),
    Pool("max", 3, 2),  # (B, 384, 5, 5)
    Dropout(0.5),
    Block(NUM_CLASSES, 3, padding=1, mlp=(NUM_CLASSES, NUM_CLASSES)),  # (B, num_classes, 5, 5): one map per class
)
_CIFAR: tuple[Stage, ...] = (
    Block(192, 5, padding=2, mlp=(160, 96)),
    Pool("max", 3, 2, ceil_mode=True),  # (B, 96, 16, 16) at 32
    Dropout(0.5),
    Block(192, 5, padding=2, mlp=(192, 192)),
    Pool("avg", 3, 2, ceil_mode=True),  # (B, 192, 8, 8)
    Dropout(0.5),
    Block(192, 3, padding=1, mlp=(192, NUM_CLASSES)),  # (B, num_classes, 8, 8)
)
_IMAGENET: tuple[Stage, ...] = (
    Block(96, 11, stride=4, mlp=(96, 96)),  # (B, 96, 54, 54) at 224
    Pool("max", 3, 2, ceil_mode=True),  # (B, 96, 27, 27)
    Block(256, 5, padding=2, mlp=(256, 256)),
    Pool("max", 3, 2, ceil_mode=True),  # (B, 256, 13, 13)
    Block(384, 3, padding=1, mlp=(384, 384)),
    Pool("max", 3, 2, ceil_mode=True),  # (B, 384, 6, 6)
    Dropout(0.5),
    Block(1024, 3, padding=1, mlp=(1024, NUM_CLASSES)),  # (B, num_classes, 6, 6)
)
_MICRO: tuple[Stage, ...] = (Block(16, 1, mlp=(16,)), Block(32, 1, mlp=(32,)), Block(64, 1, mlp=(64,)))


@register_model
def nin_d2l(
    *,
    in_chans: int = 1,
    num_classes: int = 10,
    act_layer: type[nn.Module] | str = nn.ReLU,
    norm_layer: type[nn.Module] | str | None = None,
    drop_rate: float = 0.5,
    final_act: bool = True,
) -> NiN:
    """The d2l NiN of spec 003: 11/5/3/3 kernels, 96/256/384/num_classes channels, max pools 3/2, dropout 0.5.

    Made for 1 x 224 x 224 Fashion-MNIST (1,992,166 parameters for 1 channel and 10 classes); the smallest input
    it takes is 67 x 67.
    """
    return NiN(_D2L, in_chans=in_chans, num_classes=num_classes, act_layer=act_layer, norm_layer=norm_layer,
               drop_rate=drop_rate, final_act=final_act, name="nin_d2l")  # fmt: skip


@register_model
def nin_cifar(
    *,
    in_chans: int = 3,
    num_classes: int = 10,
    act_layer: type[nn.Module] | str = nn.ReLU,
    norm_layer: type[nn.Module] | str | None = None,
    drop_rate: float = 0.5,
    final_act: bool = True,
) -> NiN:
    """Lin, Chen & Yan's CIFAR-10 NiN (Caffe model zoo): 966,986 parameters for 3 channels and 10 classes.

    Three mlpconv blocks (5x5 192-160-96, 5x5 192-192-192, 3x3 192-192-num_classes) with Caffe's ceil-mode
    pools (max then average, 3/2: 32 -> 16 -> 8), dropout 0.5 after the first two, ReLU after every conv.
    """
    return NiN(_CIFAR, in_chans=in_chans, num_classes=num_classes, act_layer=act_layer, norm_layer=norm_layer,
               drop_rate=drop_rate, final_act=final_act, name="nin_cifar", design_size=32)  # fmt: skip


@register_model
def nin_imagenet(
    *,
    in_chans: int = 3,
    num_classes: int = 1000,
    act_layer: type[nn.Module] | str = nn.ReLU,
    norm_layer: type[nn.Module] | str | None = None,
    drop_rate: float = 0.5,
    final_act: bool = True,
) -> NiN:
    """Lin et al.'s 4-block ImageNet NiN (Caffe model zoo): 7,595,176 parameters for 1,000 classes at 224 x 224.

    The paper's "4-layer NIN": AlexNet's 11/5/3 kernels and 96/256/384 widths, a fourth 3x3 block of 1,024
    channels whose micro-network ends in num_classes maps, ceil-mode max pools (224 -> 54 -> 27 -> 13 -> 6).
    """
    return NiN(_IMAGENET, in_chans=in_chans, num_classes=num_classes, act_layer=act_layer, norm_layer=norm_layer,
               drop_rate=drop_rate, final_act=final_act, name="nin_imagenet")  # fmt: skip


@register_model
def nin_micro(
    *,
    in_chans: int = 3,
    num_classes: int = 10,
    act_layer: type[nn.Module] | str = nn.ReLU,
    norm_layer: type[nn.Module] | str | None = None,
    final_act: bool = True,
) -> NiN:
    """The Lightning example NiN of spec 000: three micro-networks 3->16->32->64, global pooling, Linear(64, classes).

    Every convolution is 1 x 1, so this network never mixes neighbouring pixels: it is a per-pixel MLP followed by
    average pooling and a linear layer, and cannot see shapes or textures. It is kept because it is the spec's
    network (8,858 parameters for 3 channels and 10 classes); use ``nin_fast`` or ``nin_cifar`` for real accuracy.
    """
    return NiN(_MICRO, in_chans=in_chans, num_classes=num_classes, act_layer=act_layer, norm_layer=norm_layer,
               final_act=final_act, linear_head=num_classes, name="nin_micro", design_size=32)  # fmt: skip


@register_model
def nin_fast(
    *,
    in_chans: int = 1,
    num_classes: int = 10,
    widths: Sequence[int] = (64, 128, 256),
    act_layer: type[nn.Module] | str = nn.ReLU,
    norm_layer: type[nn.Module] | str | None = nn.BatchNorm2d,
    drop_rate: float = 0.0,
    final_act: bool = False,
) -> NiN:
    """A small BatchNorm NiN for fast training on 28 x 28 / 32 x 32 images on a CPU.

    Three 3x3 mlpconv blocks of ``widths`` channels (each with one 1 x 1 layer), 2x2 max pools after the first two
    (28 -> 14 -> 7), then a 1 x 1 conv to one map per class (no norm) and global average pooling. Unlike the paper
    variants, ``final_act`` defaults to False: class maps without a ReLU can be negative and never die. The default
    widths give 459,594 parameters for 1 channel and 10 classes; the default recipe's 16-64-128 gives 105,946.

    Raises:
        ConfigError: ``widths`` is not three positive integers.
    """
    if (
        isinstance(widths, str)
        or not isinstance(widths, Sequence)
        or len(widths) != 3
        or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths)
    ):
        raise ConfigError(
            f"nin_fast: widths must be three positive integers (one per 3x3 block, e.g. [16, 64, 128]), got {widths!r}"
        )
    w1, w2, w3 = widths
    stages = (
        Block(w1, 3, padding=1, mlp=(w1,)),  # (B, w1, 28, 28) at 28
        Pool("max", 2, 2),  # (B, w1, 14, 14)
        Block(w2, 3, padding=1, mlp=(w2,)),
        Pool("max", 2, 2),  # (B, w2, 7, 7)
        Dropout(drop_rate),
        Block(w3, 3, padding=1, mlp=(w3,)),
        Block(NUM_CLASSES, 1, norm=False),  # (B, num_classes, 7, 7)
    )
    return NiN(stages, in_chans=in_chans, num_classes=num_classes, act_layer=act_layer, norm_layer=norm_layer,
               final_act=final_act, name="nin_fast", design_size=28)  # fmt: skip
