"""What a result was measured on: library versions and the machine, for run summaries and benchmark reports."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

import torch

from ninlab._runtime.host_allocator import freed_memory_kept
from ninlab._runtime.library_internals import torch_cpu_has_native_bf16

__all__ = ["cpu_has_native_bf16", "describe_host", "environment_report", "machine_info", "versions"]


def versions() -> dict[str, str]:
    """Versions of Python and of the libraries that decide speed and numerics."""
    found = {"python": platform.python_version()}
    for package in ("ninlab", "torch", "lightning", "torchmetrics", "numpy", "onnxruntime"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def _cpuinfo_fields() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none, e.g. on macOS)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if not line.strip():
                    break  # the end of the first processor's block
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def _cpu_model(fields: dict[str, str]) -> str:
    # platform.processor() is empty on most Linux systems; /proc/cpuinfo names the CPU.
    return fields.get("model name") or platform.processor() or platform.machine()


def _cpu_id(fields: dict[str, str]) -> str:
    # Virtual machines often name CPUs of different generations alike ("AMD EPYC" for a Zen 4 and a Zen 5 host, on
    # which the default recipe's fit took 120 and 69 s, docs/benchmarks.md#hosts); vendor, family and model do not.
    keys = ("cpu family", "model", "stepping")
    parts = [fields.get("vendor_id", ""), *(f"{key} {fields[key]}" for key in keys if key in fields)]
    return " ".join(part for part in parts if part) or "unknown"


def cpu_has_native_bf16() -> bool:
    """Whether the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX); without, bf16 autocast is emulated, slowly."""
    return torch_cpu_has_native_bf16()


def machine_info() -> dict[str, object]:
    """The machine: OS, CPU model and identity (vendor, family, model), the instruction set torch's kernels use,
    usable cores, torch threads, the allocator setting, and the GPU if there is one."""
    fields = _cpuinfo_fields()
    info: dict[str, object] = {
        "platform": platform.platform(),
        "cpu": _cpu_model(fields),
        "cpu_id": _cpu_id(fields),  # e.g. "AuthenticAMD cpu family 25 model 17 stepping 1"
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


def describe_host(machine: dict) -> str:
    """One line naming the CPU a figure was measured on, from :func:`machine_info`'s record: model and identity,
    cores, torch's instruction set and native bf16, e.g. ``AMD EPYC (AuthenticAMD cpu family 25 model 17 stepping 1),
    2 cores, cpu_capability AVX512, native bf16 yes``."""
    bf16 = "yes" if machine["cpu_native_bf16"] else "no"
    return (f"{machine['cpu']} ({machine['cpu_id']}), {machine['cpu_count']} cores, "
            f"cpu_capability {machine['cpu_capability']}, native bf16 {bf16}")  # fmt: skip


def environment_report(accelerator: str | None = None) -> dict[str, dict]:
    """``{"versions": versions(), "machine": machine_info()}``, the one environment record of run summaries,
    benchmark reports and measurement scripts; ``accelerator`` (e.g. ``"CPUAccelerator"``) joins the machine."""
    machine = machine_info()
    if accelerator is not None:
        machine["accelerator"] = accelerator
    return {"versions": versions(), "machine": machine}
