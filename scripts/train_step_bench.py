"""Raw training-step throughput of nin_fast widths and batch sizes: no Lightning, no data pipeline.

Forward, cross-entropy, backward and an SGD Nesterov step on random channels-last 1x28x28 batches; 5 warm-up steps, then
images/s over ``--steps`` timed steps, and the process's page faults and kernel CPU time. Used for the
width/batch/thread/allocator rows of docs/benchmarks.md and docs/notes/measurement-history.md; compare numbers only
within one invocation (or back to back), since a shared CPU's load changes from minute to minute. ``--allocator keep``
applies the setting of ninlab's command line (ninlab._runtime.host_allocator); the default leaves glibc's malloc as it
is. ``--compile`` times the step through ``torch.compile`` (inductor; its compile time is printed, not timed).
``--profile`` then profiles 10 more steps and prints where a step's time goes, per operator and input shape
(torch.profiler, self CPU time). ``--layout nchw`` times the step in NCHW (the Lightning NiN document's layout, what
``ninlab bench``'s pipeline A trains in), and ``--without batchnorm`` / ``--without relu`` drop those layers, so the
differences show what they cost.

    PYTHONPATH=src python scripts/train_step_bench.py --allocator keep 32-64-128@128 16-64-128@128
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ninlab import create_model
from ninlab._runtime.host_allocator import keep_freed_memory

LAYOUTS = {"channels_last": torch.channels_last, "nchw": torch.contiguous_format}
WITHOUT = {"batchnorm": {"norm_layer": None}, "relu": {"act_layer": nn.Identity}}


def training_step(
    widths: list[int], batch_size: int, compile: bool = False, layout: str = "channels_last", without: str | None = None
) -> Callable[[], None]:
    """One training step of nin_fast with ``widths`` on a fixed random batch of ``batch_size``, warmed up.

    ``layout`` is a key of :data:`LAYOUTS`; ``without`` (a key of :data:`WITHOUT`) drops the network's BatchNorm or
    ReLU layers.
    """
    net = create_model("nin_fast", widths=widths, **WITHOUT.get(without, {})).to(memory_format=LAYOUTS[layout])
    model = torch.compile(net) if compile else net
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    x = torch.randn(batch_size, 1, 28, 28).contiguous(memory_format=LAYOUTS[layout])
    y = torch.randint(0, 10, (batch_size,))

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    start = time.perf_counter()
    step()
    if compile:
        print(f"first (compiling) step: {time.perf_counter() - start:.1f} s", flush=True)
    for _ in range(4):
        step()
    return step


def images_per_s(step: Callable[[], None], batch_size: int, steps: int) -> float:
    """Training images per second over ``steps`` timed calls of ``step``."""
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def _print_profile(step: Callable[[], None], steps: int = 10) -> None:
    """Self CPU milliseconds per step of each operator and input shape over ``steps`` profiled steps."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    events = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    print(f"profiled: {total / 1e3 / steps:.1f} ms of self CPU time per step", flush=True)
    for event in events[:25]:
        shapes = ", ".join(str(s) for s in event.input_shapes if s)
        print(f"  {event.self_cpu_time_total / 1e3 / steps:6.2f} ms  {event.key:<40} {shapes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", help="WIDTHS@BATCH, e.g. 32-64-128@128")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--allocator", choices=("default", "keep"), default="default",
                        help="keep: keep freed memory for reuse, as the ninlab command line does")  # fmt: skip
    parser.add_argument("--compile", action="store_true", help="time the step through torch.compile (inductor)")
    parser.add_argument("--profile", action="store_true", help="print each operator's time per step afterwards")
    parser.add_argument("--layout", choices=LAYOUTS, default="channels_last", help="memory layout of the step")
    parser.add_argument("--without", choices=WITHOUT, help="drop the network's BatchNorm or ReLU layers")
    args = parser.parse_args()
    if args.allocator == "keep" and not keep_freed_memory():
        parser.error("--allocator keep needs glibc and no MALLOC_*_ / GLIBC_TUNABLES variables")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, allocator {args.allocator}, "
          f"{args.layout}, without {args.without or 'nothing'}")  # fmt: skip
    for config in args.configs:
        widths, _, batch = config.partition("@")
        before = resource.getrusage(resource.RUSAGE_SELF)
        batch_size = int(batch or 128)
        step = training_step([int(w) for w in widths.split("-")], batch_size, args.compile, args.layout, args.without)
        rate = images_per_s(step, batch_size, args.steps)
        after = resource.getrusage(resource.RUSAGE_SELF)
        faults, kernel_s = after.ru_minflt - before.ru_minflt, after.ru_stime - before.ru_stime
        print(f"{config}: {rate:,.0f} img/s, {faults:,} page faults, {kernel_s:.1f} s kernel CPU", flush=True)
        if args.profile:
            _print_profile(step)


if __name__ == "__main__":
    main()
