"""Weight initialisation schemes for NiN networks, by name.

The two papers' recipes differ only here, and the choice decides whether a plain (BatchNorm-free) NiN trains at all:
d2l's ``train_ch6`` uses Xavier-uniform, Lin et al.'s Caffe model Gaussian std 0.05 (which with lr 0.1 often kills
the class-map ReLU); He/Kaiming suits deep ReLU stacks.
"""

from __future__ import annotations

from torch import nn

from ninlab.errors import check_choice

__all__ = ["INIT_SCHEMES", "init_weights"]

INIT_SCHEMES = ("default", "xavier", "gaussian", "kaiming")
_GAUSSIAN_STD = 0.05  # Caffe's NiN CIFAR-10 prototxt


def init_weights(module: nn.Module, scheme: str) -> None:
    """Re-initialise the weights of every conv and linear layer of ``module`` in place with ``scheme``.

    ``"default"`` keeps PyTorch's own initialisation (Kaiming-uniform with a = sqrt(5)); norm layers are never
    touched. ``"xavier"`` re-draws the weights only and keeps PyTorch's default biases, as d2l's ``train_ch6`` (spec
    003's training loop) does; ``"gaussian"`` and ``"kaiming"`` set the biases to zero.

    Raises:
        ConfigError: ``scheme`` is not one of :data:`INIT_SCHEMES`.
    """
    check_choice(scheme, INIT_SCHEMES, "init")
    if scheme == "default":
        return
    for layer in module.modules():
        if not isinstance(layer, nn.Conv2d | nn.Linear):
            continue
        if scheme == "xavier":
            nn.init.xavier_uniform_(layer.weight)
        elif scheme == "gaussian":
            nn.init.normal_(layer.weight, std=_GAUSSIAN_STD)
        else:
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
        if layer.bias is not None and scheme != "xavier":
            nn.init.zeros_(layer.bias)
