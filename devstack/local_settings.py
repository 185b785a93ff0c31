"""What Core Tools reads before it starts a function app: local.settings.json Values and host.json."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_ROUTE_PREFIX = "api"
_APP_SETTING_REFERENCE = re.compile(r"%([A-Za-z0-9_.:-]+)%")


class SettingsFileError(ValueError):
    """local.settings.json or host.json is malformed, or a referenced app setting is missing."""


def read_values(path: Path) -> dict[str, str]:
    """The `Values` of a local.settings.json file as strings (missing file: no values)."""
    if not path.exists():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SettingsFileError(f"{path} is not valid JSON: {exc}") from exc
    values = document.get("Values", {}) if isinstance(document, dict) else None
    if not isinstance(values, dict):
        raise SettingsFileError(f"{path}: 'Values' must be an object of app settings")
    return {str(name): _as_setting(value) for name, value in values.items()}


def _as_setting(value: Any) -> str:
    # App settings are strings in Azure; Core Tools stringifies JSON booleans and numbers the same way.
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def apply_values(values: Mapping[str, str], environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Export values into the environment without overriding what is already set; return the names applied."""
    target = os.environ if environ is None else environ
    applied = []
    for name, value in values.items():
        if name not in target:
            target[name] = value
            applied.append(name)
    return applied


@dataclass(frozen=True)
class HostJson:
    """The parts of host.json this host honours."""

    route_prefix: str = DEFAULT_ROUTE_PREFIX
    blob_max_attempts: int | None = None
    blob_workers: int | None = None


def read_host_json(path: Path) -> HostJson:
    """`extensions.http.routePrefix` and the blob trigger's `poisonBlobThreshold` / `maxDegreeOfParallelism`."""
    if not path.exists():
        return HostJson()
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SettingsFileError(f"{path} is not valid JSON: {exc}") from exc
    extensions = document.get("extensions", {})
    prefix = extensions.get("http", {}).get("routePrefix", DEFAULT_ROUTE_PREFIX)
    if not isinstance(prefix, str):
        raise SettingsFileError(f"{path}: extensions.http.routePrefix must be a string")
    blobs = extensions.get("blobs", {})
    return HostJson(route_prefix=prefix.strip("/"), blob_max_attempts=_optional_int(blobs, "poisonBlobThreshold", path),
                    blob_workers=_optional_int(blobs, "maxDegreeOfParallelism", path))


def _optional_int(section: dict[str, Any], name: str, path: Path) -> int | None:
    value = section.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SettingsFileError(f"{path}: extensions.blobs.{name} must be a positive integer")
    return value


def resolve_references(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace `%NAME%` app-setting references (as in binding paths and schedules) with their values."""
    source = os.environ if environ is None else environ

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in source:
            raise SettingsFileError(f"binding expression '{text}' references app setting {name}, which is not set")
        return source[name]

    return _APP_SETTING_REFERENCE.sub(substitute, text)
