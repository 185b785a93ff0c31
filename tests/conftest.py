"""Shared pytest wiring: the app fixtures live in a plugin module so test files need no fixture imports."""

pytest_plugins = ["tests.integration.app_fixtures"]
