"""FastAPI's pydantic-v1 checks, answered without importing `pydantic.v1` (about 0.1 s of every cold start).

FastAPI 0.16x refuses pydantic.v1 models. For every annotation a route declares, and for objects it encodes, it
asks whether they are one, and to find out it imports `pydantic.v1`: a second copy of pydantic that this app never
uses. An object can only be a pydantic.v1 model if somebody imported that module, so while it is absent the answer
is no without importing it; once it is present, FastAPI's own check runs unchanged. `install()` runs before any
route is declared (`functions.dependencies` calls it; every router imports that module first).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import fastapi._compat as compat
from fastapi import encoders
from fastapi._compat import shared

PYDANTIC_V1 = "pydantic.v1"


def _only_if_imported(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def guarded(value: Any) -> bool:
        return PYDANTIC_V1 in sys.modules and check(value)

    guarded.__wrapped__ = check  # type: ignore[attr-defined]
    return guarded


def install() -> None:
    """Guard FastAPI's two checks (idempotent). `annotation_is_pydantic_v1` calls the class check through its
    module, so it is guarded with it; the encoder holds its own reference to the instance check."""
    if hasattr(shared.is_pydantic_v1_model_class, "__wrapped__"):
        return
    shared.is_pydantic_v1_model_class = _only_if_imported(shared.is_pydantic_v1_model_class)  # type: ignore[assignment]
    instance_check = _only_if_imported(shared.is_pydantic_v1_model_instance)
    shared.is_pydantic_v1_model_instance = instance_check  # type: ignore[assignment]
    compat.is_pydantic_v1_model_instance = instance_check  # type: ignore[assignment]
    encoders.is_pydantic_v1_model_instance = instance_check  # type: ignore[attr-defined,assignment]
