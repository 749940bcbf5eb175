"""Layer-by-layer verification of a NiN: output shape, parameters and multiply-adds of every stage.

This is the d2l NiN document's "dimension verification" as a table. Multiply-adds (MACs) are counted by
``torch.utils.flop_counter`` on one image; FLOPs = 2 x MACs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ninlab.errors import ConfigError
from ninlab.models import NiN
from ninlab.models.layers import MLPConv
from ninlab.models.registry import create_model, list_models

__all__ = ["ModelSummary", "SummaryRow", "format_summary", "summarize"]

_DENSE_WIDTH = 4096  # AlexNet's dense layers, the head NiN replaces


@dataclass(frozen=True)
class SummaryRow:
    """One stage of the network: its name, layer type, output shape (no batch dim), parameters and MACs."""

    name: str
    layer: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


@dataclass(frozen=True)
class ModelSummary:
    """The rows of a model summary and the totals, for one image of ``input_shape`` (C, H, W)."""

    model: str
    input_shape: tuple[int, int, int]
    rows: list[SummaryRow]
    params: int
    macs: int
    trunk_shape: tuple[int, ...]
    head_description: str
    nin_head_params: int
    dense_head_params: int

    @property
    def flops(self) -> int:
        """Floating-point operations of one forward pass (2 per multiply-add)."""
        return 2 * self.macs


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _dense_head_params(trunk_shape: tuple[int, ...], num_classes: int) -> int:
    """Parameters of AlexNet's head (flatten -> 4096 -> 4096 -> num_classes) on a trunk output of that shape."""
    flat = 1
    for d in trunk_shape:
        flat *= d
    widths = [flat, _DENSE_WIDTH, _DENSE_WIDTH, num_classes]
    return sum(a * b + b for a, b in itertools.pairwise(widths))


def summarize(
    model: nn.Module | str, input_size: tuple[int, int, int] | None = None, num_classes: int | None = None
) -> ModelSummary:
    """Summarise a NiN stage by stage for one image.

    Args:
        model: A :class:`~ninlab.models.NiN` or a registered model name.
        input_size: (C, H, W) of one image; defaults to the variant's own channels and image size. With a name,
            C also sets the model's ``in_chans``.
        num_classes: With a name, build the model for this many classes.

    Raises:
        InputSizeError: the input is too small (or has the wrong channel count) for the model.
        ConfigError: an unknown model name or option.
    """
    if isinstance(model, str):
        kwargs = {} if num_classes is None else {"num_classes": num_classes}
        if input_size is not None:
            kwargs["in_chans"] = input_size[0]
        model = create_model(model, **kwargs)
    if not isinstance(model, NiN):
        raise ConfigError(f"summarize needs a NiN model or a name from {', '.join(list_models())}")
    if input_size is None:
        input_size = (model.in_chans, model.design_size, model.design_size)
    was_training = model.training
    model.eval()
    x = torch.zeros(1, *input_size)
    model.check_input(x)

    stages = [(f"features.{i}", m) for i, m in enumerate(model.features)]
    stages += [(f"head.{i}", m) for i, m in enumerate(model.head)]
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        module.register_forward_hook(lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:])))
        for name, module in stages
    ]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    flops = counter.get_flop_counts()
    prefix = type(model).__name__

    def macs(name: str) -> int:
        return sum(flops.get(f"{prefix}.{name}", {}).values()) // 2

    rows = [SummaryRow(name, type(m).__name__, shapes[name], _count(m), macs(name)) for name, m in stages]

    # The NiN head is the last mlpconv (one map per class) plus global pooling; with a linear head, only the head.
    blocks = [i for i, m in enumerate(model.features) if isinstance(m, MLPConv)]
    has_linear = any(isinstance(m, nn.Linear) for m in model.head)
    trunk_end = len(model.features) if has_linear else blocks[-1]
    trunk_shape = rows[trunk_end - 1].output_shape if trunk_end > 0 else tuple(input_size)
    total_params = _count(model)
    trunk_params = sum(r.params for r in rows[:trunk_end])
    return ModelSummary(
        model=model.name,
        input_shape=tuple(input_size),
        rows=rows,
        params=total_params,
        macs=sum(r.macs for r in rows),
        trunk_shape=trunk_shape,
        head_description="global average pooling + linear" if has_linear else "last mlpconv + global average pooling",
        nin_head_params=total_params - trunk_params,
        dense_head_params=_dense_head_params(trunk_shape, model.num_classes),
    )


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def format_summary(summary: ModelSummary) -> str:
    """Render a summary as a plain-text table with totals and the NiN-head vs dense-head comparison."""
    header = ("stage", "layer", "output", "params", "MACs")
    lines = [(r.name, r.layer, _shape(r.output_shape), f"{r.params:,}", f"{r.macs:,}") for r in summary.rows]
    body = [("input", "", _shape(summary.input_shape), "", ""), *lines]
    total = ("total", "", "", f"{summary.params:,}", f"{summary.macs:,}")
    widths = [max(len(row[i]) for row in [header, *body, total]) for i in range(len(header))]

    def fmt(row: tuple[str, ...]) -> str:
        cells = [c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    dense_total = summary.params - summary.nin_head_params + summary.dense_head_params
    return "\n".join(
        [
            f"{summary.model} on one {_shape(summary.input_shape)} image",
            fmt(header),
            rule,
            *(fmt(r) for r in body),
            rule,
            fmt(total),
            "",
            f"MACs = multiply-adds per image; FLOPs = 2 x MACs = {summary.flops / 1e9:.3f} G.",
            f"Head: the NiN head ({summary.head_description}) has {summary.nin_head_params:,} parameters; "
            f"an AlexNet-style dense head on the same {_shape(summary.trunk_shape)} trunk output "
            f"(flatten -> {_DENSE_WIDTH:,} -> {_DENSE_WIDTH:,} -> classes) would have {summary.dense_head_params:,} "
            f"({summary.dense_head_params / max(summary.nin_head_params, 1):,.0f}x), "
            f"{dense_total:,} for the whole network instead of {summary.params:,}.",
        ]
    )
