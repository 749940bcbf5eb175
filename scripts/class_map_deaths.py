"""Which class maps of the d2l NiN die, at which step and why: a CPU proxy of the d2l NiN document's recipe.

Trains ``nin_d2l`` exactly as the recipe does (plain SGD lr 0.1, batch 128, Fashion-MNIST scaled to [0, 1] and
resized bilinearly on the batch, ninlab's own data module and init), but at a smaller input (``--size``, 67 = the
network's minimum) and for ``--steps`` steps, so that a 2-core CPU shows in minutes what the 224 run shows in
hours. A forward hook on the last 1 x 1 conv reads, every step, the fraction of positive pre-ReLU values of each
class map (0 = the map is zero for every pixel of every image of the batch), the number of channels without any
positive value in the block's two earlier convs, and after backward whether each class map's weights got exactly
zero gradient (dead: what ninlab's DeadClassMapGuard tests) and the gradient norm reaching the last block. A plain
PyTorch loop (no Lightning): only the model, its init and the data matter here.

Variants (``--variants``): ``as-written`` (Xavier weights, PyTorch's default biases: what d2l's PyTorch code and
ninlab's d2l recipe do), ``zero-bias`` (Xavier weights and zero biases: d2l's MXNet/TensorFlow init),
``no-final-relu`` (as-written without the class-map ReLU), ``default-init`` (PyTorch's init throughout) and
``fixed`` (zero biases and no class-map ReLU: ``configs/d2l_fashion_mnist_fixed.yaml``).
``--precision bf16`` runs the forward under CPU bf16 autocast (native on CPUs with avx512_bf16).

    PYTHONPATH=src python scripts/class_map_deaths.py --size 67 --steps 300 --seeds 0 1 2 \\
        --variants as-written zero-bias --out runs/class_map_deaths.json

Prints one line per run (dead maps at step 0 and at the end, when each died, final loss and accuracies) and writes
every step's statistics to ``--out``. Uses one thread per process (``--threads``) so two can share a loaded host.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from ninlab._runtime.atomic import atomic_open
from ninlab.data.datamodule import ImageDataModule
from ninlab.training.module import NiNClassifier

VARIANTS: dict[str, dict] = {
    "as-written": {"init": "xavier"},
    "zero-bias": {"init": "xavier_zero_bias"},
    "no-final-relu": {"init": "xavier", "model_kwargs": {"final_act": False}},
    "default-init": {"init": "default"},
    "fixed": {"init": "xavier_zero_bias", "model_kwargs": {"final_act": False}},
}
TAIL = 20  # a map is dead at the end when its weights got exactly zero gradient in each of the last TAIL steps


def class_map_probe(model: NiNClassifier) -> dict[str, torch.Tensor]:
    """Hook the class-map block's convs: ``probe["positive"]`` holds the last batch's positive fraction per class map,
    ``probe["hidden_dead"]`` the number of channels of each earlier conv of the block with no positive value."""
    probe: dict[str, torch.Tensor] = {}
    convs = [m for m in model.net.features[-1].modules() if isinstance(m, torch.nn.Conv2d)]

    def record_maps(module, inputs, output):  # runs before the in-place ReLU overwrites the output
        probe["positive"] = (output.detach() > 0).float().mean((0, 2, 3))

    def record_hidden(index: int):
        def record(module, inputs, output):
            probe.setdefault("hidden", {})[index] = int(((output.detach() > 0).sum((0, 2, 3)) == 0).sum())

        return record

    for index, conv in enumerate(convs[:-1]):
        conv.register_forward_hook(record_hidden(index))
    convs[-1].register_forward_hook(record_maps)
    probe["last_conv"] = convs[-1]
    return probe


def first_step_dead_for_good(silent: list[list[bool]], cls: int) -> int | None:
    """The step from which class map ``cls`` got no gradient until the end (None: alive at the end)."""
    if not all(row[cls] for row in silent[-TAIL:]):
        return None
    step = len(silent)
    while step > 0 and silent[step - 1][cls]:
        step -= 1
    return step


def run(variant: str, seed: int, args: argparse.Namespace) -> dict:
    """Train one variant with one seed for ``args.steps`` steps and return its per-step record and summary."""
    torch.manual_seed(seed)
    model = NiNClassifier(model="nin_d2l", num_classes=10, in_chans=1, lr=0.1, momentum=0.0, weight_decay=0.0,
                          schedule="constant", **VARIANTS[variant])  # fmt: skip
    optimizer, _ = model.build_optimization(args.steps, args.steps)
    probe = class_map_probe(model)
    data = ImageDataModule(root=args.root, image_size=args.size, augment=False, normalize="none", val_size=0,
                           seed=seed, limit_train=args.limit_train, channels_last=False)  # fmt: skip
    data.setup("fit")
    autocast = torch.autocast("cpu", torch.bfloat16) if args.precision == "bf16" else nullcontext()
    steps: list[dict] = []
    start = time.perf_counter()
    model.train()
    while len(steps) < args.steps:
        for images, labels in data.train_dataloader():
            with autocast:
                logits = model(data.prepare_batch(images)).float()
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad = torch.stack([p.grad.norm() for p in model.net.features[-1].parameters()]).norm()
            last_conv = probe["last_conv"]
            silent = last_conv.weight.grad.flatten(1).abs().amax(1) + last_conv.bias.grad.abs()
            optimizer.step()
            steps.append({"loss": loss.item(), "acc": (logits.argmax(1) == labels).float().mean().item(),
                          "positive": [round(v, 4) for v in probe["positive"].tolist()],
                          "no_gradient": (silent == 0).tolist(),
                          "hidden_dead": [probe["hidden"][i] for i in sorted(probe["hidden"])],
                          "last_block_grad": grad.item()})  # fmt: skip
            if len(steps) % args.print_every == 0:
                dead = [c for c, v in enumerate(steps[-1]["no_gradient"]) if v]
                print(f"  {variant} seed {seed} step {len(steps)}: loss {steps[-1]['loss']:.4f} dead maps {dead}, "
                      f"dead hidden channels {steps[-1]['hidden_dead']}",
                      flush=True)  # fmt: skip
            if len(steps) == args.steps or not math.isfinite(loss.item()):
                break
        if not math.isfinite(steps[-1]["loss"]):
            break
    seconds = time.perf_counter() - start
    silent = [s["no_gradient"] for s in steps]
    died = {c: first_step_dead_for_good(silent, c) for c in range(10)}
    tail = steps[-TAIL:]
    summary = {
        "variant": variant, "seed": seed, "size": args.size, "precision": args.precision, "steps": len(steps),
        "dead_at_step0": [c for c in range(10) if silent[0][c]],
        "never_positive": [c for c in range(10) if all(s["positive"][c] == 0 for s in steps[-TAIL:])],
        "dead_at_end": [c for c in range(10) if died[c] is not None],
        "hidden_dead_at_step0": steps[0]["hidden_dead"],
        "hidden_dead_at_end": steps[-1]["hidden_dead"],
        "died_at_step": {c: s for c, s in died.items() if s is not None},
        "loss_end": sum(s["loss"] for s in tail) / len(tail),
        "train_acc_end": sum(s["acc"] for s in tail) / len(tail),
        "test_acc": test_accuracy(model, data, autocast, args.test_images),
        "sec_per_step": seconds / len(steps),
    }  # fmt: skip
    return {"summary": summary, "steps": steps}


@torch.no_grad()
def test_accuracy(model: NiNClassifier, data: ImageDataModule, autocast, limit: int | None = None) -> float:
    """Top-1 accuracy on the Fashion-MNIST test split (its first ``limit`` batches' worth) at the run's input size."""
    model.eval()
    data.setup("test")
    correct = total = 0
    for images, labels in data.test_dataloader():
        with autocast:
            correct += (model(data.prepare_batch(images)).argmax(1) == labels).sum().item()
        total += len(labels)
        if limit is not None and total >= limit:
            break
    model.train()
    return correct / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=67, help="input side (67 = nin_d2l's minimum, 224 = recipe)")
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per run (469 = one epoch)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["as-written", "zero-bias"])
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--limit-train", type=int, default=None, help="train on the first N of the split's images")
    parser.add_argument("--root", default=None, help="folder of the Fashion-MNIST .gz files (default: ninlab's search)")
    parser.add_argument("--test-images", type=int, default=None, help="test on about this many images (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--print-every", type=int, default=25, help="steps between progress lines")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for every run's per-step record")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    capability = torch.backends.cpu.get_cpu_capability()
    print(f"host: cpu_capability={capability} threads={args.threads} torch={torch.__version__}")
    records = []
    for variant in args.variants:
        for seed in args.seeds:
            record = run(variant, seed, args)
            records.append(record)
            print(json.dumps(record["summary"]), flush=True)
            if args.out is not None:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                with atomic_open(args.out) as handle:
                    handle.write(json.dumps(records).encode())


if __name__ == "__main__":
    main()
