"""docs/openapi.yaml is a valid OpenAPI document and describes exactly the endpoints the HTTP
front end serves (those it answers 501 for are left out)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import cast

import yaml
from openapi_spec_validator import validate

from server.dataplane.plane import DataPlane
from server.http_api.routes import Routes

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
NOT_SUPPORTED = re.compile(r"/v2/(trace|logging)")


def _document() -> dict:
    return yaml.safe_load(OPENAPI.read_text())


def _example(template: str) -> str:
    """A concrete path for a templated one: /v2/models/{model} -> /v2/models/m1."""
    return re.sub(r"\{(\w+)\}", lambda m: {"version": "1"}.get(m[1], m[1][0] + "1"), template)


def test_the_document_is_valid_openapi() -> None:
    validate(_document())


def test_every_documented_endpoint_is_served_and_every_served_one_documented() -> None:
    routes = Routes(cast(DataPlane, object())).routes
    documented = {
        (method.upper(), template)
        for template, item in _document()["paths"].items()
        for method in item
        if method in ("get", "post")
    }
    for method, template in sorted(documented):
        path = _example(template)
        served = [r for r in routes if r.method == method and r.pattern.fullmatch(path)]
        assert served, f"{method} {template} is documented but not served"
    for route in routes:
        matching = [
            (method, template)
            for method, template in documented
            if method == route.method and route.pattern.fullmatch(_example(template))
        ]
        if NOT_SUPPORTED.match(route.pattern.pattern):
            assert not matching, f"{route.name} answers 501 but is documented"
        else:
            assert matching, f"{route.method} {route.pattern.pattern} is served, not documented"
