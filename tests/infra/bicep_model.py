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


# --- the apps main.bicep deploys, and the settings each gets ----------------------------------------------
FUNCTION_APP_MODULE = INFRA / "modules" / "function-app.bicep"
DEFAULT_SCRIPT = "function_app.py"


def resolve_object(value: Any, variables: dict[str, Any]) -> dict[str, Any]:
    """An object expression of main.bicep as a dict: literals, variable names and `union(...)` resolved."""
    if isinstance(value, str) and value in variables:
        return resolve_object(variables[value]["value"], variables)
    if isinstance(value, dict) and isinstance(value.get("function"), dict):
        function = value["function"]
        if function.get("type") == "union":
            merged: dict[str, Any] = {}
            for argument in function["parameters"].values():
                merged.update(resolve_object(argument, variables))
            return merged
    if isinstance(value, dict) and "function" not in value and "operator" not in value:
        return dict(value)
    raise ValueError(f"cannot resolve {text_of(value)[:200]} to an object")


def function_apps() -> dict[str, dict[str, Any]]:
    """Each Function App main.bicep deploys (by azd service name): its module params and resolved appSettings."""
    document = parse(MAIN_BICEP)
    variables = document["variables"]
    apps: dict[str, dict[str, Any]] = {}
    for symbol, module in document["modules"].items():
        if (MAIN_BICEP.parent / module["detail"]["path"]).resolve() != FUNCTION_APP_MODULE:
            continue
        params = module["config"]["params"]
        service = resolve_scalar(params["serviceName"], variables)
        apps[service] = {"symbol": symbol, "params": params,
                         "settings": resolve_object(params["appSettings"], variables)}
    return apps


def resolve_scalar(value: Any, variables: dict[str, Any]) -> Any:
    """A literal, or the literal a `variable.property...` chain of main.bicep names."""
    if isinstance(value, dict) and value.get("operator", {}).get("type") == "property_accessor":
        chain: list[str] = []
        node: Any = value
        while isinstance(node, dict) and node.get("operator", {}).get("type") == "property_accessor":
            operands = node["operator"]["operands"]
            chain.append(operands["operand_1"])
            node = operands["operand_2"]
        chain.append(node)
        current: Any = variables[chain[0]]["value"]
        for key in chain[1:]:
            current = current[key]
        return current
    return value


def host_settings() -> dict[str, Any]:
    """The Functions host settings function-app.bicep adds to every app."""
    return cast(dict[str, Any], parse(FUNCTION_APP_MODULE)["variables"]["hostSettings"]["value"])


def entry_script(settings: dict[str, Any]) -> str:
    """The script the Python worker loads for an app (PYTHON_SCRIPT_FILE_NAME, default function_app.py)."""
    return str(settings.get("PYTHON_SCRIPT_FILE_NAME") or DEFAULT_SCRIPT)
