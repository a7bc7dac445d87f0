"""Schema fuzzing: schemathesis drives the running service from its own /openapi.json.

Every operation of the document gets generated requests, valid and invalid, sent over real
HTTP with a valid bearer token for alice. Her id (and the ids of tasks she owns) replace the
generated path ids most of the time, so requests reach past 403 and 404 into the handlers;
the rest keep generated ids, which answer 403 or 404. Each response goes through every
schemathesis check but one (the Allow header, tested on its own below): no 5xx, a documented
status, content type and body schema, valid data accepted and invalid data rejected, no
answer without the token, methods the document does not list refused, deleted tasks gone.
"""

import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

SEED = 20251125
TASKS_FOR_ALICE = 8
PROBLEM = "application/problem+json"
LONG_EMAIL = "a" * 64 + "@" + "b" * 60 + "." + "c" * 60 + "." + "d" * 60 + "." + "e" * 60 + ".com"  # 312 characters


@pytest.fixture
def alice_task_ids(create_task):
    return [create_task(title=f"fuzz target {n}")["id"] for n in range(TASKS_FOR_ALICE)]


@pytest.fixture
def api_schema(request, service, alice, alice_task_ids):
    # schemathesis 4.32.5's lazy loader renames the test through `node._nodeid`, which pytest 9.2
    # no longer has; giving it one back keeps the per-operation subtests working.
    request.node._nodeid = request.node.nodeid
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {"mode": "all", "max-examples": 25, "deterministic": True},
            "auth": {"openapi": {"bearer": {"bearer": alice.token()}}},
            "dictionaries": {"alice": {"values": [alice.id]}, "alice-tasks": {"values": alice_task_ids}},
            "parameters": {
                "path.user_id": {"dictionary": "alice", "probability": 0.8},
                "path.task_id": {"dictionary": "alice-tasks", "probability": 0.6},
            },
            # The Allow header of a 405 has a test of its own below, so that while it is wrong
            # the other checks still run on every operation (a failing case ends its operation).
            # 412 (a stale If-Match) and 422 (an Idempotency-Key used before with another body)
            # refuse valid requests because of what came before them, as 409 does.
            "checks": {
                "allow_header_conformance": {"enabled": False},
                "positive_data_acceptance": {"expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "412", "422", "429", "5xx"]},
            },
        }
    )
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json", config=config)
    schema.hook(filter_case)
    return schema


def filter_case(context, case):
    """Leave out schema-valid requests the service rightly answers 400 for what JSON Schema cannot
    say: passwords outside bcrypt's 8 to 72 UTF-8 bytes (JSON Schema's lengths count
    characters), and the dates of a task, which depend on one another and on the task as it is
    (a recurrence or a reminder before the due date needs a due date; a rule needs FREQ, once,
    and a date), tested in tests/test_recurrence.py; and a login's `resource` other than the
    service's MCP_RESOURCE, a setting the document names in words (a const would bake one
    deployment's URL into generated types)."""
    body = case.body if isinstance(case.body, dict) else {}
    password = body.get("password")
    positive = case.meta is None or case.meta.generation.mode == GenerationMode.POSITIVE
    if case.operation.label == "POST /api/auth/signup" and positive and isinstance(password, str) and not 8 <= len(password.encode()) <= 72:
        return False
    if case.operation.label == "POST /api/auth/login" and positive and "resource" in body:
        return False
    query = case.query if isinstance(case.query, dict) else {}
    if case.operation.label == "GET /api/{user_id}/events" and "since" not in query:
        return False  # a live stream, which stays open: tests/test_events.py reads them
    if case.operation.label == "GET /api/{user_id}/changes" and positive and "since" in query:
        return False  # only a cursor the service gave is one; a made-up one is rightly 400
    reminders = body.get("reminders") if isinstance(body.get("reminders"), list) else []
    dated = body.get("recurrence") is not None or any(isinstance(reminder, dict) and "minutes_before" in reminder for reminder in reminders)
    return not (positive and dated)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_its_openapi_document_says(case):
    case.call_and_validate()


def test_a_method_the_document_does_not_list_is_405_allowing_every_documented_one(client, alice, create_task):
    """RFC 9110: a 405 names all the methods the resource supports, not those of one route."""
    document = client.get("/openapi.json").json()
    ids = {"user_id": alice.id, "task_id": create_task()["id"]}
    expected, allowed = {}, {}
    for path, operations in document["paths"].items():
        documented = {method.upper() for method in operations}
        expected[path] = documented | ({"HEAD"} if "GET" in documented else set())
        response = client.options(path.format(**ids), headers=alice.headers)
        assert response.status_code == 405, (path, response.status_code)
        allowed[path] = {method.strip() for method in response.headers.get("allow", "").split(",") if method.strip()}
    assert allowed == expected


# ---------------------------------------------------------------------------------------
# What the fuzzer found in longer runs than CI's (NUL characters), and the neighbours its
# failures pointed to (blank titles, long emails): fixed cases, so that every run checks them.
# ---------------------------------------------------------------------------------------


def test_login_with_a_nul_in_the_email_is_the_same_401(client):
    """PostgreSQL text cannot hold NUL: the lookup must not reach the database with one."""
    response = client.post("/api/auth/login", json={"email": "\u0000x@example.com", "password": "a-good-password"})
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert response.json() == {"type": "about:blank", "title": "Unauthorized", "status": 401, "detail": "The email or the password is wrong."}


@pytest.mark.parametrize(
    ("operation", "body"),
    [
        pytest.param("signup", {"email": "nul.password@example.com", "password": "pass\u0000word"}, id="signup-password-nul"),
        pytest.param("signup", {"email": LONG_EMAIL, "password": "a-good-password"}, id="signup-email-over-254"),
        pytest.param("create_task", {"title": "   "}, id="create-title-blank"),
        pytest.param("create_task", {"title": "a\u0000b"}, id="create-title-nul"),
        pytest.param("create_task", {"title": "t", "description": "a\u0000b"}, id="create-description-nul"),
        pytest.param("update_task", {"title": " \t "}, id="patch-title-blank"),
    ],
)
def test_a_body_the_service_rejects_is_one_its_document_rejects_too(client, alice, create_task, operation, body):
    """The fuzzer sends what the document allows and expects it accepted; each of these was a 400."""
    document = client.get("/openapi.json").json()
    path, method = next(
        (path, method) for path, methods in document["paths"].items() for method, spec in methods.items() if spec["operationId"] == operation
    )
    response = client.request(method, path.format(user_id=alice.id, task_id=create_task()["id"]), json=body, headers=alice.headers)
    assert response.status_code == 400, response.text
    request_schema = document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    validator = jsonschema.Draft202012Validator({**request_schema, "components": document["components"]})
    assert not validator.is_valid(body), f"the document allows {body!r}, which the service answers 400"
