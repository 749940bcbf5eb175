"""Where a command's trained model comes from: a checkpoint file, or ``--pretrained NAME`` (weights ninlab ships)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ninlab.errors import ConfigError
from ninlab.inference.loading import load_classifier, load_pretrained_classifier
from ninlab.training.module import NiNClassifier

if TYPE_CHECKING:
    from ninlab.inference.onnx_model import OnnxClassifier

__all__ = ["add_model_and_images_arguments", "add_pretrained_option", "model_and_images"]


def add_pretrained_option(parser: argparse.ArgumentParser) -> None:
    """``--pretrained NAME``: use weights shipped with ninlab instead of a checkpoint (``ninlab models`` lists them)."""
    parser.add_argument("--pretrained", metavar="NAME", help="use weights shipped with ninlab instead of a checkpoint "
                        "(fashion-mnist, mnist; see `ninlab models`)")  # fmt: skip


def add_model_and_images_arguments(parser: argparse.ArgumentParser, command: str, checkpoint_note: str = "") -> None:
    """``CKPT IMAGE_OR_FOLDER...`` or ``--pretrained NAME IMAGE_OR_FOLDER...``, read by :func:`model_and_images`."""
    parser.add_argument("inputs", nargs="+", metavar="PATH", help=f"a .ckpt written by ninlab fit ({checkpoint_note}"
                        "omitted with --pretrained), then image files and/or folders of images (searched "
                        "recursively)")  # fmt: skip
    add_pretrained_option(parser)
    parser.usage = f"ninlab {command} CKPT IMAGE_OR_FOLDER... | --pretrained NAME IMAGE_OR_FOLDER... [options]"


def model_and_images(args: argparse.Namespace, onnx: bool = False) -> tuple[NiNClassifier | OnnxClassifier, list[str]]:
    """The model and the image paths of ``CKPT IMAGE...`` or ``--pretrained NAME IMAGE...`` (``args.inputs``);
    with ``onnx``, ``CKPT`` may also be a ``.onnx`` file written by ``ninlab export``."""
    if args.pretrained:
        return load_pretrained_classifier(args.pretrained), list(args.inputs)
    if len(args.inputs) < 2:
        raise ConfigError(f"expected a checkpoint and at least one image (CKPT IMAGE...), found {len(args.inputs)} "
                          "path(s); pass a .ckpt first, or --pretrained NAME to use shipped weights")  # fmt: skip
    if args.inputs[0].endswith(".onnx"):
        if not onnx:
            raise ConfigError(f"{args.inputs[0]} is an ONNX model: this command needs the checkpoint it was exported "
                              "from (class maps read the network's layers); pass the .ckpt")  # fmt: skip
        from ninlab.inference.onnx_model import OnnxClassifier  # onnxruntime: only when an ONNX file is given

        return OnnxClassifier(args.inputs[0]), list(args.inputs[1:])
    return load_classifier(args.inputs[0]), list(args.inputs[1:])
