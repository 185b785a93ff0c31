"""The offline model world: export, card, quantize and evaluate ONNX classifiers for the app."""
