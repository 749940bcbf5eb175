"""Host allocator: glibc keeps freed tensor memory, so training steps stop page-faulting their buffers in."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ninlab._runtime.host_allocator import USER_SETTINGS, runs_on_glibc

glibc_only = pytest.mark.skipif(not runs_on_glibc(), reason="the setting is glibc's")

# Ten nin_fast training steps at batch 64 after three warm-up steps; prints the minor page faults of the ten.
_STEPS = """
import json, resource, sys
import torch, torch.nn.functional as F
from ninlab import create_model
from ninlab._runtime.host_allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
torch.manual_seed(0)
net = create_model("nin_fast", widths=(16, 64, 128)).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
x = torch.randn(64, 1, 28, 28).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (64,))
def step():
    opt.zero_grad()
    F.cross_entropy(net(x), y).backward()
    opt.step()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _faults(mode: str, env: dict[str, str] | None = None) -> dict:
    """Run the steps in a fresh process without the caller's malloc settings, plus ``env``."""
    clean = {name: value for name, value in os.environ.items() if name not in USER_SETTINGS}
    env = {**clean, "OMP_NUM_THREADS": "1", **(env or {})}
    done = subprocess.run([sys.executable, "-c", _STEPS, mode], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@glibc_only
def test_training_steps_stop_page_faulting_their_buffers_in():
    default, kept = _faults("default"), _faults("keep")
    assert kept["applied"] and not default["applied"]
    # glibc's defaults give thousands of faults per step here (the buffers go back to the kernel and come back
    # zeroed); with freed memory kept they are reused.
    assert kept["faults"] * 5 < default["faults"], (kept, default)


@glibc_only
def test_the_users_own_malloc_settings_win():
    assert _faults("keep", {"MALLOC_TRIM_THRESHOLD_": "131072"})["applied"] is False
