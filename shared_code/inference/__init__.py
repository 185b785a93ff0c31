"""Inference: untrusted bytes to predictions (decode, card-driven preprocessing, backends, features, CAM, versions)."""
