"""Drift monitoring: reference profiles, automatic baselines, window runs and their reports."""
