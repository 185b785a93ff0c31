"""Unit tests of shared_code.monitoring."""
