"""Raw training-step throughput of nin_fast widths and batch sizes: no Lightning, no data pipeline.

Forward, cross-entropy, backward and an SGD Nesterov step on random channels-last 1x28x28 batches; 5 warm-up steps,
then images/s over ``--steps`` timed steps. Used for the width/batch/thread rows of docs/benchmarks.md; compare
numbers only within one invocation (or back to back), since a shared CPU's load changes from minute to minute.

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python benchmarks/train_step_bench.py 32-64-128@128 16-64-128@128
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from ninlab import create_model


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
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for config in args.configs:
        widths, _, batch = config.partition("@")
        rate = images_per_s([int(w) for w in widths.split("-")], int(batch or 128), args.steps)
        print(f"{config}: {rate:,.0f} img/s", flush=True)


if __name__ == "__main__":
    main()
