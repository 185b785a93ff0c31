"""Telemetry start-up: Azure Monitor when a connection string is set, nothing otherwise."""

from __future__ import annotations

import os

from shared_code import telemetry


def configure_from_settings(service_name: str = "imgclass") -> bool:
    """`service_name` tells the two apps apart in Application Insights (cloud_RoleName)."""
    # Read directly: telemetry must not depend on the rest of the settings being valid.
    return telemetry.configure_telemetry(os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING") or None,
                                         service_name=service_name)
