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

__all__ = [
    "CGROUP_ROOT",
    "available_memory",
    "cgroup_memory_left",
    "device_memory",
    "format_bytes",
    "memory_cgroup",
    "require_memory",
]

CGROUP_ROOT = Path("/sys/fs/cgroup")
"""Where the cgroup file systems are mounted (v2 at the root, v1's memory controller under ``memory/``)."""


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
    for left in (cgroup_memory_left(), _address_space_left()):
        if left is not None:
            found.append(left)
    return min(found) if found else None


def memory_cgroup(root: Path = CGROUP_ROOT, membership: str | None = None) -> tuple[Path, int] | None:
    """This process's memory cgroup: its directory and the cgroup version (1 or 2), or ``None`` where it has none.

    Read from ``/proc/self/cgroup`` (``membership`` overrides its text): cgroup v1's memory controller where one is
    mounted, else the v2 unified hierarchy.
    """
    try:
        if membership is None:
            membership = Path("/proc/self/cgroup").read_text()
    except OSError:
        return None
    lines = [line.split(":", 2) for line in membership.splitlines() if line.count(":") >= 2]
    for _, controllers, path in lines:  # cgroup v1: the memory controller's own hierarchy
        if "memory" in controllers.split(","):
            return _own_dir(root / "memory", path), 1
    for number, controllers, path in lines:  # cgroup v2: the unified hierarchy
        if number == "0" and controllers == "":
            return _own_dir(root, path), 2
    return None


def cgroup_memory_left(root: Path = CGROUP_ROOT, membership: str | None = None) -> int | None:
    """Bytes this process's memory cgroup (a container, a Slurm job, ``systemd-run -p MemoryMax``) still allows.

    The cgroup is :func:`memory_cgroup`'s, and its ancestors' limits count too (the tightest wins). Usage counts the
    page cache, so the inactive file pages, which the kernel reclaims before it fails an allocation, are not counted
    as used (as ``docker stats`` does). ``None`` where no cgroup limits memory.
    """
    found = memory_cgroup(root, membership)
    if found is None:
        return None
    own, version = found
    return _v1_left(own) if version == 1 else _v2_left(root, own)


def _own_dir(mount: Path, path: str) -> Path:
    # Inside a cgroup namespace (most containers) the process's path is not under the mount; the mount is its cgroup.
    own = mount / path.lstrip("/")
    return own if own.is_dir() else mount


def _stat(directory: Path, key: str) -> int:
    for line in (directory / "memory.stat").read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


def _v1_left(own: Path) -> int | None:
    try:
        limit = _stat(own, "hierarchical_memory_limit") or int((own / "memory.limit_in_bytes").read_text())
        if limit >= 2**60:  # v1 says "no limit" with a huge number
            return None
        used = int((own / "memory.usage_in_bytes").read_text()) - _stat(own, "total_inactive_file")
    except (OSError, ValueError):
        return None
    return max(0, limit - max(used, 0))


def _v2_left(root: Path, own: Path) -> int | None:
    left: int | None = None
    directory = own
    while True:  # every ancestor's memory.max applies
        try:
            limit = (directory / "memory.max").read_text().strip()
            if limit != "max":
                used = int((directory / "memory.current").read_text()) - _stat(directory, "inactive_file")
                room = max(0, int(limit) - max(used, 0))
                left = room if left is None else min(left, room)
        except (OSError, ValueError):
            pass
        if directory == root or root not in directory.parents:
            return left
        directory = directory.parent


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
