"""Unit tests of the pure core and tooling, one folder per package they test."""
