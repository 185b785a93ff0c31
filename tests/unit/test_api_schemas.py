"""Every request/response schema of the API defers its build: importing the app must not build fifty validators."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from pydantic import BaseModel

import functions
from functions.schema_base import ApiModel

pytestmark = pytest.mark.unit


def api_schemas() -> list[type[BaseModel]]:
    found = []
    for module_info in pkgutil.iter_modules(functions.__path__):
        module = importlib.import_module(f"functions.{module_info.name}")
        found += [value for value in vars(module).values() if inspect.isclass(value) and issubclass(value, BaseModel)
                  and value.__module__ == module.__name__ and value is not ApiModel]
    return found


def test_every_api_schema_builds_on_first_use() -> None:
    schemas = api_schemas()
    assert len(schemas) > 40  # the routers' schemas were found at all
    eager = sorted(s.__qualname__ for s in schemas if not s.model_config.get("defer_build"))
    assert eager == []


def test_a_deferred_schema_still_validates_and_documents_itself() -> None:
    from pydantic import ValidationError  # noqa: PLC0415

    from functions.http_api import HealthPublic, create_api  # noqa: PLC0415

    document = create_api().openapi()
    assert {"ClassificationPublic", "HealthPublic"} <= set(document["components"]["schemas"])
    with pytest.raises(ValidationError):
        HealthPublic.model_validate({"status": "ok"})  # the model is missing: still refused
    assert HealthPublic.__pydantic_complete__  # built by that first use
