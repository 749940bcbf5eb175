"""Raw training-step throughput of nin_fast widths and batch sizes: no Lightning, no data pipeline.

Forward, cross-entropy, backward and an SGD Nesterov step on random channels-last 1x28x28 batches; 5 warm-up steps, then
images/s over ``--steps`` timed steps, and the process's page faults and kernel CPU time. Used for the
width/batch/thread/allocator rows of docs/benchmarks.md and docs/notes/measurement-history.md; compare numbers only
within one invocation (or back to back), since a shared CPU's load changes from minute to minute. ``--allocator keep``
applies the setting of ninlab's command line (ninlab._runtime.host_allocator); the default leaves glibc's malloc as it
is. ``--compile`` times the step through ``torch.compile`` (inductor; its compile time is printed, not timed);
``--precision bf16-mixed`` times it under bf16 autocast.
``--profile`` then profiles 10 more steps and prints where a step's time goes, per operator and input shape
(torch.profiler, self CPU time). ``--layout nchw`` times the step in NCHW (the Lightning NiN document's layout, what
``ninlab bench``'s pipeline A trains in), and ``--without batchnorm`` / ``--without relu`` drop those layers, so the
differences show what they cost. ``--layers`` then times every layer's forward and backward alone, on its input of
the step, against its FLOPs and the two yardsticks of ``ninlab bench`` (the sgemm and a fast 3x3 convolution)
measured in the same run: where a step's time goes on this CPU.

    PYTHONPATH=src python scripts/train_step_bench.py --allocator keep 32-64-128@128 16-64-128@128
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ninlab import create_model
from ninlab._runtime.environment import describe_host, machine_info
from ninlab._runtime.host_allocator import keep_freed_memory
from ninlab.bench.rates import conv3x3_flops_per_s, matmul_flops_per_s

LAYOUTS = {"channels_last": torch.channels_last, "nchw": torch.contiguous_format}
WITHOUT = {"batchnorm": {"norm_layer": None}, "relu": {"act_layer": nn.Identity}}


def _network(widths: list[int], layout: str, without: str | None) -> nn.Module:
    return create_model("nin_fast", widths=widths, **WITHOUT.get(without, {})).to(memory_format=LAYOUTS[layout])


def training_step(
    widths: list[int],
    batch_size: int,
    compile: bool = False,
    layout: str = "channels_last",
    without: str | None = None,
    precision: str = "32-true",
) -> Callable[[], None]:
    """One training step of nin_fast with ``widths`` on a fixed random batch of ``batch_size``, warmed up.

    ``layout`` is a key of :data:`LAYOUTS`; ``without`` (a key of :data:`WITHOUT`) drops the network's BatchNorm or
    ReLU layers; ``precision`` ``bf16-mixed`` runs the forward and the loss under bf16 autocast, as Lightning's
    precision plugin does on a CPU.
    """
    net = _network(widths, layout, without)
    model = torch.compile(net) if compile else net
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    x = torch.randn(batch_size, 1, 28, 28).contiguous(memory_format=LAYOUTS[layout])
    y = torch.randint(0, 10, (batch_size,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
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


def layer_times(
    widths: list[int], batch_size: int, layout: str = "channels_last", without: str | None = None, repeats: int = 15
) -> list[dict]:
    """Forward and backward milliseconds (medians of ``repeats``) and training FLOPs of every layer of the step, each
    timed alone on the input it gets in a training-mode forward of a random batch.

    Every layer gets a fresh copy of its input each time (an in-place ReLU needs one); the copy's own forward and
    backward are timed alike and subtracted. An input that needs no gradient in the step (the images) gets none
    here either, so the first convolution computes only its weights' gradient, as in the step. Parameter gradients
    are dropped before each repeat, so each backward writes them once, as the step's does.
    """
    net = _network(widths, layout, without).train()
    leaves = [(name, module) for name, module in net.named_modules() if not any(module.children())]
    inputs: dict[str, tuple[torch.Tensor, bool]] = {}

    def keep(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:  # returns None: the layer's input stays as it is
            inputs.setdefault(name, (args[0].detach().clone(), args[0].requires_grad))

        return hook

    hooks = [module.register_forward_pre_hook(keep(name)) for name, module in leaves]
    net(torch.randn(batch_size, 1, 28, 28).contiguous(memory_format=LAYOUTS[layout]))
    for hook in hooks:
        hook.remove()

    def run(layer: Callable[[torch.Tensor], torch.Tensor], source: torch.Tensor, grad: bool) -> tuple[float, float]:
        net.zero_grad(set_to_none=True)
        start = time.perf_counter()
        out = layer(source.clone().requires_grad_(True).clone() if grad else source.clone())
        mid = time.perf_counter()
        if out.requires_grad:
            out.backward(torch.ones_like(out))
        return mid - start, time.perf_counter() - mid

    def timed(layer: Callable[[torch.Tensor], torch.Tensor], source: torch.Tensor, grad: bool) -> tuple[float, float]:
        times = [run(layer, source, grad) for _ in range(repeats + 3)][3:]  # 3 warm-up repeats
        return tuple(statistics.median(t[i] for t in times) * 1e3 for i in (0, 1))

    rows = []
    for name, module in leaves:
        if name not in inputs:  # a layer the forward does not reach
            continue
        source, grad = inputs[name]
        copy_fwd, copy_bwd = timed(lambda t: t, source, grad)
        fwd, bwd = timed(module, source, grad)
        with FlopCounterMode(display=False) as counter:
            run(module, source, grad)
        net.zero_grad(set_to_none=True)
        rows.append({"layer": f"{name} ({type(module).__name__})", "input": tuple(source.shape),
                     "forward_ms": max(fwd - copy_fwd, 0.0), "backward_ms": max(bwd - copy_bwd, 0.0),
                     "flops": counter.get_total_flops()})  # fmt: skip
    return rows


def _print_layers(rows: list[dict], step_ms: float, sgemm: float, conv: float) -> None:
    """The per-layer table in Markdown, each convolution's rate against ``sgemm`` and ``conv`` (FLOP/s), and the
    layers' total against the whole step's ``step_ms``."""
    total = sum(r["forward_ms"] + r["backward_ms"] for r in rows)
    print(f"yardsticks (same run): sgemm 2048x2048 {sgemm / 1e9:.1f} GFLOP/s, 3x3 convolution {conv / 1e9:.1f} GFLOP/s")
    print("| layer | input | forward ms | backward ms | share of layer time | GFLOP/s | of the sgemm | of the 3x3 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        ms = r["forward_ms"] + r["backward_ms"]
        rate = r["flops"] / (ms / 1e3) if r["flops"] and ms > 0 else None
        rated = f"{rate / 1e9:.1f} | {rate / sgemm:.2f} | {rate / conv:.2f}" if rate else "- | - | -"
        print(f"| {r['layer']} | {'x'.join(map(str, r['input']))} | {r['forward_ms']:.2f} | {r['backward_ms']:.2f} | "
              f"{ms / total:.1%} | {rated} |")  # fmt: skip
    step_rate = sum(r["flops"] for r in rows) / (step_ms / 1e3)
    print(f"layers alone: {total:.1f} ms; whole step: {step_ms:.1f} ms ({step_rate / 1e9:.1f} GFLOP/s, "
          f"{step_rate / sgemm:.2f} of the sgemm, {step_rate / conv:.2f} of the 3x3; the rest of the step: the loss, "
          "the optimiser, autograd)")  # fmt: skip


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
    parser.add_argument("--layers", action="store_true", help="then time each layer alone against the yardsticks")
    parser.add_argument("--precision", choices=("32-true", "bf16-mixed"), default="32-true",
                        help="bf16-mixed: the step under bf16 autocast (not with --layers: fp32 layers)")  # fmt: skip
    args = parser.parse_args()
    if args.layers and args.precision != "32-true":
        parser.error("--layers times the fp32 layers; leave out --precision or --layers")
    if args.allocator == "keep" and not keep_freed_memory():
        parser.error("--allocator keep needs glibc and no MALLOC_*_ / GLIBC_TUNABLES variables")
    print(f"{describe_host(machine_info())}; torch {torch.__version__}, {torch.get_num_threads()} threads, allocator "
          f"{args.allocator}, {args.layout}, {args.precision}, without {args.without or 'nothing'}")  # fmt: skip
    for config in args.configs:
        widths, _, batch = config.partition("@")
        before = resource.getrusage(resource.RUSAGE_SELF)
        batch_size, width_list = int(batch or 128), [int(w) for w in widths.split("-")]
        step = training_step(width_list, batch_size, args.compile, args.layout, args.without, args.precision)
        rate = images_per_s(step, batch_size, args.steps)
        after = resource.getrusage(resource.RUSAGE_SELF)
        faults, kernel_s = after.ru_minflt - before.ru_minflt, after.ru_stime - before.ru_stime
        print(f"{config}: {rate:,.0f} img/s, {faults:,} page faults, {kernel_s:.1f} s kernel CPU", flush=True)
        if args.profile:
            _print_profile(step)
        if args.layers:
            rows = layer_times(width_list, batch_size, args.layout, args.without)
            _print_layers(rows, 1e3 * batch_size / rate, matmul_flops_per_s(), conv3x3_flops_per_s())


if __name__ == "__main__":
    main()
