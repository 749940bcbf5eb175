"""``ninlab export CKPT --output model.onnx``: export a trained classifier to ONNX and prove the file is right.

The exported graph takes a normalised float batch (N x C x H x W, N dynamic; what
:func:`ninlab.data.transforms.prepare_images` makes of uint8 images) and returns logits (mirror-averaged when the
model was trained with ``tta_flip``). Before the file is written, onnxruntime runs it on random images prepared that
way, in a batch of a size other than the one traced, and its logits must match PyTorch's to ``--atol`` plus ``--rtol``
times the largest logit (float32 kernels that sum in another order differ in proportion to the values); class names,
input size and normalisation go into the ONNX metadata, so the file is self-describing. The write is atomic
(:func:`ninlab._runtime.atomic.atomic_open`): on any failure no (partial) output file is left behind. The checkpoint
itself is never written over, nor any existing file unless asked.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from ninlab._runtime.atomic import atomic_open, naming_failures
from ninlab.errors import CheckpointError, ConfigError
from ninlab.inference.predict import network_inputs
from ninlab.training.module import NiNClassifier

__all__ = ["export_onnx"]


def _check_output(output: Path, source: Path | None, overwrite: bool) -> None:
    """Refuse to write over ``source`` (the checkpoint, by any name: symlink, hard link) or, unless ``overwrite``, over
    any existing file."""
    if source is not None and output.exists() and os.path.samefile(output, source):
        raise ConfigError(f"--output {output} is the checkpoint being exported ({source}); choose another file, "
                          "e.g. the default (the checkpoint path with .onnx)")  # fmt: skip
    if output.is_dir():
        raise ConfigError(f"--output {output} is a folder; give the path of the .onnx file to write")
    if (output.exists() or output.is_symlink()) and not overwrite:
        raise ConfigError(f"{output} already exists; pass --overwrite to replace it, or choose another --output")


def _make_parent(output: Path) -> list[Path]:
    """Create the output's missing folders; return them, deepest first, so a failed export can remove them."""
    missing = [folder for folder in output.absolute().parents if not folder.exists()]
    output.parent.mkdir(parents=True, exist_ok=True)
    return missing


def export_onnx(model: NiNClassifier, output: str | Path, *, opset: int = 18, atol: float = 1e-4,
                rtol: float = 1e-5, overwrite: bool = False, source: str | Path | None = None) -> float:  # fmt: skip
    """Export ``model`` to ONNX at ``output`` atomically; return the max abs logit difference onnxruntime vs torch.

    The difference allowed is ``atol + rtol * (largest |logit|)``: the rounding of two float32 implementations grows
    with the size of the values, and a barely trained network can have logits in the thousands (a CIFAR-10 NiN
    after one epoch: up to 3,700, 4.9e-4 apart, 1.3e-7 of the largest), while a wrong graph is off by a share of
    the logits themselves.

    ``output`` is written only once the check passed, with the umask's permissions; on any failure neither a file
    nor a folder this call created is left.

    Raises:
        ConfigError: ``output`` is ``source`` (the checkpoint being exported), a folder, or an existing file while
            ``overwrite`` is False.
        CheckpointError: onnxruntime's logits differ from PyTorch's by more than that (nothing is written).
    """
    import onnxruntime

    output = Path(output)
    _check_output(output, None if source is None else Path(source), overwrite)
    model = model.eval().to(memory_format=torch.contiguous_format)
    c, h, w = model.input_size
    generator = torch.Generator().manual_seed(0)

    def images(n: int) -> torch.Tensor:  # random pixels, prepared as every input of the model is
        pixels = torch.randint(0, 256, (n, c, h, w), generator=generator, dtype=torch.uint8)
        return network_inputs(model, pixels).contiguous()

    example = images(2)
    check = images(3)  # another batch size: proves the batch axis is dynamic
    dynamic = {"x": {0: torch.export.Dim("batch")}}
    program = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset, input_names=["images"],
                                output_names=["logits"], dynamic_shapes=dynamic, verbose=False)  # fmt: skip
    proto = program.model_proto  # a NiN is far below protobuf's 2 GB, so the model is checked and written in memory
    metadata = {"class_names": json.dumps(model.class_names), "input_size": json.dumps([c, h, w]),
                "mean": json.dumps(model.hparams.get("mean")), "std": json.dumps(model.hparams.get("std")),
                "model": str(model.hparams.model), "producer": "ninlab"}  # fmt: skip
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    data = proto.SerializeToString()
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    (ort_logits,) = session.run(None, {session.get_inputs()[0].name: check.numpy()})
    with torch.no_grad():
        torch_logits = model(check).numpy()
    diff = float(np.abs(ort_logits - torch_logits).max())
    largest = float(np.abs(torch_logits).max())
    allowed = atol + rtol * largest
    if not diff <= allowed or not np.isfinite(allowed):  # NaN or infinite logits match nothing
        raise CheckpointError(f"ONNX export of {model.hparams.model} is wrong: onnxruntime's logits differ "
                              f"from PyTorch's by {diff:.3g} > {allowed:.3g} (atol {atol:g} + rtol {rtol:g} x the "
                              f"largest logit, {largest:.3g}); nothing was written")  # fmt: skip
    with naming_failures(output):  # a read-only or full disk names the output, not a hidden temporary file
        created = _make_parent(output)
    try:
        with atomic_open(output) as file:
            file.write(data)
    except BaseException:
        for folder in created:  # deepest first; only folders this call made, and only while empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return diff
