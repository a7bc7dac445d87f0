"""What a production deployment leans on: rate limits, request logs, the OpenAPI document, CORS."""

import itertools
import json
import re
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator

from conftest import ROOT, running_service, service_environment

PROBLEM = "application/problem+json"
FRONTEND = "http://localhost:3000"
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# ---------------------------------------------------------------------------------------
# Rate limits. Two services with tight limits, each started once; every test is a client of
# its own (a loopback address of its own, 127.0.0.N, or forwarded addresses of its own), so
# budgets never leak between tests. The limits live in the process, before any query: SQLite
# is enough.
# ---------------------------------------------------------------------------------------

TIGHT = {"RATE_LIMIT_SIGNUP": "2/minute", "RATE_LIMIT_LOGIN": "2/minute", "RATE_LIMIT_LOGIN_EMAIL": "2/minute"}
loopback_addresses = (f"127.0.0.{n}" for n in itertools.count(2))  # 127.0.0.1 is left for the proxy tests
forwarded_addresses = (f"198.51.100.{n}" for n in itertools.count(1))


@contextmanager
def tight_service(tmp_path_factory, issuer, **overrides):
    directory = tmp_path_factory.mktemp("rate-limits")
    env = service_environment(f"sqlite:///{directory / 'todo.db'}", issuer, **TIGHT, **overrides)
    with running_service(env, directory / "service.log") as service:
        yield service


@pytest.fixture(scope="session")
def limited(tmp_path_factory, issuer):
    """Tight limits, TRUSTED_PROXIES unset. For the run, not the module: the module's tests run
    in three parts (on SQLite, on PostgreSQL, on neither), and a module's service would be
    started again for each."""
    with tight_service(tmp_path_factory, issuer) as service:
        yield service


@pytest.fixture(scope="module")
def behind_proxy(tmp_path_factory, issuer):
    """Tight limits, with the proxy on 127.0.0.1 trusted."""
    with tight_service(tmp_path_factory, issuer, TRUSTED_PROXIES="127.0.0.1") as service:
        yield service


@contextmanager
def client_at(service, address=None):
    """A client whose connections come from this loopback address (a fresh one by default)."""
    transport = httpx.HTTPTransport(local_address=address or next(loopback_addresses))
    with httpx.Client(base_url=service.url, transport=transport, timeout=30) as client:
        yield client


def signup(client, headers=None):
    body = {"email": f"user-{uuid.uuid4().hex[:12]}@example.com", "password": "a-good-password"}
    return client.post("/api/auth/signup", json=body, headers=headers)


def login(client, email=None):
    body = {"email": email or f"nobody-{uuid.uuid4().hex[:12]}@example.com", "password": "a-wrong-password"}
    return client.post("/api/auth/login", json=body)


def assert_too_many_requests(response, period=60):
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["status"] == 429
    retry_after = response.headers["retry-after"]
    assert re.fullmatch(r"[0-9]+", retry_after) and 0 < int(retry_after) <= period


def test_signup_is_limited_per_client_with_a_429_and_retry_after(limited):
    with client_at(limited) as client, client_at(limited) as other_client:
        assert [signup(client).status_code for _ in range(2)] == [201, 201]
        assert_too_many_requests(signup(client))
        assert signup(other_client).status_code == 201


def test_login_is_limited_per_client_with_a_429_and_retry_after(limited):
    with client_at(limited) as client, client_at(limited) as other_client:
        assert [login(client).status_code for _ in range(2)] == [401, 401]
        assert_too_many_requests(login(client))
        assert login(other_client).status_code == 401


def test_login_is_limited_per_email_whichever_client_asks(limited):
    email = f"target-{uuid.uuid4().hex[:12]}@example.com"
    for _ in range(2):
        with client_at(limited) as client:
            assert login(client, email).status_code == 401
    with client_at(limited) as client:
        assert_too_many_requests(login(client, email))
        assert login(client).status_code == 401  # another email, from the same client


def test_the_login_limit_per_email_ignores_its_case_and_spaces(limited):
    name = f"target-{uuid.uuid4().hex[:12]}"
    spellings = [f"{name}@example.com", f"{name.upper()}@Example.COM", f" {name}@EXAMPLE.com "]
    statuses = []
    for email in spellings:
        with client_at(limited) as client:
            statuses.append(login(client, email).status_code)
    assert statuses == [401, 401, 429]


def test_behind_a_trusted_proxy_each_forwarded_address_is_a_client_of_its_own(behind_proxy):
    first, second = next(forwarded_addresses), next(forwarded_addresses)
    with client_at(behind_proxy, "127.0.0.1") as proxy:
        assert [signup(proxy, {"X-Forwarded-For": first}).status_code for _ in range(2)] == [201, 201]
        assert_too_many_requests(signup(proxy, {"X-Forwarded-For": first}))
        assert signup(proxy, {"X-Forwarded-For": second}).status_code == 201


def test_x_forwarded_for_from_a_peer_that_is_not_a_trusted_proxy_is_ignored(behind_proxy):
    with client_at(behind_proxy) as client:
        for _ in range(2):
            assert signup(client, {"X-Forwarded-For": next(forwarded_addresses)}).status_code == 201
        assert_too_many_requests(signup(client, {"X-Forwarded-For": next(forwarded_addresses)}))


def test_without_trusted_proxies_x_forwarded_for_is_ignored_even_from_loopback(limited):
    # uvicorn trusts 127.0.0.1 by default when proxy headers are on: the service must not.
    with client_at(limited, "127.0.0.1") as client:
        for _ in range(2):
            assert signup(client, {"X-Forwarded-For": next(forwarded_addresses)}).status_code == 201
        assert_too_many_requests(signup(client, {"X-Forwarded-For": next(forwarded_addresses)}))


# ---------------------------------------------------------------------------------------
# Request logs: one JSON line per request, with a request id; never a secret.
# ---------------------------------------------------------------------------------------


def request_lines(service, request_id, wait=True) -> list[dict]:
    """The log's request lines with this request id (written just after the response is sent)."""
    deadline = time.monotonic() + (5 if wait else 0)
    while True:
        lines = []
        for line in service.log().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # uvicorn's own start and stop lines
            if isinstance(entry, dict) and entry.get("request_id") == request_id:
                lines.append(entry)
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_each_request_writes_one_json_line_with_route_template_status_duration_user_and_request_id(client, service, alice):
    request_id = f"test-{uuid.uuid4()}"
    response = client.get(alice.tasks_url(), headers={**alice.headers, "X-Request-ID": request_id})
    assert response.status_code == 200
    [line] = request_lines(service, request_id)
    assert {name: line[name] for name in ("method", "route", "status", "user_id", "request_id")} == {
        "method": "GET",
        "route": "/api/{user_id}/tasks",
        "status": 200,
        "user_id": alice.id,
        "request_id": request_id,
    }
    assert isinstance(line["duration_ms"], (int, float)) and 0 <= line["duration_ms"] < 10_000


def test_a_request_line_is_stamped_with_the_utc_time_to_the_millisecond(client, service):
    before = datetime.now(UTC)
    request_id = client.get("/healthz").headers["x-request-id"]
    [line] = request_lines(service, request_id)
    seen = datetime.now(UTC)  # the line is stamped as the request ends, which may come after the client has its answer
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    logged_at = datetime.fromisoformat(line["time"])
    assert before - timedelta(milliseconds=1) <= logged_at <= seen


def test_a_sane_x_request_id_is_echoed(client):
    request_id = f"frontend:{uuid.uuid4().hex}.1_a-b"
    assert client.get("/healthz", headers={"X-Request-ID": request_id}).headers["x-request-id"] == request_id


def test_without_an_x_request_id_one_is_generated_echoed_and_logged(client, service):
    request_id = client.get("/healthz").headers["x-request-id"]
    assert SANE_REQUEST_ID.fullmatch(request_id)
    assert client.get("/healthz").headers["x-request-id"] != request_id
    [line] = request_lines(service, request_id)
    assert line["route"] == "/healthz"


@pytest.mark.parametrize(
    "hostile",
    ["a" * 129, "two words", "tab\tinside", '{"injected": true}', "quote\"and'apostrophe", b"caf\xc3\xa9", "semi;colon"],
    ids=["too-long", "space", "tab", "json", "quotes", "non-ascii", "semicolon"],
)
def test_a_hostile_x_request_id_is_replaced(client, service, hostile):
    response = client.get("/healthz", headers={"X-Request-ID": hostile})
    echoed = response.headers["x-request-id"]
    assert echoed != (hostile.decode("latin-1") if isinstance(hostile, bytes) else hostile)
    assert SANE_REQUEST_ID.fullmatch(echoed)
    [line] = request_lines(service, echoed)
    assert line["route"] == "/healthz"


def test_a_folded_header_cannot_smuggle_a_line_into_the_log(service):
    """A newline travels inside an HTTP/1.1 header only as obsolete line folding: the folded
    value is not a sane id, so it is replaced, and the injected text reaches no log line."""
    host, port = service.url.removeprefix("http://").split(":")
    marker = f"injected-{uuid.uuid4().hex}"
    request = f'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-ID: a\r\n {{"{marker}": 1}}\r\nConnection: close\r\n\r\n'
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head = answer.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
    [echoed] = re.findall(r"^x-request-id: (.*)$", head, flags=re.MULTILINE)
    assert SANE_REQUEST_ID.fullmatch(echoed.strip()) and marker not in echoed
    request_lines(service, echoed.strip())
    assert marker not in service.log()


def test_no_password_token_or_hash_reaches_the_log_whatever_the_request(client, service, make_token):
    email, password, wrong = f"secret-{uuid.uuid4().hex[:8]}@example.com", f"pw{uuid.uuid4().hex}", f"wrong{uuid.uuid4().hex}"
    user = client.post("/api/auth/signup", json={"email": email, "password": password}).json()
    client.post("/api/auth/signup", json={"email": email, "password": password})  # 409
    client.post("/api/auth/signup", json={"email": "not-an-email", "password": password})  # 400
    token = client.post("/api/auth/login", json={"email": email, "password": password}).json()["access_token"]
    client.post("/api/auth/login", json={"email": email, "password": wrong})
    signed_in = {"Authorization": f"Bearer {token}"}
    task = client.post(f"/api/{user['id']}/tasks", json={"title": "a task"}, headers=signed_in).json()
    client.patch(f"/api/{user['id']}/tasks/{task['id']}", json={"completed": True}, headers=signed_in)
    client.get(f"/api/{user['id']}/tasks", headers=signed_in)
    client.get("/api/me", headers=signed_in)
    issued = make_token(user["id"])
    client.get("/api/me", headers={"Authorization": f"Bearer {issued}"})
    forged = token[: token.rindex(".") + 1] + "A" * 86  # right header and claims, wrong signature
    client.get("/api/me", headers={"Authorization": f"Bearer {forged}"})
    client.get("/api/me", headers={"Authorization": f"Basic {password}"})
    client.get(f"/api/me?access_token={token}&password={password}")
    client.get(f"/api/{token}/tasks")
    client.get(f"/api/{user['id']}/tasks/{token}", headers=signed_in)
    client.post("/api/auth/login", content=f'{{"email": "{email}", "password": "{password}"', headers={"Content-Type": "application/json"})
    last = f"last-{uuid.uuid4().hex}"
    client.get("/healthz", headers={"X-Request-ID": last})
    request_lines(service, last)  # every line before it is written too

    log = service.log()
    secrets = {
        "password": password,
        "wrong password": wrong,
        "login token": token,
        "login token signature": token.rsplit(".", 1)[1],
        "issuer token": issued,
        "issuer token signature": issued.rsplit(".", 1)[1],
        "forged token signature": forged.rsplit(".", 1)[1],
    }
    assert [name for name, secret in secrets.items() if secret in log] == []
    assert "$2b$" not in log


# ---------------------------------------------------------------------------------------
# OpenAPI: the document, the route table, and real answers against it.
# ---------------------------------------------------------------------------------------

TASK_ERRORS = {401, 403, 404, 503}
BODY_ERRORS = {400, 413}
# (method, path, success, error statuses a client must be told about, signed in), from the contract.
OPERATIONS = [
    ("POST", "/api/auth/signup", 201, {*BODY_ERRORS, 409, 429, 503}, False),
    ("POST", "/api/auth/login", 200, {*BODY_ERRORS, 401, 429, 503}, False),
    ("GET", "/api/auth/jwks", 200, set(), False),
    ("GET", "/api/me", 200, {401, 404, 503}, True),
    ("GET", "/api/{user_id}/tasks", 200, {400, *TASK_ERRORS}, True),
    ("POST", "/api/{user_id}/tasks", 201, {*BODY_ERRORS, *TASK_ERRORS, 422}, True),
    ("GET", "/api/{user_id}/tasks/{task_id}", 200, TASK_ERRORS, True),
    ("PUT", "/api/{user_id}/tasks/{task_id}", 200, {*BODY_ERRORS, *TASK_ERRORS, 412}, True),
    ("PATCH", "/api/{user_id}/tasks/{task_id}", 200, {*BODY_ERRORS, *TASK_ERRORS, 412}, True),
    ("PATCH", "/api/{user_id}/tasks/{task_id}/complete", 200, {*BODY_ERRORS, *TASK_ERRORS, 412}, True),
    ("DELETE", "/api/{user_id}/tasks/{task_id}", 204, {*TASK_ERRORS, 412}, True),
    ("GET", "/api/{user_id}/tags", 200, TASK_ERRORS, True),
    ("GET", "/api/{user_id}/changes", 200, {400, 410, *TASK_ERRORS}, True),
    ("POST", "/api/{user_id}/events/tickets", 201, TASK_ERRORS, True),
    ("GET", "/api/{user_id}/events", 200, {400, 429, *TASK_ERRORS}, True),
    ("GET", "/healthz", 200, set(), False),
    ("GET", "/readyz", 200, {503}, False),
    ("GET", "/openapi.json", 200, set(), False),
    ("GET", "/.well-known/oauth-protected-resource/mcp", 200, set(), False),
    ("GET", "/.well-known/oauth-protected-resource", 200, set(), False),
    ("POST", "/mcp", 200, {401, 403}, True),
]
OPERATION_IDS = [f"{method} {path}" for method, path, *_ in OPERATIONS]


@pytest.fixture(scope="session")
def document(limited):
    """GET /openapi.json (the document depends on neither the backend nor the rate limits)."""
    response = httpx.get(f"{limited.url}/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    return response.json()


@pytest.fixture(scope="module")
def route_table() -> set[tuple[str, str]]:
    """(METHOD, path template) of every route in todo_service.routes, read in a fresh process."""
    script = (
        "import json, todo_service\n"
        "print(json.dumps([[method, route.path_format] for route in todo_service.routes for method in sorted(route.methods - {'HEAD'})]))"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script], cwd="/", env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return {tuple(pair) for pair in json.loads(result.stdout)}


def operation(document, method, path) -> dict:
    return document["paths"][path][method.lower()]


def test_the_openapi_document_is_valid_openapi_3_1(document):
    assert document["openapi"].startswith("3.1.")
    OpenAPIV31SpecValidator(document).validate()


def test_the_openapi_document_holds_every_route_and_nothing_else(document, route_table):
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item if method != "parameters"}
    assert documented == route_table
    assert route_table == {(method, path) for method, path, *_ in OPERATIONS}  # the table below is complete


@pytest.mark.parametrize(("method", "path", "success", "errors", "signed_in"), OPERATIONS, ids=OPERATION_IDS)
def test_each_operation_documents_its_success_and_its_errors_as_problem_json(document, method, path, success, errors, signed_in):
    responses = operation(document, method, path)["responses"]
    assert [status for status in responses if status.startswith("2")] == [str(success)]
    assert errors <= {int(status) for status in responses if not status.startswith("2")}
    for status, response in responses.items():
        if not status.startswith(("2", "3")):  # a 304 has no body
            assert response["content"] == {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}, status


@pytest.mark.parametrize(("method", "path", "success", "errors", "signed_in"), OPERATIONS, ids=OPERATION_IDS)
def test_signed_in_operations_and_only_those_require_the_bearer_scheme(document, method, path, success, errors, signed_in):
    assert document["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert operation(document, method, path).get("security") == ([{"bearer": []}] if signed_in else None)


def test_the_operations_documented_as_signed_in_are_those_that_answer_401_without_a_token(document, client):
    answers = {}
    for path, item in document["paths"].items():
        for method, details in item.items():
            url = path.replace("{user_id}", "1").replace("{task_id}", "1")
            status = client.request(method.upper(), url).status_code
            answers[f"{method.upper()} {path}"] = (status == 401, "security" in details)
    assert {name: answer for name, answer in answers.items() if answer[0] != answer[1]} == {}


def schema_validator(document, schema) -> Draft202012Validator:
    root = {**schema, "components": document["components"]}
    return Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER)


def assert_documented(document, method, path, response):
    """The answer's status, content type and body are the ones the document gives for it."""
    responses = operation(document, method, path)["responses"]
    assert str(response.status_code) in responses, f"{method} {path} answered an undocumented {response.status_code}"
    documented = responses[str(response.status_code)]
    if response.status_code == 204:
        assert "content" not in documented and response.content == b""
        return
    content_type = response.headers["content-type"].partition(";")[0]
    assert content_type in documented["content"], f"{method} {path} {response.status_code}: {content_type}"
    errors = list(schema_validator(document, documented["content"][content_type]["schema"]).iter_errors(response.json()))
    assert errors == [], f"{method} {path} {response.status_code}: {[error.message for error in errors]}"


def test_task_answers_match_their_documented_schemas(document, client, alice):
    tasks, headers = alice.tasks_url(), alice.headers
    created = client.post(tasks, json={"title": "documented", "description": "a description"}, headers=headers)
    assert_documented(document, "POST", "/api/{user_id}/tasks", created)
    one = alice.tasks_url(created.json()["id"])
    assert_documented(document, "GET", "/api/{user_id}/tasks", client.get(tasks, headers=headers))
    assert_documented(document, "GET", "/api/{user_id}/tasks/{task_id}", client.get(one, headers=headers))
    assert_documented(document, "PUT", "/api/{user_id}/tasks/{task_id}", client.put(one, json={"title": "whole"}, headers=headers))
    assert_documented(document, "PATCH", "/api/{user_id}/tasks/{task_id}", client.patch(one, json={"description": None}, headers=headers))
    assert_documented(document, "PATCH", "/api/{user_id}/tasks/{task_id}/complete", client.patch(one + "/complete", json={"completed": True}, headers=headers))
    assert_documented(document, "DELETE", "/api/{user_id}/tasks/{task_id}", client.delete(one, headers=headers))


def test_account_answers_match_their_documented_schemas(document, client, alice):
    email = f"documented-{uuid.uuid4().hex[:8]}@example.com"
    assert_documented(document, "POST", "/api/auth/signup", client.post("/api/auth/signup", json={"email": email, "password": "a-good-password"}))
    assert_documented(document, "POST", "/api/auth/login", client.post("/api/auth/login", json={"email": email, "password": "a-good-password"}))
    assert_documented(document, "GET", "/api/me", client.get("/api/me", headers=alice.headers))
    assert_documented(document, "GET", "/api/auth/jwks", client.get("/api/auth/jwks"))
    assert_documented(document, "GET", "/healthz", client.get("/healthz"))
    assert_documented(document, "GET", "/readyz", client.get("/readyz"))


@pytest.mark.parametrize(
    ("method", "path", "request_kwargs", "status"),
    [
        ("POST", "/api/auth/signup", {"json": {"email": "pat@example.com", "password": "pat-password-1"}}, 409),
        ("POST", "/api/auth/signup", {"json": {"email": "bad", "password": "short"}}, 400),
        ("POST", "/api/auth/login", {"json": {"email": "pat@example.com", "password": "wrong-password"}}, 401),
        ("GET", "/api/me", {"headers": {"Authorization": "Bearer not.a.token"}}, 401),
        ("GET", "/api/{user_id}/tasks", {"params": {"limit": "0"}}, 400),
        ("POST", "/api/{user_id}/tasks", {"content": b"x" * (1024 * 1024 + 1), "headers": {"Content-Type": "application/json"}}, 413),
        ("GET", "/api/{user_id}/tasks/{task_id}", {}, 404),
        ("PATCH", "/api/{user_id}/tasks/{task_id}/complete", {"json": {"completed": "yes"}}, 400),
        ("DELETE", "/api/{other_id}/tasks/{task_id}", {}, 403),
    ],
    ids=["409-taken", "400-invalid-body", "401-login", "401-bad-token", "400-query", "413", "404", "400-not-boolean", "403"],
)
def test_error_answers_match_the_documented_problem_schema(document, client, alice, pat, method, path, request_kwargs, status):
    url = path.replace("{user_id}", str(alice.id)).replace("{other_id}", str(alice.id + 1000)).replace("{task_id}", "999999")
    kwargs = {**request_kwargs, "headers": {**alice.headers, **request_kwargs.get("headers", {})}}
    response = client.request(method, url, **kwargs)
    assert response.status_code == status, response.text
    assert_documented(document, method, path.replace("{other_id}", "{user_id}"), response)


@pytest.mark.parametrize(
    ("schema", "body"),
    [
        ("Signup", {"email": "a@example.com"}),
        ("Signup", {"email": "a@example.com", "password": "a-good-password", "admin": True}),
        ("TaskFields", {"title": "t", "completed": "yes"}),
        ("TaskFields", {"title": "t", "id": 1}),
        ("TaskFields", {"title": ""}),
        ("TaskChanges", {}),
        ("TaskChanges", {"title": None}),
        ("Completion", {"completed": 1}),
    ],
    ids=["signup-missing-password", "signup-unknown-field", "task-completed-not-boolean", "task-server-field", "task-empty-title", "changes-empty", "changes-null-title", "completion-integer"],
)
def test_the_documented_request_schemas_refuse_bodies_the_service_refuses(document, schema, body):
    assert not schema_validator(document, {"$ref": f"#/components/schemas/{schema}"}).is_valid(body)


# ---------------------------------------------------------------------------------------
# CORS: the configured frontend origin, and no other.
# ---------------------------------------------------------------------------------------


def preflight(client, origin, method="POST", headers="authorization, content-type"):
    return client.options(
        "/api/1/tasks",
        headers={"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers},
    )


def test_a_preflight_from_the_frontend_origin_allows_authorization_and_content_type(client):
    response = preflight(client, FRONTEND)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == FRONTEND
    allowed = {header.strip().lower() for header in response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert "POST" in response.headers["access-control-allow-methods"]


@pytest.mark.parametrize("origin", ["https://evil.example", "http://localhost:3001", "null"], ids=["other-site", "other-port", "null"])
def test_a_preflight_from_another_origin_is_not_allowed(client, origin):
    response = preflight(client, origin)
    assert response.status_code >= 400
    assert "access-control-allow-origin" not in response.headers


def test_an_answer_to_another_origin_carries_no_cors_headers(client):
    response = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    "origin", [FRONTEND, "https://evil.example", None], ids=["the-frontend", "another-origin", "no-origin"]
)
def test_every_answer_says_it_varies_by_origin_so_a_shared_cache_keeps_them_apart(client, origin):
    response = client.get("/healthz", headers={} if origin is None else {"Origin": origin})
    assert response.status_code == 200
    assert [value.strip() for value in response.headers.get("vary", "").split(",")] == ["Origin"]
    assert ("access-control-allow-origin" in response.headers) == (origin == FRONTEND)


def test_the_frontend_can_read_a_401_and_the_retry_after_and_request_id_headers(client):
    response = client.get("/api/me", headers={"Origin": FRONTEND, "Authorization": "Bearer not.a.token"})
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == FRONTEND
    exposed = {header.strip().lower() for header in response.headers["access-control-expose-headers"].split(",")}
    assert {"retry-after", "x-request-id"} <= exposed
