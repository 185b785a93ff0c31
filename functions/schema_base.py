"""The base class of the API's request and response schemas."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ApiModel(BaseModel):
    """A pydantic model that builds its validator and serializer on first use instead of at import.

    About fifty schemas describe the API; building them all at import cost a noticeable share of the cold start,
    though the first request needs only a few. FastAPI builds a route's models when that route's router first
    serves, and the OpenAPI document builds every one of them, so each schema is still checked before it is used.
    """

    model_config = ConfigDict(defer_build=True)
