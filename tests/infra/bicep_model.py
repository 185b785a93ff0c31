"""Bicep files parsed with pycep into plain dicts, and small accessors the infra tests share."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any, cast

from pycep import BicepParser

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"
MAIN_BICEP = INFRA / "main.bicep"


def bicep_files() -> list[Path]:
    """Every Bicep file of the project."""
    return sorted(INFRA.rglob("*.bicep"))


@cache
def parse(path: Path) -> dict[str, Any]:
    """The pycep document of one Bicep file (cached: parsing is the slow part)."""
    return cast(dict[str, Any], BicepParser().parse(file_path=path))


def resources(path: Path, resource_type: str | None = None, *, include_existing: bool = False
              ) -> dict[str, dict[str, Any]]:
    """Resources declared in a file by symbolic name, loops and conditions unwrapped to their body."""
    found = {}
    for symbol, resource in parse(path).get("resources", {}).items():
        if resource_type is not None and resource["type"].lower() != resource_type.lower():
            continue
        if resource.get("existing") and not include_existing:
            continue
        found[symbol] = unwrap(resource["config"])
    return found


def unwrap(config: dict[str, Any]) -> dict[str, Any]:
    """The body of a resource, whether plain, conditional (`if`) or a loop (`for`)."""
    while "loop_type" in config or ("condition" in config and "config" in config):
        config = config["config"]
    return config


def text_of(value: Any) -> str:
    """A parsed expression flattened to text, for 'does it mention X' checks."""
    return json.dumps(value, sort_keys=True)


def module_paths(path: Path) -> dict[str, Path]:
    """Modules a file composes, by symbolic name, resolved against the file's folder."""
    return {name: (path.parent / module["detail"]["path"]).resolve()
            for name, module in parse(path).get("modules", {}).items()}


def loaded_text_files(value: Any) -> list[str]:
    """Every `loadTextContent` path inside a parsed expression."""
    found: list[str] = []
    if isinstance(value, dict):
        function = value.get("function")
        if isinstance(function, dict) and function.get("type") == "load_text_content":
            found.append(function["parameters"]["file_path"])
        for item in value.values():
            found.extend(loaded_text_files(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(loaded_text_files(item))
    return found
