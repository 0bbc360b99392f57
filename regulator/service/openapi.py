"""The daemon's OpenAPI document: each POST route's body schema, examples and refusals.

The routes read their bodies themselves (size, depth and number limits come before
parsing), so FastAPI cannot see the bodies; :func:`body_doc` describes each one for its
route, and :func:`openapi_builder` puts the models' schemas in ``components``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from regulator.service.bodies import BODY_MODELS, RecalibrateRequest

__all__ = ["body_doc", "openapi_builder"]

_ERROR = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"detail": {}, "reason": {"type": "string"}},
                "required": ["detail"],
            }
        }
    }
}
_REFUSALS = {
    "400": {"description": "body nested too deep (reason too_deep)", **_ERROR},
    "401": {"description": "missing or wrong bearer token", **_ERROR},
    "413": {"description": "body over http.max_body_bytes", **_ERROR},
    "422": {"description": "body does not match the schema, with the reasons", **_ERROR},
    "503": {"description": "no token configured: mutating routes are disabled", **_ERROR},
}


def body_doc(
    model: type[BaseModel] | None, *extra: str, answer: type[BaseModel] | None = None
) -> dict[str, Any]:
    """``openapi_extra`` of a POST route: its body's schema and examples, the refusals,
    and the model of its 200 answer where it has one."""
    doc: dict[str, Any] = {"responses": dict(_REFUSALS)}
    if answer is not None:
        doc["responses"]["200"] = {
            "description": " ".join((answer.__doc__ or "").split("\n\n")[0].split()),
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{answer.__name__}"}}
            },
        }
    for code in extra:
        doc["responses"][code] = {
            "description": {"409": "refused by the runtime", "507": "state disk full"}[code],
            **_ERROR,
        }
    if model is not None:
        schema = model.model_json_schema()
        doc["requestBody"] = {
            "required": model is not RecalibrateRequest,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{model.__name__}"},
                    "examples": {
                        f"example{i}": {"value": ex}
                        for i, ex in enumerate(schema.get("examples", []))
                    },
                }
            },
        }
    return doc


def openapi_builder(app: FastAPI) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
            spec["components"] = {
                "schemas": {},
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            }
            schemas = spec["components"]["schemas"]
            for model in BODY_MODELS:
                js = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(js.pop("$defs", {}))
                schemas[model.__name__] = js
            for path, ops in spec["paths"].items():
                if path.startswith("/v1/") and "post" in ops:
                    ops["post"]["security"] = [{"bearer": []}]
            app.openapi_schema = spec
        return app.openapi_schema

    return build
