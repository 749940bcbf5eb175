"""The NiN model family; importing this package registers every variant with :mod:`ninlab.models.registry`."""

from ninlab.models.nin import NiN, nin_cifar, nin_d2l, nin_fast, nin_imagenet, nin_micro

__all__ = ["NiN", "nin_cifar", "nin_d2l", "nin_fast", "nin_imagenet", "nin_micro"]
