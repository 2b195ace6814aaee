"""schemathesis against the service's own OpenAPI schema: generated requests (including
malformed uploads) never get a 5xx, and every answer's status, content type and body
conform to the schema."""

import pytest

pytestmark = pytest.mark.slow  # schemathesis

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from schemathesis.checks import positive_data_acceptance  # noqa: E402


@pytest.fixture(scope="module")
def api_schema(tiny_trained):
    from medxfer.serve import create_app

    return schemathesis.openapi.from_asgi("/openapi.json", create_app(tiny_trained / "m", max_upload_mb=1.0))


def test_the_service_honours_its_schema(api_schema):
    # schemathesis's own pytest plugin does not run under pytest 9 yet: one Hypothesis test
    # per operation instead, from the operation's strategy.
    ops = [r.ok() for r in api_schema.get_all_operations()]
    assert {(o.method.upper(), o.path) for o in ops} >= {("POST", "/predict"), ("GET", "/health")}
    for op in ops:
        @given(case=op.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def run(case):
            # Every check but "schema-valid data must be accepted": the schema says "a file",
            # and arbitrary bytes are rightly refused with 415/422 (documented responses).
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        run()
