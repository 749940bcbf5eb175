"""``ninlab export``: a checkpoint to ONNX, verified in onnxruntime before the file is written."""

from __future__ import annotations

import argparse
from pathlib import Path

from ninlab.cli.model_source import add_pretrained_option
from ninlab.errors import ConfigError
from ninlab.inference.export import export_onnx
from ninlab.inference.loading import load_classifier, load_pretrained_classifier

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``ninlab export``."""
    parser.add_argument("checkpoint", nargs="?", help="a .ckpt written by ninlab fit (or --pretrained NAME)")
    add_pretrained_option(parser)
    parser.add_argument("-o", "--output", help="ONNX file to write (default: the checkpoint path with .onnx; "
                        "with --pretrained: NAME.onnx here)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists (never the checkpoint)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset version (default 18)")
    parser.add_argument("--atol", type=float, default=1e-4, help="max abs logit difference allowed, plus --rtol "
                        "times the largest logit (default 1e-4)")  # fmt: skip
    parser.add_argument("--rtol", type=float, default=1e-5, help="the share of the largest |logit| allowed on top "
                        "of --atol (default 1e-5)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Export ``args.checkpoint`` to ONNX and print where it went and how closely it matches PyTorch."""
    if args.atol <= 0:
        raise ConfigError(f"--atol must be positive, got {args.atol}")
    if args.rtol < 0:
        raise ConfigError(f"--rtol must be 0 or more, got {args.rtol}")
    if (args.checkpoint is None) == (args.pretrained is None):
        raise ConfigError("export takes a checkpoint or --pretrained NAME (one of the two); pass a .ckpt written "
                          "by ninlab fit, or e.g. --pretrained fashion-mnist")  # fmt: skip
    if args.pretrained:
        model, source = load_pretrained_classifier(args.pretrained), None
        default = Path(f"{args.pretrained}.onnx")
    else:
        model, source = load_classifier(args.checkpoint), args.checkpoint
        default = Path(args.checkpoint).with_suffix(".onnx")
    output = Path(args.output) if args.output else default
    diff = export_onnx(
        model, output, opset=args.opset, atol=args.atol, rtol=args.rtol, overwrite=args.overwrite, source=source
    )
    print(f"wrote {output} ({output.stat().st_size:,} bytes); onnxruntime vs PyTorch max abs diff {diff:.2e}")
    return 0
