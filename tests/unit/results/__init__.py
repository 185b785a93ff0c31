"""Unit tests of shared_code.results."""
