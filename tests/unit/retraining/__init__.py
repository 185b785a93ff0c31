"""Unit tests of shared_code.retraining."""
