"""Benchmark yardsticks: FLOP counts agree with the summary's MACs, and the sgemm rate is a plausible number."""

import re
from pathlib import Path

import pytest
import torch

import ninlab
from ninlab._runtime.environment import machine_info, versions
from ninlab.bench.rates import forward_flops_per_image, matmul_flops_per_s, median_rate, training_flops_per_image
from ninlab.models.summary import summarize


def test_training_flops_are_about_three_forward_passes():
    model = ninlab.create_model("nin_fast", widths=(8, 16, 32))
    forward = 2 * summarize(model).macs
    train = training_flops_per_image(model, (1, 28, 28), batch_size=4)
    # Backward costs two forwards (input and weight gradients), less the first conv's unneeded input gradient.
    assert 2.5 * forward < train <= 3 * forward
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("size", [20, 28])
def test_forward_flops_are_twice_the_summarys_macs_at_each_size(size):
    """The evaluation pass the recipe-work estimate counts: forward only, in eval mode, at any input size."""
    model = ninlab.create_model("nin_fast", widths=(8, 16, 32), pad_last_block=False).train()
    assert forward_flops_per_image(model, (1, size, size)) == 2 * summarize(model, input_size=(1, size, size)).macs
    assert model.training  # left as it was


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matmul_rate_is_measured(dtype):
    rate = matmul_flops_per_s(dtype, size=256, repeats=3)
    assert 1e8 < rate < 1e14


def test_median_rate():
    assert median_rate(10.0, [1.0, 2.0, 5.0]) == 5.0


def test_environment_report():
    assert {"python", "torch", "lightning", "ninlab"} <= set(versions())
    machine = machine_info()
    assert machine["cpu_count"] >= 1
    assert isinstance(machine["cpu_native_bf16"], bool)
    # On Linux the vendor and the family/model numbers name the CPU's generation, which "model name" may not.
    if Path("/proc/cpuinfo").exists():
        assert re.fullmatch(r"\S+ cpu family \d+ model \d+( stepping \d+)?", machine["cpu_id"]), machine["cpu_id"]
    # The values torch.backends.cpu.get_cpu_capability documents:
    assert machine["cpu_capability"] in {"DEFAULT", "VSX", "Z VECTOR", "NO AVX", "AVX2", "AVX512", "SVE256"}
