"""Unit tests of shared_code.inference."""
