"""What a result was measured on: library versions and the machine, for run summaries and benchmark reports."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

import torch

from ninlab._runtime.host_allocator import freed_memory_kept
from ninlab._runtime.library_internals import torch_cpu_has_native_bf16

__all__ = ["cpu_has_native_bf16", "environment_report", "machine_info", "versions"]


def versions() -> dict[str, str]:
    """Versions of Python and of the libraries that decide speed and numerics."""
    found = {"python": platform.python_version()}
    for package in ("ninlab", "torch", "lightning", "torchmetrics", "numpy", "onnxruntime"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def _cpu_model() -> str:
    # platform.processor() is empty on most Linux systems; /proc/cpuinfo names the CPU.
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_native_bf16() -> bool:
    """Whether the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX); without, bf16 autocast is emulated, slowly."""
    return torch_cpu_has_native_bf16()


def machine_info() -> dict[str, object]:
    """The machine: OS, CPU model and the instruction set torch's kernels use, usable cores, torch threads, the
    allocator setting, and the GPU if there is one."""
    info: dict[str, object] = {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        # e.g. "AVX2" or "AVX512": hosts sold under one CPU name differ here, and so do their kernels' speeds.
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "keeps_freed_memory": freed_memory_kept(),
        "python_executable": sys.executable,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def environment_report(accelerator: str | None = None) -> dict[str, dict]:
    """``{"versions": versions(), "machine": machine_info()}``, the one environment record of run summaries,
    benchmark reports and measurement scripts; ``accelerator`` (e.g. ``"CPUAccelerator"``) joins the machine."""
    machine = machine_info()
    if accelerator is not None:
        machine["accelerator"] = accelerator
    return {"versions": versions(), "machine": machine}
