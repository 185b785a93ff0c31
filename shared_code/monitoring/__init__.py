"""Drift monitoring: reference profiles, the per-window comparison, its store, reports and charts."""
