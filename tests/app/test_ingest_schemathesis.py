"""schemathesis against the app's own OpenAPI schema: every operation, stateless, a bounded number of cases.

Each generated request (valid and deliberately invalid: wrong types, missing fields, garbage bodies,
unsupported methods) must get a response that is not a server error, whose status code is documented
for the operation, and whose body matches the documented schema. Requests go through the test client of
a migrated registry, so the in-process worker and lifespan behave as in production.
"""

from __future__ import annotations

import os

import requests
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.main import create_app

schema = schemathesis.openapi.from_dict(create_app().openapi())
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# A bound per operation that keeps the whole run well under a minute on two shared cores.
EXAMPLES = int(os.environ.get("EXPRSSL_SCHEMATHESIS_EXAMPLES", "10"))


def send(client: TestClient, case: schemathesis.Case) -> object:
    """Send ``case`` exactly as schemathesis' requests transport would encode it, through ``client``."""
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    fields = {k: kwargs.get(k) for k in ("method", "url", "headers", "params", "cookies", "json", "data", "files")}
    prepared = requests.Request(**fields).prepare()
    response = client.request(
        prepared.method or "GET", prepared.url or "/", headers=dict(prepared.headers), content=prepared.body
    )
    response.request.read()  # schemathesis reports the request body with any failure
    return response


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms_to_its_schema(case: schemathesis.Case, client: TestClient) -> None:
    case.validate_response(send(client, case), checks=CHECKS)
