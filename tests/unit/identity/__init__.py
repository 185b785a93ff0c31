"""Unit tests of shared_code.identity."""
