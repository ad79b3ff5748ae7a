"""Schemathesis against the real server's OpenAPI schema, with an admin key and real model names.

Generated requests must never get a 5xx, and every status code and content type they get must be
the ones the schema documents (status-code and content-type conformance). Model names are set to
served models in most positive cases (a hook on the generated body), so generation and its
sampling parameters are fuzzed, not stopped at 404. Bounded (25 examples per operation and mode)
so it fits the suite's time budget; it runs in CI.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import content_type_conformance, not_a_server_error, status_code_conformance

from tests.serving.conftest import ADMIN, Server

SERVED = {
    "/v1/completions": "shakes@champion",
    "/v1/chat/completions": "shakes@champion",
    "/v1/embeddings": "all-MiniLM-L6-v2",
    "/v1/images/generations": "digits-diffusion@champion",
}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance]


def test_generated_requests_get_documented_answers_and_no_server_error(server: Server) -> None:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers=headers)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= set(SERVED)
    failures: list = []
    statuses: dict[str, list[int]] = {}
    for operation in operations:
        if operation.method.upper() == "DELETE":  # revoking keys at random is not a fuzz target
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, headers, failures, statuses.setdefault(operation.path, []))
    assert not failures, failures[:3]
    for path in SERVED:  # generation itself was reached, not only refusals
        assert any(s == 200 for s in statuses[path]), (path, statuses[path][:40])
        assert any(400 <= s < 500 for s in statuses[path]), path


def _fuzz(operation, mode, headers: dict, failures: list, statuses: list) -> None:
    strategy = operation.as_strategy(mode)

    @given(case=strategy)
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case) -> None:
        model = SERVED.get(case.path)
        # most positive cases name a served model (the rest keep what was generated: 404s)
        if model and mode == GenerationMode.POSITIVE and isinstance(case.body, dict) and len(statuses) % 4:
            case.body["model"] = model
            if case.body.get("max_tokens"):
                case.body["max_tokens"] = min(case.body["max_tokens"], 32)
        response = case.call(headers=headers, timeout=60)
        statuses.append(response.status_code)
        try:
            case.validate_response(response, checks=CHECKS)
        except AssertionError as exc:  # schemathesis raises a FailureGroup (an AssertionError)
            failures.append((case.method, case.path, case.body, response.status_code, str(exc)[:400]))

    try:
        check()
    except Unsatisfiable:  # e.g. GET /health has no input to make invalid
        assert mode == GenerationMode.NEGATIVE
