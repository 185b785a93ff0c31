"""Monitoring: drift statistics, windows, reference profiles, the drift run and its stored reports."""
