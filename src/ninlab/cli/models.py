"""``ninlab models``: the registered NiN variants, and which of them ninlab ships trained weights for."""

from __future__ import annotations

import argparse

from ninlab.models.pretrained import list_pretrained
from ninlab.models.registry import create_model, list_models

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``ninlab models`` (none)."""


def run(args: argparse.Namespace) -> int:
    """Print one line per variant (parameters at its defaults), then one per set of shipped weights."""
    weights = list_pretrained()
    for name in list_models():
        params = sum(p.numel() for p in create_model(name).parameters())
        trained = ", ".join(w for w, entry in sorted(weights.items()) if entry["model"] == name) or "-"
        print(f"{name:<14} {params:>11,} params   pretrained: {trained}")
    if weights:
        print("\npretrained weights (use with --pretrained NAME, or create_model(model, pretrained=NAME)):")
    for name, entry in sorted(weights.items()):
        print(
            f"  {name:<14} {entry['model']:<10} {entry['dataset']:<14} test accuracy {entry['test_accuracy']:.4f} "
            f"({entry['test_correct']:,}/{entry['test_images']:,})  {entry['bytes'] / 1024:,.0f} KB"
        )
    return 0
