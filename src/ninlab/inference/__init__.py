"""Using a trained NiN: loading a checkpoint, predicting image files, exporting to ONNX."""
