"""Unit tests of bench/ (the benchmark code itself)."""
