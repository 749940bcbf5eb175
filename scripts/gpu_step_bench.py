"""Training-step throughput of the d2l NiN document's network on one GPU, without Lightning: the GPU recipe's ceiling.

Each step does what ``ninlab fit -c configs/gpu_fashion_mnist.yaml`` does for one batch: gather a batch of uint8
28x28 Fashion-MNIST images already resident on the device (one index tensor per batch), scale to [0, 1], resize to
224x224 (ninlab.data.transforms.resize), lay out channels-last, run nin_d2l forward under bf16 autocast (or in
fp32), take an fp32 cross-entropy, backward, and an SGD step (lr 0.1, as the recipe). Images/s is timed with
device events over ``--windows`` windows of ``--steps`` steps after warm-up, median reported; the TFLOP/s column
counts training FLOPs with ``torch.utils.flop_counter`` (ninlab.bench.rates). Comparing ``ninlab fit``'s
``train_images_per_s`` with this shows what the Lightning loop and ninlab's callbacks cost on the device.

A variant is ``MODE:PRECISION:BATCH[:LAYOUT[:FIRST]]``, MODE one of eager, compile (``torch.compile``, inductor) or
cudagraphs (``torch.compile(mode="reduce-overhead")``), PRECISION fp32 or bf16, LAYOUT channels_last (the recipe's,
the default) or contiguous (NCHW), FIRST how the first convolution runs: conv (cuDNN, the default) or patches (the
same weights as one matrix product over the image's 11x11 patches; on an H200 a cuDNN kernel that is not a
tensor-core engine, most likely this one-channel convolution's, took 10.6% of the step). ``--profile`` adds each
variant's top kernels by time on the device over one more window (torch.profiler's table)::

    PYTHONPATH=src python scripts/gpu_step_bench.py --root DIR eager:fp32:128 eager:bf16:128 compile:bf16:128
    PYTHONPATH=src python scripts/gpu_step_bench.py --root DIR --profile eager:bf16:128 cudagraphs:bf16:128:contiguous
    PYTHONPATH=src python scripts/gpu_step_bench.py --root DIR cudagraphs:bf16:128 \
        cudagraphs:bf16:128:channels_last:patches

On a CPU it runs too (slowly), which is what its smoke test does.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ninlab import create_model
from ninlab.bench.rates import training_flops_per_image
from ninlab.data import load_dataset, transforms
from ninlab.models.init import first_conv as first_convolution
from ninlab.models.init import init_weights

IMAGE_SIZE = 224
MODES = {"eager": None, "compile": "default", "cudagraphs": "reduce-overhead"}
PRECISIONS = ("fp32", "bf16")
LAYOUTS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
FIRST_CONVS = ("conv", "patches")


def parse_variant(text: str) -> tuple[str, str, int, str, str]:
    """``"compile:bf16:128"`` -> ``("compile", "bf16", 128, "channels_last", "conv")``; a one-line error otherwise."""
    parts = text.split(":")
    parts += ["channels_last", "conv"][len(parts) - 3 :] if 3 <= len(parts) <= 5 else []
    if (len(parts) != 5 or parts[0] not in MODES or parts[1] not in PRECISIONS or not parts[2].isdigit()
            or parts[3] not in LAYOUTS or parts[4] not in FIRST_CONVS):  # fmt: skip
        raise argparse.ArgumentTypeError(
            f"expected MODE:PRECISION:BATCH[:LAYOUT[:FIRST]] with MODE in {sorted(MODES)}, PRECISION in {PRECISIONS}, "
            f"LAYOUT in {sorted(LAYOUTS)} and FIRST in {FIRST_CONVS}, found {text!r}"
        )
    return parts[0], parts[1], int(parts[2]), parts[3], parts[4]


def as_patch_product(conv: nn.Conv2d) -> None:
    """Run ``conv`` (no dilation or groups) as one matrix product over its input's patches, with the same weights.

    The output is laid out channels-last (the product's natural order), as the recipe's convolutions are.
    """
    if conv.groups != 1 or conv.dilation != (1, 1) or conv.padding_mode != "zeros":
        raise ValueError(f"a patch product needs groups 1, dilation 1 and zero padding, found {conv}")

    def forward(x: torch.Tensor) -> torch.Tensor:
        n, _, height, width = x.shape
        rows = (height + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
        cols = (width + 2 * conv.padding[1] - conv.kernel_size[1]) // conv.stride[1] + 1
        patches = F.unfold(x, conv.kernel_size, padding=conv.padding, stride=conv.stride)  # (n, c*kh*kw, rows*cols)
        out = F.linear(patches.transpose(1, 2), conv.weight.flatten(1), conv.bias)  # (n, rows*cols, out_channels)
        return out.view(n, rows, cols, -1).permute(0, 3, 1, 2)

    conv.forward = forward


def training_step(
    images: torch.Tensor, labels: torch.Tensor, mode: str, precision: str, batch_size: int, layout: str,
    first_conv: str = "conv",
) -> Callable[[], None]:  # fmt: skip
    """One recipe step on the next shuffled batch of the device-resident ``images``; built, not yet run."""
    device = images.device
    memory_format = LAYOUTS[layout]
    net = create_model("nin_d2l")
    init_weights(net, "xavier")
    net = net.to(device, memory_format=memory_format)
    if first_conv == "patches":
        as_patch_product(first_convolution(net))
    model = torch.compile(net, mode=MODES[mode]) if MODES[mode] else net
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, foreach=True)
    autocast = torch.autocast(device.type, torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    order = torch.randperm(len(images), device=device)
    batches = len(images) // batch_size
    position = [0]

    def step() -> None:
        index = order[(position[0] % batches) * batch_size :][:batch_size]
        position[0] += 1
        x = images[index].float().div_(255)
        x = transforms.resize(x, (IMAGE_SIZE, IMAGE_SIZE)).contiguous(memory_format=memory_format)
        with autocast:
            logits = model(x)
        loss = F.cross_entropy(logits.float(), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_window(step: Callable[[], None], steps: int, device: torch.device) -> float:
    """Seconds for ``steps`` steps, from the first's start to the last's end on the device."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000
    begin = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - begin


def kernel_table(step: Callable[[], None], steps: int, device: torch.device) -> str:
    """The top kernels of ``steps`` steps by their total time on the device (torch.profiler's table)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profile:
        for _ in range(steps):
            step()
        synchronize(device)
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return profile.key_averages().table(sort_by=sort_by, row_limit=15, max_name_column_width=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "variants", nargs="+", type=parse_variant, help="MODE:PRECISION:BATCH[:LAYOUT[:FIRST]], e.g. compile:bf16:128"
    )
    parser.add_argument("--root", help="folder with the Fashion-MNIST .gz files (default: ninlab's search)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=50, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=5, help="timed windows per variant (median reported)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (compilation happens here)")
    parser.add_argument("--profile", action="store_true", help="print each variant's top kernels over one window")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    data = load_dataset("fashion-mnist", "train", root=args.root)
    images, labels = data.images.to(device), data.labels.to(device)
    flops = training_flops_per_image(create_model("nin_d2l"), (1, IMAGE_SIZE, IMAGE_SIZE), batch_size=2)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, torch {torch.__version__}, {flops / 1e9:.2f} training GFLOP/image", flush=True)
    rows = []
    for mode, precision, batch_size, layout, first_conv in args.variants:
        torch.manual_seed(0)
        step = training_step(images, labels, mode, precision, batch_size, layout, first_conv)
        begin = time.perf_counter()
        for _ in range(args.warmup):
            step()
        synchronize(device)
        warmup_s = time.perf_counter() - begin
        rates = [args.steps * batch_size / time_window(step, args.steps, device) for _ in range(args.windows)]
        rate = statistics.median(rates)
        label = f"{mode}:{precision}:{batch_size}:{layout}:{first_conv}"
        rows.append((label, rate, min(rates), max(rates), rate * flops / 1e12, warmup_s))
        print(f"{rows[-1][0]}: {rate:,.0f} images/s ({min(rates):,.0f}-{max(rates):,.0f}), warm-up {warmup_s:.1f} s",
              flush=True)  # fmt: skip
        if args.profile:
            print(kernel_table(step, args.steps, device), flush=True)
    print("\n| variant | images/s (median) | range | training TFLOP/s | warm-up s |\n| --- | --- | --- | --- | --- |")
    for name, rate, low, high, tflops, warmup_s in rows:
        print(f"| {name} | {rate:,.0f} | {low:,.0f}-{high:,.0f} | {tflops:.1f} | {warmup_s:.1f} |")


if __name__ == "__main__":
    main()
