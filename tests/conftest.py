"""Shared pytest wiring: the app fixtures live in a plugin module so test files need no fixture imports.

The torch environment (model/.venv) runs only tests/model and has no Azure SDKs, so the plugin is loaded
only where the app's dependencies are installed.
"""

import importlib.util


def _app_installed() -> bool:
    try:
        return importlib.util.find_spec("azure.functions") is not None
    except ModuleNotFoundError:
        return False


pytest_plugins = ["tests.integration.app_fixtures"] if _app_installed() else []
