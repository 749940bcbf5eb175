"""The yardsticks a training speed is compared with: this machine's fp32 matrix-multiply rate and a model's FLOPs.

Both are measured, never assumed: the sgemm rate in the same run as the training it is compared with (machines
here are shared and noisy), and training FLOPs by ``torch.utils.flop_counter`` on a real forward + backward.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["median_rate", "sgemm_flops_per_s", "training_flops_per_image"]


def median_rate(work: float, seconds: list[float]) -> float:
    """Median of ``work / s`` over the timed repeats ``seconds``."""
    return statistics.median(work / s for s in seconds)


def sgemm_flops_per_s(size: int = 2048, repeats: int = 7) -> float:
    """Median fp32 FLOP/s of a ``size`` x ``size`` CPU matrix multiply (2 * size**3 FLOPs each), after warm-up."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(2):
        torch.mm(a, b)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        seconds.append(time.perf_counter() - start)
    return median_rate(2.0 * size**3, seconds)


def training_flops_per_image(model: nn.Module, input_size: tuple[int, int, int], batch_size: int = 8) -> float:
    """FLOPs of one training step per image: forward, cross-entropy and backward, counted on a real batch.

    The model's parameters and gradients are left as they were (the gradients are cleared afterwards).
    """
    was_training = model.training
    model.train()
    x = torch.randn(batch_size, *input_size)
    with FlopCounterMode(display=False) as counter:
        logits = model(x)
        nn.functional.cross_entropy(logits, torch.zeros(batch_size, dtype=torch.long)).backward()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return counter.get_total_flops() / batch_size
