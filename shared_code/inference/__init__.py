"""Inference: untrusted bytes to predictions (decode, card-driven preprocessing, ONNX, features, CAM, versions)."""
