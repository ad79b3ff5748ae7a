"""Schemathesis against the real server's OpenAPI schema: generated requests never get a 5xx.

Bounded (25 examples per operation) so it fits the suite's time budget; it runs in CI.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.serving.conftest import Server


def test_no_generated_request_gets_a_server_error(server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/completions", "/v1/chat/completions", "/v1/embeddings"}
    failures, statuses = [], []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, server, failures, statuses)
    assert len(statuses) > 100 and any(s < 300 for s in statuses) and any(400 <= s < 500 for s in statuses)
    assert not failures, failures[:3]


def _fuzz(operation, mode, server: Server, failures: list, statuses: list) -> None:
    strategy = operation.as_strategy(mode)

    @given(case=strategy)
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case) -> None:
        response = case.call(headers=server.headers(), timeout=60)
        statuses.append(response.status_code)
        if response.status_code >= 500:
            failures.append((case.method, case.path, case.body, response.status_code, response.text[:300]))

    try:
        check()
    except Unsatisfiable:  # e.g. GET /health has no input to make invalid
        assert mode == GenerationMode.NEGATIVE
