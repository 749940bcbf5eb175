"""int8 inference in onnxruntime: accuracy and speed of a statically quantised ONNX model beside the fp32 one.

Exports the model (a shipped pretrained one by default) with ``ninlab``'s exporter, quantises it with onnxruntime's
static quantisation (after its graph pre-processing; QDQ format, int8 weights per output channel, int8 activations
calibrated on the first ``--calibration`` training images, min-max), and measures both models on the dataset's whole
test split (accuracy, and how often the two disagree) and in speed: images/s at batch 256 and milliseconds for one
image, medians of timed repeats, the two sessions taking turns so that a changing machine hits them alike (their
threads stop spinning after each run, so the idle one leaves the cores to the other).

    python scripts/int8_onnx.py --pretrained fashion-mnist --data-root DIR --json int8.json

``DIR`` holds the Fashion-MNIST files (leave it out where ninlab finds them itself). The int8 model is kept only
with ``--output``. The figures: docs/benchmarks.md, "Inference on the CPU".
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quant_pre_process, quantize_static

from ninlab._runtime.environment import machine_info
from ninlab.data import load_dataset
from ninlab.inference.export import export_onnx
from ninlab.inference.loading import load_classifier, load_pretrained_classifier
from ninlab.inference.predict import network_inputs


class _Calibration(CalibrationDataReader):
    """Batches of prepared training images, as onnxruntime's calibration reads them."""

    def __init__(self, name: str, inputs: np.ndarray, batch: int = 64) -> None:
        self.batches = iter([{name: inputs[i : i + batch]} for i in range(0, len(inputs), batch)])

    def get_next(self) -> dict | None:
        return next(self.batches, None)


def _prepared(model, images) -> np.ndarray:
    chunks = [network_inputs(model, images[i : i + 1024]).contiguous().numpy() for i in range(0, len(images), 1024)]
    return np.ascontiguousarray(np.concatenate(chunks))


def _logits(session: onnxruntime.InferenceSession, inputs: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: inputs[i : i + 512]})[0] for i in range(0, len(inputs), 512)])


def _session(path: Path) -> onnxruntime.InferenceSession:
    """A CPU session whose worker threads stop spinning when a run ends.

    The timed sessions take turns, and by default an idle session's threads keep spinning after its run, taking the
    cores from the session being timed: on a 2-core AMD EPYC (Zen 3, 2026-12-02) that halved the fp32 model's
    images/s at batch 256 (1,870-2,022 taking turns against 3,790-3,841 timed alone) and cut the int8 model's by a
    third, while with this setting the two taking turns ran at 3,565-3,696 and 4,248-4,786 images/s, as alone.
    """
    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _timed(sessions: dict, feeds: dict, repeats: int) -> dict[str, float]:
    seconds = {key: [] for key in sessions}
    for _ in range(3):  # warm-up
        for session in sessions.values():
            session.run(None, feeds)
    for _ in range(repeats):
        for key, session in sessions.items():  # taking turns
            start = time.perf_counter()
            session.run(None, feeds)
            seconds[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--pretrained", default="fashion-mnist", help="a shipped model's name (`ninlab models`)")
    source.add_argument("--checkpoint", help="a ninlab checkpoint instead")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-root", help="where the dataset's files are")
    parser.add_argument("--calibration", type=int, default=512, help="training images that calibrate activations")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--output", type=Path, help="also keep the int8 model here")
    parser.add_argument("--json", type=Path, help="also write the result to this file")
    args = parser.parse_args()

    model = load_classifier(args.checkpoint) if args.checkpoint else load_pretrained_classifier(args.pretrained)
    train = load_dataset(args.dataset, "train", root=args.data_root)
    test = load_dataset(args.dataset, "test", root=args.data_root)
    calibration, inputs = _prepared(model, train.images[: args.calibration]), _prepared(model, test.images)
    labels = test.labels.numpy()
    with tempfile.TemporaryDirectory(prefix="ninlab-int8-") as workdir:
        fp32_path, int8_path = Path(workdir, "model.onnx"), Path(workdir, "model.int8.onnx")
        export_onnx(model, fp32_path)
        # onnxruntime's recommended pre-processing (graph optimisation: BatchNorm folded into the convolutions), so
        # that only convolutions are quantised; the fp32 model timed is the exported one, as `ninlab export` writes.
        prepared = Path(workdir, "model.prepared.onnx")
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        name = onnxruntime.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"]).get_inputs()[0].name
        quantize_static(str(prepared), str(int8_path), _Calibration(name, calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)  # fmt: skip
        sessions = {key: _session(path) for key, path in (("fp32", fp32_path), ("int8", int8_path))}
        predictions = {key: _logits(session, inputs).argmax(1) for key, session in sessions.items()}
        batch = {name: inputs[:256]}
        single = {name: inputs[:1]}
        throughput = _timed(sessions, batch, args.repeats)
        latency = _timed(sessions, single, args.repeats * 5)
        sizes = {key: path.stat().st_size for key, path in (("fp32", fp32_path), ("int8", int8_path))}
        if args.output is not None:
            args.output.write_bytes(int8_path.read_bytes())
    accuracy = {key: float((p == labels).mean()) for key, p in predictions.items()}
    result = {
        "model": args.checkpoint or f"pretrained:{args.pretrained}",
        "test_images": len(labels),
        "accuracy": accuracy,
        "accuracy_drop_points": round(100 * (accuracy["fp32"] - accuracy["int8"]), 2),
        "predictions_differing": int((predictions["fp32"] != predictions["int8"]).sum()),
        "images_per_s_batch256": {key: round(256 / s, 1) for key, s in throughput.items()},
        "latency_ms_batch1": {key: round(1e3 * s, 3) for key, s in latency.items()},
        "file_bytes": sizes,
        "calibration_images": args.calibration,
        "onnxruntime": onnxruntime.__version__,
        "host": machine_info(),
    }
    print(json.dumps(result, indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
