"""Raw training-step throughput of nin_fast widths and batch sizes: no Lightning, no data pipeline.

Forward, cross-entropy, backward and an SGD Nesterov step on random channels-last 1x28x28 batches; 5 warm-up steps,
then images/s over ``--steps`` timed steps, and the process's page faults and kernel CPU time. Used for the
width/batch/thread/allocator rows of docs/benchmarks.md; compare numbers only within one invocation (or back to
back), since a shared CPU's load changes from minute to minute. ``--allocator keep`` applies the setting of ninlab's
command line (ninlab.host_allocator); the default leaves glibc's malloc as it is.

    PYTHONPATH=src python benchmarks/train_step_bench.py --allocator keep 32-64-128@128 16-64-128@128
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
import torch.nn.functional as F

from ninlab import create_model
from ninlab.host_allocator import keep_freed_memory


def images_per_s(widths: list[int], batch_size: int, steps: int) -> float:
    """Training images per second of nin_fast with ``widths`` at ``batch_size``."""
    net = create_model("nin_fast", widths=widths).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    x = torch.randn(batch_size, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,))

    def step() -> None:
        loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(5):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", help="WIDTHS@BATCH, e.g. 32-64-128@128")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--allocator", choices=("default", "keep"), default="default",
                        help="keep: keep freed memory for reuse, as the ninlab command line does")  # fmt: skip
    args = parser.parse_args()
    if args.allocator == "keep" and not keep_freed_memory():
        parser.error("--allocator keep needs glibc and no MALLOC_*_ / GLIBC_TUNABLES variables")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, allocator {args.allocator}")
    for config in args.configs:
        widths, _, batch = config.partition("@")
        before = resource.getrusage(resource.RUSAGE_SELF)
        rate = images_per_s([int(w) for w in widths.split("-")], int(batch or 128), args.steps)
        after = resource.getrusage(resource.RUSAGE_SELF)
        faults, kernel_s = after.ru_minflt - before.ru_minflt, after.ru_stime - before.ru_stime
        print(f"{config}: {rate:,.0f} img/s, {faults:,} page faults, {kernel_s:.1f} s kernel CPU", flush=True)


if __name__ == "__main__":
    main()
