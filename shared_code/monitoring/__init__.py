"""Monitoring: drift statistics, windows, reference profiles, the drift run, its stored reports and chart data."""
