"""Unit tests of tools/."""
