"""How much memory this process can still allocate: the kernel's estimate, capped by the container's limit and
the address-space limit (``ulimit -v``).

Used to refuse, with one line, a decode or a batch that cannot fit, instead of failing in the allocator with a
traceback. No dependency reads both sources (psutil, which ninlab does not depend on, ignores cgroup limits), so
they are read here from ``/proc/meminfo`` and cgroup v2/v1 files.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

__all__ = ["available_memory", "device_memory", "format_bytes", "require_memory"]

_CGROUP_LIMITS = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),  # cgroup v1
)


def available_memory() -> int | None:
    """Bytes of memory a new allocation can use without swapping, or ``None`` where the system does not say."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        # Not Linux: free physical pages (POSIX), an underestimate of what could be reclaimed.
        with contextlib.suppress(ValueError, OSError, AttributeError):
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    for limit_file, usage_file in _CGROUP_LIMITS:
        try:
            limit = Path(limit_file).read_text().strip()
            if limit != "max" and int(limit) < 2**60:  # v1 reports "no limit" as a huge number
                found.append(max(0, int(limit) - int(Path(usage_file).read_text())))
            break
        except (OSError, ValueError):
            continue
    address_space = _address_space_left()
    if address_space is not None:
        found.append(address_space)
    return min(found) if found else None


def _address_space_left() -> int | None:
    # `ulimit -v` (RLIMIT_AS), as schedulers and shared machines set it: what this process may still map.
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit == resource.RLIM_INFINITY:
            return None
        mapped = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (ImportError, OSError, ValueError, IndexError):
        return None
    return max(0, limit - mapped)


def device_memory(device: torch.device) -> int | None:
    """Free bytes on ``device``: the GPU's free memory for CUDA, :func:`available_memory` for the CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return available_memory() if device.type == "cpu" else None


def format_bytes(count: float) -> str:
    """``count`` bytes for people, in powers of 1000 like ``df -H``: ``"1.5 GB"``, ``"320 MB"``."""
    for unit in ("B", "kB", "MB", "GB"):
        if count < 999.5:
            return f"{count:.3g} {unit}"
        count /= 1000
    return f"{count:.3g} TB"


def require_memory(needed: int, device: torch.device, error: type[Exception], what: str, advice: str) -> None:
    """Raise ``error`` with one line when ``needed`` bytes for ``what`` exceed the free memory of ``device``."""
    free = device_memory(device)
    if free is not None and needed > free:
        raise error(f"{what} needs {format_bytes(needed)} of memory, {format_bytes(free)} of {device.type} memory "
                    f"is available; {advice}")  # fmt: skip
