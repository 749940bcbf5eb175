"""Inference speed of a classifier in PyTorch and as exported ONNX in onnxruntime: throughput and latency.

Throughput is images/s at a large batch; latency is milliseconds for one image. Both are medians over timed repeats
after warm-up, and both runtimes see the same normalised input.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from ninlab.bench.rates import call_seconds
from ninlab.inference.export import export_onnx
from ninlab.training.module import NiNClassifier

__all__ = ["inference_speed"]


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    return statistics.median(call_seconds(fn, repeats, warmup=3))


def inference_speed(model: NiNClassifier, batch_size: int = 256, repeats: int = 7) -> dict[str, float]:
    """Images/s at ``batch_size`` and ms per single image, for PyTorch (eval, no grad) and onnxruntime.

    Keys: ``torch_images_per_s``, ``torch_latency_ms``, ``onnx_images_per_s``, ``onnx_latency_ms``.
    """
    model = model.eval()
    input_size = model.input_size
    batch, single = torch.randn(batch_size, *input_size), torch.randn(1, *input_size)
    memory_format = torch.channels_last if model.hparams.channels_last else torch.contiguous_format
    batch, single = batch.contiguous(memory_format=memory_format), single.contiguous(memory_format=memory_format)
    with torch.inference_mode():
        results = {
            "torch_images_per_s": batch_size / _median_seconds(lambda: model(batch), repeats),
            "torch_latency_ms": 1e3 * _median_seconds(lambda: model(single), repeats * 5),
        }
    with tempfile.TemporaryDirectory(prefix="ninlab-bench-") as workdir:
        path = Path(workdir, "model.onnx")
        export_onnx(model, path)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        feeds = {size: {name: np.ascontiguousarray(x.numpy())} for size, x in ((batch_size, batch), (1, single))}
        seconds = _median_seconds(lambda: session.run(None, feeds[batch_size]), repeats)
        results["onnx_images_per_s"] = batch_size / seconds
        results["onnx_latency_ms"] = 1e3 * _median_seconds(lambda: session.run(None, feeds[1]), repeats * 5)
    return results
