"""Unit tests of model/ that run in the app venv (card, quantize, evaluate)."""
