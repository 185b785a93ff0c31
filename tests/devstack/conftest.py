"""The dev-stack tests use the same session emulators as the integration tests."""

from tests.integration.conftest import azurite, cosmos

__all__ = ["azurite", "cosmos"]
