"""``ninlab export CKPT --output model.onnx``: export a trained classifier to ONNX and prove the file is right.

The exported graph takes a normalised float batch (N x C x H x W, N dynamic; what
:func:`ninlab.data.transforms.prepare_images` makes of uint8 images) and returns logits (mirror-averaged when the
model was trained with ``tta_flip``). Before the file is moved into place, onnxruntime runs it on random images
prepared that way, in a batch of a size other than the one traced, and its logits must match PyTorch's to
``--atol``; class names, input size and
normalisation go into the ONNX metadata, so the file is self-describing. The write is atomic: on any failure no
(partial) output file is left behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ninlab._runtime.atomic import naming_failures
from ninlab.errors import CheckpointError
from ninlab.inference.predict import network_inputs
from ninlab.training.module import NiNClassifier

__all__ = ["export_onnx"]


def export_onnx(model: NiNClassifier, output: str | Path, *, opset: int = 18, atol: float = 1e-4) -> float:
    """Export ``model`` to ONNX at ``output`` atomically; return the max abs logit difference onnxruntime vs torch.

    Raises:
        CheckpointError: onnxruntime's logits differ from PyTorch's by more than ``atol`` (nothing is written).
    """
    import onnx
    import onnxruntime

    output = Path(output)
    model = model.eval().to(memory_format=torch.contiguous_format)
    c, h, w = model.input_size
    generator = torch.Generator().manual_seed(0)

    def images(n: int) -> torch.Tensor:  # random pixels, prepared as every input of the model is
        pixels = torch.randint(0, 256, (n, c, h, w), generator=generator, dtype=torch.uint8)
        return network_inputs(model, pixels).contiguous()

    example = images(2)
    check = images(3)  # another batch size: proves the batch axis is dynamic
    with naming_failures(output):  # a read-only or full disk names the output, not the hidden temporary file
        output.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            dynamic = {"x": {0: torch.export.Dim("batch")}}
            program = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset, input_names=["images"],
                                        output_names=["logits"], dynamic_shapes=dynamic, verbose=False)  # fmt: skip
            program.save(str(tmp))
            proto = onnx.load(str(tmp))
            metadata = {"class_names": json.dumps(model.class_names), "input_size": json.dumps([c, h, w]),
                        "mean": json.dumps(model.hparams.get("mean")), "std": json.dumps(model.hparams.get("std")),
                        "model": str(model.hparams.model), "producer": "ninlab"}  # fmt: skip
            for key, value in metadata.items():
                proto.metadata_props.add(key=key, value=value)
            onnx.save(proto, str(tmp))
            session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
            (ort_logits,) = session.run(None, {session.get_inputs()[0].name: check.numpy()})
            with torch.no_grad():
                torch_logits = model(check).numpy()
            diff = float(np.abs(ort_logits - torch_logits).max())
            if not diff <= atol:
                raise CheckpointError(f"ONNX export of {model.hparams.model} is wrong: onnxruntime's logits differ "
                                      f"from PyTorch's by {diff:.3g} > {atol:g}; nothing was written")  # fmt: skip
            os.replace(tmp, output)
            return diff
        finally:
            tmp.unlink(missing_ok=True)
