"""Property-based fuzzing of the live server from its own OpenAPI schema (bounded, for CI).

schemathesis generates requests from /openapi.json, valid and invalid, and
checks every answer: never a 5xx, status codes and bodies as the schema
documents them. Generation lengths are capped so one example stays cheap on
the tiny model.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from server_utils import shared_server  # noqa: E402

MAX_EXAMPLES = 12
MAX_GENERATED_TOKENS = 8
MAX_N = 4
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api_schema():
    return schemathesis.openapi.from_url(shared_server().url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


def _bound_work(body: object) -> None:
    """Keep valid requests cheap: cap how many tokens and choices one example may ask for."""
    if not isinstance(body, dict):
        return
    for key, cap in (("max_tokens", MAX_GENERATED_TOKENS), ("max_completion_tokens", MAX_GENERATED_TOKENS),
                     ("n", MAX_N), ("best_of", MAX_N), ("min_tokens", MAX_GENERATED_TOKENS)):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            body[key] = cap
    if "messages" in body and "max_tokens" not in body and "max_completion_tokens" not in body:
        body["max_tokens"] = MAX_GENERATED_TOKENS  # chat's default is the rest of the context


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_conforms_and_never_5xx(case):
    _bound_work(case.body)
    case.call_and_validate(checks=CHECKS, timeout=60)


@pytest.mark.parametrize("path, body", [
    ("/v1/completions", {"prompt": "Hello", "max_tokens": 4, "stream": True, "logprobs": 2,
                         "stream_options": {"include_usage": True}}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": True,
                              "logprobs": True, "top_logprobs": 2, "n": 2}),
])
def test_streams_conform(api_schema, path, body):
    """Streaming answers are rare among generated cases; check both kinds explicitly."""
    case = api_schema[path]["POST"].Case(body=body, media_type="application/json")
    response = case.call_and_validate(checks=CHECKS, timeout=60)
    assert response.status_code == 200 and response.text.rstrip().endswith("data: [DONE]")
