"""Network in Network (NiN) model family.

Paper: Lin, Chen & Yan, "Network In Network", ICLR 2014, https://arxiv.org/abs/1312.4400

Every variant is a stack of mlpconv blocks (:class:`ninlab.models.layers.MLPConv`) and pools, described as data
(a tuple of stage specs, :mod:`ninlab.models.stages`) and built by one class, :class:`ninlab.models.network.NiN`.
The last block outputs one map per class and global average pooling turns the maps into logits: no dense layer,
except in ``nin_micro`` whose source has one.

Variants:
    nin_d2l: the AlexNet-shaped NiN of the d2l NiN document ("Dive into Deep Learning"), for 1 x 224 x 224
        Fashion-MNIST.
    nin_cifar: Lin et al.'s CIFAR-10 network (Caffe model zoo), 32 x 32 inputs.
    nin_imagenet: Lin et al.'s 4-block ImageNet network (Caffe model zoo), 224 x 224 inputs.
    nin_micro: the Lightning NiN document's network (three 1 x 1 micro-networks and a linear head).
    nin_fast: a small BatchNorm NiN for fast training on 28 x 28 / 32 x 32 images on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ninlab.errors import ConfigError
from ninlab.models.network import NiN
from ninlab.models.registry import register_model
from ninlab.models.stages import NUM_CLASSES, Block, Dropout, Pool, Stage

__all__ = ["NiN", "nin_cifar", "nin_d2l", "nin_fast", "nin_imagenet", "nin_micro"]

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
    """The d2l NiN document's network: 11/5/3/3 kernels, 96/256/384/num_classes channels, max pools 3/2, dropout 0.5.

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
    """The Lightning NiN document's network: three micro-networks 3->16->32->64, global pooling, Linear(64, classes).

    Every convolution is 1 x 1, so this network never mixes neighbouring pixels: it is a per-pixel MLP followed by
    average pooling and a linear layer, and cannot see shapes or textures. It is kept because it is that document's
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
    pad_last_block: bool = True,
) -> NiN:
    """A small BatchNorm NiN for fast training on 28 x 28 / 32 x 32 images on a CPU.

    Three 3x3 mlpconv blocks of ``widths`` channels (each with one 1 x 1 layer), 2x2 max pools after the first two
    (28 -> 14 -> 7), then a 1 x 1 conv to one map per class (no norm) and global average pooling. Unlike the paper
    variants, ``final_act`` defaults to False: class maps without a ReLU can be negative and never die. The default
    widths give 459,594 parameters for 1 channel and 10 classes; the default recipe's 16-64-128 gives 105,946.

    ``pad_last_block=False`` runs the third block's 3x3 conv without padding (7 x 7 -> 5 x 5 at 28 x 28; 32 x 32:
    8 x 8 -> 6 x 6): the same parameters, 30% fewer multiply-adds at 28 x 28 (that block does 60% of them), and
    class maps on the central 5 x 5 cells of the 7 x 7 grid (the image's central 20 x 20 pixels). The default recipe
    uses it: the same test accuracy with 1.22x faster training steps on a 2-core CPU (docs/benchmarks.md). The
    default stays True, so checkpoints and shipped weights whose options do not name it rebuild the network they
    were trained as.

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
        Block(w3, 3, padding=1 if pad_last_block else 0, mlp=(w3,)),
        Block(NUM_CLASSES, 1, norm=False),  # (B, num_classes, 7, 7); 5 x 5 without pad_last_block
    )
    return NiN(stages, in_chans=in_chans, num_classes=num_classes, act_layer=act_layer, norm_layer=norm_layer,
               final_act=final_act, name="nin_fast", design_size=28)  # fmt: skip
