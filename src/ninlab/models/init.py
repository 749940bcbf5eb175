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
"""

from __future__ import annotations

from torch import nn

from ninlab.errors import check_choice

__all__ = ["INIT_SCHEMES", "init_weights"]

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
