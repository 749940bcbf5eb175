"""Weight initialisation schemes for NiN networks, by name.

The two papers' recipes differ only here, and the choice decides whether a plain (BatchNorm-free) NiN trains at all:
d2l's ``train_ch6`` uses Xavier-uniform, Lin et al.'s Caffe model Gaussian std 0.05 (which with lr 0.1 often kills
the class-map ReLU); He/Kaiming suits deep ReLU stacks.

What the biases start at matters as much as the weights for the d2l NiN. Xavier shrinks the signal layer after layer
(the first 11 x 11 conv divides its variance by ~50), so with PyTorch's default biases, uniform(+-1/sqrt(fan_in)) =
+-0.32 in the last block's 10-channel 1 x 1 convs, every class map is a near-constant set by those biases: the ones
whose constant is negative are zero for every image from step 0 (3-5 of ten), get no gradient and stay dead until
the layers below change, as in d2l's PyTorch runs (0.785-0.790 test). ``"xavier_zero_bias"`` is d2l's MXNet and
TensorFlow init (Glorot-uniform weights, zero biases; 0.840-0.871 test): the last block's outputs then depend on the
input. Behind the class-map ReLU, SGD at lr 0.1 still kills maps during training, so the fixed d2l recipe also drops
that ReLU (configs/d2l_fashion_mnist_fixed.yaml).

:func:`patch_whitening_filters` is the one data-dependent scheme: first-layer filters computed from training images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ninlab.errors import ConfigError, check_choice

__all__ = ["INIT_SCHEMES", "first_conv", "init_weights", "patch_whitening_filters"]

INIT_SCHEMES = ("default", "xavier", "xavier_zero_bias", "gaussian", "kaiming")
_GAUSSIAN_STD = 0.05  # Caffe's NiN CIFAR-10 prototxt


def init_weights(module: nn.Module, scheme: str) -> None:
    """Re-initialise the weights of every conv and linear layer of ``module`` in place with ``scheme``.

    ``"default"`` keeps PyTorch's own initialisation (Kaiming-uniform with a = sqrt(5)); norm layers are never
    touched. ``"xavier"`` re-draws the weights only and keeps PyTorch's default biases, as d2l's ``train_ch6`` (the d2l
    NiN document's training loop) does; ``"xavier_zero_bias"`` re-draws them the same way and zeroes the biases (Keras'
    glorot_uniform/zeros and MXNet's Xavier, d2l's other two frameworks); ``"gaussian"`` and ``"kaiming"`` set
    the biases to zero.

    Raises:
        ConfigError: ``scheme`` is not one of :data:`INIT_SCHEMES`.
    """
    check_choice(scheme, INIT_SCHEMES, "init")
    if scheme == "default":
        return
    for layer in module.modules():
        if not isinstance(layer, nn.Conv2d | nn.Linear):
            continue
        if scheme in ("xavier", "xavier_zero_bias"):
            nn.init.xavier_uniform_(layer.weight)
        elif scheme == "gaussian":
            nn.init.normal_(layer.weight, std=_GAUSSIAN_STD)
        else:
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
        if layer.bias is not None and scheme != "xavier":
            nn.init.zeros_(layer.bias)


def first_conv(module: nn.Module) -> nn.Conv2d:
    """The first convolution of ``module`` (the one that sees the images); a ConfigError if it has none."""
    conv = next((layer for layer in module.modules() if isinstance(layer, nn.Conv2d)), None)
    if conv is None:
        raise ConfigError(f"{type(module).__name__} has no convolution to whiten")
    return conv


def check_whitenable(conv: nn.Conv2d) -> None:
    """Refuse a convolution whose filters cannot be the +- pairs of its patches' principal directions.

    Raises:
        ConfigError: ``conv`` has groups or dilation, an odd number of filters, or more pairs than patch dimensions.
    """
    dims = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    if conv.groups != 1 or conv.dilation != (1, 1):
        raise ConfigError(f"patch whitening needs a plain convolution (groups 1, dilation 1), found {conv}")
    if conv.out_channels % 2 or conv.out_channels // 2 > dims:
        raise ConfigError(f"patch whitening needs an even number of filters, at most twice the {dims} values of a "
                          f"patch, found {conv.out_channels}: change the first block's width")  # fmt: skip


def patch_whitening_filters(images: torch.Tensor, conv: nn.Conv2d, eps: float = 1e-2) -> torch.Tensor:
    """Filters for ``conv`` that whiten the patches of ``images``: its weight's shape, float32, on the CPU.

    The patches' (uncentred) second-moment matrix gives the leading ``conv.out_channels // 2`` principal directions;
    each becomes a filter scaled by ``1 / sqrt(eigenvalue + eps)`` (its response has unit variance over the images),
    followed by the same filters negated, so that a ReLU after them keeps both signs. This is the patch whitening of
    the fast CIFAR-10 trainers (hlb-cifar10, airbench), written out here because no library ninlab uses has it.

    Args:
        images: Normalised images ``N x C x H x W``, as the network receives them.
        conv: The convolution the filters are for (its kernel size and channels; see :func:`check_whitenable`).
        eps: Added to each eigenvalue, so near-constant directions are not blown up.
    """
    check_whitenable(conv)
    kernel = conv.kernel_size
    dims = conv.in_channels * kernel[0] * kernel[1]
    second_moment = torch.zeros(dims, dims, dtype=torch.float64)
    count = 0
    # Chunked so the unfolded patches (dims values for every position) stay ~32 MB, whatever the image size.
    per_image = dims * max(1, (images.shape[-2] - kernel[0] + 1) * (images.shape[-1] - kernel[1] + 1))
    for chunk in images.split(max(1, 2**22 // per_image)):
        patches = F.unfold(chunk.float().cpu(), kernel).transpose(1, 2).reshape(-1, dims).double()
        second_moment += patches.T @ patches
        count += len(patches)
    values, vectors = torch.linalg.eigh(second_moment / max(count, 1))  # ascending eigenvalues
    pairs = conv.out_channels // 2
    filters = (vectors[:, -pairs:] / (values[-pairs:].clamp(min=0) + eps).sqrt()).flip(1).T  # leading first
    return torch.cat([filters, -filters]).reshape(conv.weight.shape).float()
