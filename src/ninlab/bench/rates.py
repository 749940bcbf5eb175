"""The yardsticks a training speed is compared with: this machine's matrix-multiply rate and a model's FLOPs.

Both are measured, never assumed: the sgemm rate in the same run as the training it is compared with (machines
here are shared and noisy), and training FLOPs by ``torch.utils.flop_counter`` on a real forward + backward.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "call_seconds",
    "conv3x3_flops_per_s",
    "forward_flops_per_image",
    "matmul_flops_per_s",
    "median_rate",
    "training_flops_per_image",
]


def median_rate(work: float, seconds: list[float]) -> float:
    """Median of ``work / s`` over the timed repeats ``seconds``."""
    return statistics.median(work / s for s in seconds)


def call_seconds(call: Callable[[], object], repeats: int, warmup: int = 2) -> list[float]:
    """Seconds of each of ``repeats`` timed ``call()``s, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return seconds


def _call_rate(call: Callable[[], object], flops: float, repeats: int) -> float:
    """Median FLOP/s of ``repeats`` timed ``call()``s of ``flops`` each, after warm-up."""
    return median_rate(flops, call_seconds(call, repeats))


def matmul_flops_per_s(dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 7) -> float:
    """Median FLOP/s of a ``size`` x ``size`` CPU matrix multiply in ``dtype`` (2 * size**3 FLOPs each), after warm-up.

    fp32 (an sgemm) is the yardstick of ``ninlab bench``; bf16 is what autocast runs convolutions in under
    ``bf16-mixed`` (fast only on CPUs with bf16 instructions: AVX512-BF16 or AMX).
    """
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    return _call_rate(lambda: torch.mm(a, b), 2.0 * size**3, repeats)


@torch.no_grad()
def conv3x3_flops_per_s(repeats: int = 7) -> float:
    """Median FLOP/s of an fp32 3x3 convolution forward, 128 -> 128 channels on 64 channels-last 16 x 16 images
    (2 * 64 * 16 * 16 * 128 * 128 * 9 FLOPs each), after warm-up.

    The second yardstick of ``ninlab bench``: the kind of kernel that does most of a NiN's work (oneDNN's, not the
    BLAS library's), at a size where it runs fast. The two can differ by a factor: on the AMD EPYC (Zen 5) host of
    2026-12-01 this ran at 487 GFLOP/s and the sgemm at 208 (MKL's sgemm takes a slower path on AMD CPUs), so there
    a fraction of the sgemm alone overstates how near the machine's limit a training step is.
    """
    conv = nn.Conv2d(128, 128, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
    x = torch.randn(64, 128, 16, 16).contiguous(memory_format=torch.channels_last)
    return _call_rate(lambda: conv(x), 2.0 * 64 * 16 * 16 * 128 * 128 * 9, repeats)


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


@torch.no_grad()
def forward_flops_per_image(model: nn.Module, input_size: tuple[int, int, int], batch_size: int = 8) -> float:
    """FLOPs of one evaluation forward pass per image (eval mode, no gradients), counted on a real batch."""
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(batch_size, *input_size))
    model.train(was_training)
    return counter.get_total_flops() / batch_size
