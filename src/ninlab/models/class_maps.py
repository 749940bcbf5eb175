"""Class maps: where a NiN finds each class, one map per class before global average pooling.

A NiN's last block outputs one map per class and global average pooling turns each map into its logit, so that
block's output is the network's own picture of where each class is (Lin, Chen & Yan, "Network In Network", ICLR
2014, Section 4.6 and Figure 4). For a head with a linear layer after the pooling (``nin_micro``), the class map of
class ``c`` is Zhou et al.'s class activation map (CAM, "Learning Deep Features for Discriminative Localization",
CVPR 2016): ``sum_k w_ck f_k(x, y) + b_c``, the linear layer applied at every position of the last feature maps.

Either way ``class_maps(model, x, upsample=False).mean((2, 3))`` is the model's logits: bit for bit for the
variants whose last block outputs the class maps (the pooling computes that very mean), to float rounding for
``nin_micro`` (the linear layer and the mean are applied in the other order) and for a classifier that averages
an image's logits with its mirror image's (``tta_flip``; the maps are averaged the same way).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ninlab.errors import ConfigError, InputSizeError
from ninlab.models.layers import GlobalAvgPool
from ninlab.models.nin import NiN

__all__ = ["class_maps", "network_of", "upsample_maps"]


def network_of(model: nn.Module) -> NiN:
    """The NiN inside ``model`` (a :class:`NiN`, or a classifier holding one as ``.net``) that has class maps.

    Raises:
        ConfigError: ``model`` is no NiN, or its head is not global average pooling (plus at most one linear layer).
    """
    net = getattr(model, "net", model)
    head = list(getattr(net, "head", ()))
    pooled = len(head) in (2, 3) and isinstance(head[0], GlobalAvgPool) and isinstance(head[1], nn.Flatten)
    if not (isinstance(net, NiN) and pooled and (len(head) == 2 or isinstance(head[2], nn.Linear))):
        name = getattr(net, "name", type(net).__name__)
        raise ConfigError(f"{name} has no class maps: they need a NiN whose head is global average pooling "
                          "(optionally followed by one linear layer); use one of ninlab's NiN variants")  # fmt: skip
    return net


def _maps(net: NiN, images: torch.Tensor) -> torch.Tensor:
    features = net.forward_features(images)
    last = net.head[-1]
    if not isinstance(last, nn.Linear):
        return features  # one map per class already: the block output the pooling averages
    # The linear layer at every position (a 1 x 1 convolution with its weights): CAM plus the bias, so the mean
    # over positions is the linear layer applied to the pooled features, i.e. the logits.
    return F.conv2d(features, last.weight[:, :, None, None], last.bias)


def class_maps(model: nn.Module, images: torch.Tensor, *, upsample: bool = True) -> torch.Tensor:
    """Class maps of a batch of normalised images: (B, C, H, W) -> (B, num_classes, H, W), or (B, num_classes, h, w).

    Runs in eval mode without gradients (the model's mode is restored). For a :class:`NiNClassifier` trained with
    ``tta_flip`` the maps are the mean of the image's maps and its mirror image's maps mirrored back, matching the
    logits the classifier reports.

    Args:
        model: A :class:`ninlab.models.nin.NiN` or a :class:`ninlab.training.module.NiNClassifier`.
        images: Float images prepared as for the network (:func:`ninlab.data.transforms.prepare_images`).
        upsample: Resize the maps bilinearly to the images' height and width, for display over the image. The
            identity with the logits is that of the maps without upsampling; upsampled maps keep the mean (to float
            rounding) only when the image is a whole multiple of the maps' size (nin_fast at 28 x 28: 7 x 7 maps).

    Raises:
        ConfigError: The model has no class maps (see :func:`network_of`).
        InputSizeError: ``images`` are not float, or have the wrong shape or channel count for the network.
    """
    net = network_of(model)
    if not images.is_floating_point():
        raise InputSizeError(f"class maps take normalised float images, got {images.dtype}; prepare them with "
                             "ninlab.data.transforms.prepare_images")  # fmt: skip
    flip = net is not model and bool(getattr(model, "hparams", {}).get("tta_flip", False))
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            maps = _maps(net, images)
            if flip:
                maps = (maps + _maps(net, images.flip(-1)).flip(-1)) / 2
    finally:
        net.train(was_training)
    maps = maps.float()
    return upsample_maps(maps, tuple(images.shape[-2:])) if upsample else maps


def upsample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Class maps (B, K, h, w) resized bilinearly to ``size`` (H, W) for display (see :func:`class_maps`)."""
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
