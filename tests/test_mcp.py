"""The MCP endpoint, through the official SDK's own client over real HTTP to the running service.

Tokens for /mcp carry `aud` = the service's MCP_RESOURCE (conftest sets it to the service's own
URL): Better Auth's users get them from the test issuer, the password account from the service's
own login with `resource`. Every tool call goes through `mcp.Client`, in both protocol modes where
the mode matters; what a tool wrote is checked through the REST API, as a frontend would see it.
"""

import asyncio
import base64
import hashlib
import json
import secrets
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import httpx2
import jwt
import pytest
from mcp import Client
from mcp.client.auth.utils import extract_resource_metadata_from_www_auth, handle_protected_resource_response
from mcp.client.streamable_http import streamable_http_client

from conftest import AUDIENCE, ISSUER, own_token
from test_better_auth import new_better_auth_user, started_stack

PROBLEM = "application/problem+json"
# The two protocol eras the SDK client speaks: "auto" discovers the current revision
# (2026-07-28, stateless per request), "legacy" forces the initialize handshake (2025-11-25).
MODES = {"auto": "2026-07-28", "legacy": "2025-11-25"}
TOOL_ARGUMENTS = {
    "add_task": {"title", "description", "priority", "due_at", "tags"},
    "list_tasks": {"status", "q", "tag", "limit"},
    "complete_task": {"task_id"},
    "update_task": {"task_id", "title", "description", "priority", "due_at", "tags"},
    "delete_task": {"task_id"},
}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def resource(service) -> str:
    return f"{service.url}/mcp"


@pytest.fixture
def mcp_token(service, issuer):
    """mcp_token(user): a token for /mcp that speaks for this user: Better Auth's for a linked
    user, the service's own (as login with `resource` gives it) for a password account."""

    def token(user) -> str:
        if user.subject is None:
            return own_token(user.id, aud=resource(service))
        return issuer.token(user.subject, email=user.email, aud=resource(service))

    return token


async def in_session(service, token, work, mode="auto"):
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with Client(streamable_http_client(resource(service), http_client=http), mode=mode) as client:
            return await work(client)


def session(service, token, work, mode="auto"):
    """Run work(client) on an SDK client connected to /mcp with this token."""
    return asyncio.run(in_session(service, token, work, mode))


@pytest.fixture
def call(service, mcp_token):
    """call(user, tool, arguments, mode="auto"): the tool's result, called as that user."""

    def call_tool(user, tool, arguments, mode="auto"):
        return session(service, mcp_token(user), lambda client: client.call_tool(tool, arguments), mode)

    return call_tool


def api_task(client, user, task_id):
    return client.get(user.tasks_url(task_id), headers=user.headers)


# ---------------------------------------------------------------------------------------
# Tools.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_both_protocol_modes_connect_and_list_the_five_tools(service, alice, mode, mcp_token):
    async def work(client):
        return client.protocol_version, await client.list_tools()

    version, listed = session(service, mcp_token(alice), work, mode)
    assert version == MODES[mode]
    assert {tool.name: set(tool.input_schema["properties"]) for tool in listed.tools} == TOOL_ARGUMENTS


def test_every_tool_publishes_an_output_schema(service, alice, mcp_token):
    listed = session(service, mcp_token(alice), lambda client: client.list_tools())
    schemas = {tool.name: tool.output_schema for tool in listed.tools}
    assert all(schema and schema["type"] == "object" for schema in schemas.values()), schemas
    task_fields = {"id", "user_id", "title", "description", "completed", "priority", "due_at", "tags", "created_at", "updated_at"}
    assert task_fields <= set(schemas["add_task"]["properties"])
    assert set(schemas["list_tasks"]["properties"]) == {"tasks", "total"}
    assert set(schemas["delete_task"]["properties"]) == {"id", "deleted"}


@pytest.mark.parametrize("mode", MODES)
def test_add_task_answers_the_task_the_api_then_serves(service, client, alice, mode, call):
    arguments = {"title": "  Buy milk ", "priority": "high", "due_at": "2026-12-24T18:00:00+01:00", "tags": ["Home", "home"]}
    result = call(alice, "add_task", arguments, mode)
    assert not result.is_error, result.content
    task = result.structured_content
    assert (task["user_id"], task["title"], task["priority"], task["due_at"], task["tags"], task["completed"]) == (
        alice.id, "Buy milk", "high", "2026-12-24T17:00:00.000000Z", ["home"], False,
    )
    assert json.loads(result.content[0].text) == task
    assert api_task(client, alice, task["id"]).json() == task


@pytest.mark.parametrize(
    ("arguments", "titles", "total"),
    [
        ({}, ["c pending work", "b done", "a pending home"], 3),
        ({"status": "pending"}, ["c pending work", "a pending home"], 2),
        ({"status": "completed"}, ["b done"], 1),
        ({"q": "PENDING"}, ["c pending work", "a pending home"], 2),
        ({"tag": "Work"}, ["c pending work"], 1),
        ({"limit": 1}, ["c pending work"], 3),
    ],
    ids=["all", "pending", "completed", "q", "tag", "limit-keeps-total"],
)
def test_list_tasks_filters_and_counts(service, create_task, alice, arguments, titles, total, call):
    create_task(title="a pending home", tags=["home"])
    create_task(title="b done", completed=True)
    create_task(title="c pending work", tags=["work"])
    result = call(alice, "list_tasks", arguments)
    assert not result.is_error, result.content
    assert [task["title"] for task in result.structured_content["tasks"]] == titles
    assert result.structured_content["total"] == total


def test_complete_task_marks_it_done(service, client, create_task, alice, call):
    task = create_task()
    result = call(alice, "complete_task", {"task_id": task["id"]})
    assert not result.is_error, result.content
    assert result.structured_content["completed"] is True
    assert api_task(client, alice, task["id"]).json()["completed"] is True


def test_update_task_changes_only_the_arguments_given(service, client, create_task, alice, call):
    task = create_task(title="old", description="keep me", priority="low", tags=["x"])
    result = call(alice, "update_task", {"task_id": task["id"], "title": "new"})
    assert not result.is_error, result.content
    after = api_task(client, alice, task["id"]).json()
    assert (after["title"], after["description"], after["priority"], after["tags"]) == ("new", "keep me", "low", ["x"])
    assert result.structured_content == after


@pytest.mark.parametrize("mode", MODES)
def test_update_task_with_null_clears_a_nullable_field(service, client, create_task, alice, call, mode):
    task = create_task(description="to clear", due_at="2026-12-24T18:00:00Z")
    result = call(alice, "update_task", {"task_id": task["id"], "description": None}, mode)
    assert not result.is_error, result.content
    after = api_task(client, alice, task["id"]).json()
    assert (after["description"], after["due_at"]) == (None, "2026-12-24T18:00:00.000000Z")


def test_delete_task_answers_its_id_and_the_task_is_gone(service, client, create_task, alice, call):
    task = create_task()
    result = call(alice, "delete_task", {"task_id": task["id"]})
    assert not result.is_error, result.content
    assert result.structured_content == {"id": task["id"], "deleted": True}
    assert api_task(client, alice, task["id"]).status_code == 404


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("complete_task", {}),
        ("update_task", {"title": "taken over"}),
        ("delete_task", {}),
    ],
    ids=["complete", "update", "delete"],
)
def test_another_users_task_is_a_tool_error_and_nothing_changes(service, client, create_task, alice, bob, tool, arguments, call):
    task = create_task(user=alice)
    result = call(bob, tool, {"task_id": task["id"], **arguments})
    assert result.is_error
    assert result.content[0].text == "No such task for this user."
    assert result.structured_content is None
    assert api_task(client, alice, task["id"]).json() == task


def test_list_tasks_shows_only_the_callers_tasks(service, create_task, alice, bob, call):
    create_task(user=alice, title="alice's")
    result = call(bob, "list_tasks", {})
    assert result.structured_content == {"tasks": [], "total": 0}


@pytest.mark.parametrize(
    ("tool", "arguments", "text"),
    [
        ("add_task", {"title": "   "}, "The arguments are not valid. title: must be 1 to 255 characters once the blanks around it are trimmed"),
        ("add_task", {"title": "x", "completed": True}, "The arguments are not valid. completed: is not an argument of add_task"),
        ("add_task", {"title": "x", "user_id": 1}, "The arguments are not valid. user_id: is not an argument of add_task"),
        ("add_task", {"title": "x", "due_at": "2026-12-24"}, "The arguments are not valid. due_at: must be an RFC 3339 date-time with an offset, like 2026-12-24T18:00:00+01:00"),
        ("add_task", {"title": "x", "tags": ["a,b"]}, "The arguments are not valid. tags.0: must be 1 to 32 characters once trimmed, without commas"),
        ("update_task", {"task_id": 1, "title": None}, "The arguments are not valid. title: Input should be a valid string"),
        ("update_task", {"task_id": 1}, "Name at least one field to change. body: must not be empty"),
        ("list_tasks", {"q": ""}, "The query parameter q must be 1 to 200 characters. q: must be 1 to 200 characters"),
    ],
    ids=["blank-title", "not-an-argument", "user-id", "date-without-time", "tag-with-comma", "null-title", "no-change", "empty-q"],
)
def test_bad_arguments_are_a_tool_error_with_the_apis_message(service, client, alice, tool, arguments, text, call):
    result = call(alice, tool, arguments)
    assert result.is_error
    assert result.content[0].text == text
    assert client.get(alice.tasks_url(), headers=alice.headers).json() == []


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("add_task", {"priority": "high"}),
        ("add_task", {"title": "x", "priority": "High"}),
        ("list_tasks", {"limit": 101}),
        ("list_tasks", {"status": "done"}),
        ("complete_task", {"task_id": "5"}),
        ("delete_task", {"task_id": 0}),
    ],
    ids=["no-title", "priority-case", "limit-over-100", "unknown-status", "task-id-as-string", "task-id-zero"],
)
def test_arguments_outside_the_input_schema_are_a_tool_error(service, client, alice, tool, arguments, call):
    result = call(alice, tool, arguments)
    assert result.is_error
    assert result.content[0].text.startswith(f"Error executing tool {tool}: ")
    assert client.get(alice.tasks_url(), headers=alice.headers).json() == []


def test_a_linked_user_is_the_same_account_at_mcp_and_on_the_api(service, create_task, alice, call):
    task = create_task(user=alice, title="made on the API")
    result = call(alice, "list_tasks", {})
    assert [found["id"] for found in result.structured_content["tasks"]] == [task["id"]]


# ---------------------------------------------------------------------------------------
# The resource server: tokens, audiences, the 401 challenge, metadata, origins, login.
# ---------------------------------------------------------------------------------------


def challenge(service, *params) -> str:
    metadata = f'resource_metadata="{service.url}/.well-known/oauth-protected-resource/mcp"'
    return ", ".join([f"Bearer {metadata}", *params])


def post_mcp(service, token=None, **headers):
    authorization = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.post(resource(service), json=INITIALIZE, headers={**MCP_HEADERS, **authorization, **headers}, timeout=30)


def test_no_token_is_401_naming_the_resource_metadata(service):
    response = post_mcp(service, Host="attacker.example")
    assert (response.status_code, response.headers["content-type"]) == (401, PROBLEM)
    assert response.headers["www-authenticate"] == challenge(service)
    assert response.json()["detail"] == "Send an access token: Authorization: Bearer <token>."


def test_the_sdk_oauth_client_finds_the_metadata_from_the_challenge(service):
    """What the SDK's own OAuth client does with a 401: read resource_metadata, fetch it, validate it."""

    async def discover():
        async with httpx2.AsyncClient(timeout=30) as http:
            refused = await http.post(resource(service), json=INITIALIZE, headers=MCP_HEADERS)
            url = extract_resource_metadata_from_www_auth(refused)
            return url, await handle_protected_resource_response(await http.get(url))

    url, metadata = asyncio.run(discover())
    assert url == f"{service.url}/.well-known/oauth-protected-resource/mcp"
    assert (str(metadata.resource), [str(server) for server in metadata.authorization_servers]) == (resource(service), [ISSUER])


@pytest.mark.parametrize(
    "token",
    [
        lambda service, alice, issuer: alice.token(),
        lambda service, alice, issuer: issuer.token(alice.subject, aud=[AUDIENCE, "https://other.example/mcp"]),
        lambda service, alice, issuer: issuer.token(alice.subject, aud=resource(service), iss="https://other.example"),
        lambda service, alice, issuer: issuer.token(alice.subject, aud=resource(service), exp=1),
        lambda service, alice, issuer: "not-a-jwt",
    ],
    ids=["api-token", "aud-list-without-mcp", "wrong-issuer", "expired", "garbage"],
)
def test_a_token_not_good_for_mcp_is_401_invalid_token(service, client, alice, issuer, token):
    token = token(service, alice, issuer)
    client.get("/api/me", headers={"Authorization": f"Bearer {token}"})  # an API token is now in the verified cache
    response = post_mcp(service, token)
    assert (response.status_code, response.headers["content-type"]) == (401, PROBLEM)
    assert response.headers["www-authenticate"] == challenge(service, 'error="invalid_token"')
    assert response.json()["detail"] == "The access token is invalid or has expired."


def test_an_aud_list_holding_the_mcp_resource_is_accepted(service, alice, issuer):
    token = issuer.token(alice.subject, aud=["https://other.example", resource(service)])
    assert post_mcp(service, token).status_code == 200


@pytest.mark.parametrize("user", ["alice", "pat"])
def test_an_mcp_token_is_refused_on_the_api(service, client, request, user, mcp_token):
    user = request.getfixturevalue(user)
    token = mcp_token(user)
    assert post_mcp(service, token).status_code == 200  # good at /mcp, and now in the verified cache
    response = client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert (response.status_code, response.headers["www-authenticate"]) == (401, 'Bearer error="invalid_token"')


@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"])
def test_the_protected_resource_metadata(service, client, path):
    response = client.get(path, headers={"Host": "attacker.example"})
    assert (response.status_code, response.headers["content-type"]) == (200, "application/json")
    assert response.json() == {
        "resource": resource(service),
        "authorization_servers": [ISSUER],  # JWKS_URL is set: JWT_ISSUER, exactly as configured
        "bearer_methods_supported": ["header"],
        "resource_signing_alg_values_supported": ["EdDSA"],
        "resource_name": "todo-backend",
    }


def test_without_jwks_the_metadata_names_the_service_as_authorization_server(start_service):
    with start_service(JWKS_URL=None, JWT_ISSUER=None, JWT_AUDIENCE=None, MCP_RESOURCE="https://todo.example/mcp") as own:
        response = httpx.get(f"{own.url}/.well-known/oauth-protected-resource/mcp")
        assert response.json()["authorization_servers"] == ["https://todo.example"]
        refused = httpx.post(f"{own.url}/mcp", json=INITIALIZE, headers=MCP_HEADERS)
        assert refused.headers["www-authenticate"] == 'Bearer resource_metadata="https://todo.example/.well-known/oauth-protected-resource/mcp"'


@pytest.mark.parametrize(
    ("origin", "status"),
    [("https://evil.example", 403), ("http://localhost:3000.evil.example", 403), ("null", 403), ("http://localhost:3000", 200)],
    ids=["foreign", "lookalike", "null", "allowed"],
)
def test_an_origin_outside_cors_origins_is_403(service, alice, origin, status, mcp_token):
    response = post_mcp(service, mcp_token(alice), Origin=origin)
    assert response.status_code == status
    if status == 403:
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["detail"] == "This origin may not call /mcp: it is not one of CORS_ORIGINS."


def test_a_browser_client_on_an_allowed_origin_may_call_mcp_and_read_the_challenge(service):
    preflight = httpx.options(resource(service), headers={
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, mcp-protocol-version",
    })
    assert (preflight.status_code, preflight.headers["access-control-allow-origin"]) == (200, "http://localhost:3000")
    refused = post_mcp(service, Origin="http://localhost:3000")
    assert refused.status_code == 401
    assert "www-authenticate" in {name.strip().lower() for name in refused.headers["access-control-expose-headers"].split(",")}


def test_get_mcp_opens_no_stream(service, alice, mcp_token):
    response = httpx.get(resource(service), headers={"Authorization": f"Bearer {mcp_token(alice)}", "Accept": "text/event-stream"})
    assert (response.status_code, response.headers["allow"], response.headers["content-type"]) == (405, "POST", PROBLEM)


@pytest.mark.parametrize("mode", MODES)
def test_sigterm_stops_the_service_at_once_with_an_mcp_client_connected(start_service, mode):
    """No stream is held open (POST only, JSON answers, no subscriptions), so the graceful shutdown waits for nothing."""
    with start_service() as own:
        token = own_token(1, aud=resource(own))  # listing tools needs no account

        async def connected_then_stopped(client):
            await client.list_tools()
            started = time.monotonic()
            own.process.terminate()
            status = await asyncio.to_thread(own.process.wait, 15)
            return status, time.monotonic() - started

        status, seconds = session(own, token, connected_then_stopped, mode)
    assert status == 0
    assert seconds < 5, f"shutdown took {seconds:.1f} s"


def test_mcp_is_answered_without_a_redirect(service, alice):
    response = httpx.post(f"{resource(service)}/", json=INITIALIZE, headers=MCP_HEADERS)
    assert response.status_code == 404
    assert "location" not in response.headers


def test_login_with_the_mcp_resource_gives_a_token_for_mcp_only(service, client, pat):
    response = client.post("/api/auth/login", json={"email": pat.email, "password": pat.password, "resource": resource(service)})
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    listed = session(service, token, lambda mcp: mcp.list_tools())
    assert len(listed.tools) == 5
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_login_without_resource_gives_a_token_for_the_api_only(service, client, pat):
    response = client.post("/api/auth/login", json={"email": pat.email, "password": pat.password})
    token = response.json()["access_token"]
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert post_mcp(service, token).status_code == 401


@pytest.mark.parametrize(
    "wrong",
    [lambda service: "https://other.example/mcp", lambda service: resource(service) + "/", lambda service: AUDIENCE, lambda service: None, lambda service: 7],
    ids=["elsewhere", "trailing-slash", "the-api-audience", "null", "number"],
)
def test_login_with_another_resource_is_400(service, client, pat, wrong):
    response = client.post("/api/auth/login", json={"email": pat.email, "password": pat.password, "resource": wrong(service)})
    assert (response.status_code, response.headers["content-type"]) == (400, PROBLEM)
    assert [error["field"] for error in response.json()["errors"]] == ["resource"]


def test_a_password_user_works_through_the_tools(service, client, pat, call):
    result = call(pat, "add_task", {"title": f"pat's {uuid.uuid4()}"})
    assert not result.is_error, result.content
    assert client.get(pat.tasks_url(result.structured_content["id"]), headers=pat.headers).status_code == 200


def test_the_openapi_document_lists_mcp_and_its_metadata(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/mcp"]) == {"post"}
    assert {"/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"} <= set(paths)


def test_the_log_stays_one_json_object_a_line(service, alice, call):
    call(alice, "complete_task", {"task_id": 999_999})  # a tool error, which the SDK logs
    for line in service.log().splitlines():
        json.loads(line)


# ---------------------------------------------------------------------------------------
# A real Better Auth as the authorization server (@better-auth/oauth-provider): the test is
# the MCP client, running the authorization code flow with PKCE in the user's signed-in session.
# ---------------------------------------------------------------------------------------

CALLBACK = "http://127.0.0.1:9/callback"  # a native client's loopback redirect (RFC 8252): read, never fetched


@pytest.fixture(scope="module")
def better_auth(tmp_path_factory):
    """Better Auth (jwt and its OAuth provider for the service's /mcp) and a service of its own."""
    with started_stack(tmp_path_factory.mktemp("better-auth-mcp")) as stack:
        yield stack


def oauth_access_token(stack, user, resource_url: str) -> str:
    """What an MCP client does to get a token from Better Auth, the user's browser session consenting."""
    browser, origin = user.session, {"Origin": stack.auth_url}
    client = {"redirect_uris": [CALLBACK], "token_endpoint_auth_method": "none", "application_type": "native",
              "grant_types": ["authorization_code"], "response_types": ["code"], "scope": "openid"}
    registered = browser.post("/test/oauth-client", json=client, headers=origin)
    assert registered.status_code == 201, registered.text
    client_id, verifier, state = registered.json()["client_id"], secrets.token_urlsafe(48), secrets.token_urlsafe(16)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    authorize = browser.get("/api/auth/oauth2/authorize", params={
        "response_type": "code", "client_id": client_id, "redirect_uri": CALLBACK, "scope": "openid", "state": state,
        "code_challenge": challenge, "code_challenge_method": "S256", "resource": resource_url,
    })
    assert authorize.status_code == 302, authorize.text
    consent_page = urlsplit(authorize.headers["location"])  # the app's consent page, which would POST this
    assert consent_page.path == "/consent", authorize.headers["location"]
    consented = browser.post("/api/auth/oauth2/consent", json={"accept": True, "oauth_query": consent_page.query}, headers=origin)
    assert consented.status_code == 200, consented.text
    callback = urlsplit(consented.json()["url"])
    assert f"{callback.scheme}://{callback.netloc}{callback.path}" == CALLBACK
    answer = parse_qs(callback.query)
    assert answer["state"] == [state]
    # The client, not the browser, exchanges the code: no session cookie, no Origin.
    token = httpx.post(f"{stack.auth_url}/api/auth/oauth2/token", timeout=30, data={
        "grant_type": "authorization_code", "code": answer["code"][0], "redirect_uri": CALLBACK,
        "client_id": client_id, "code_verifier": verifier, "resource": resource_url,
    })
    assert token.status_code == 200, token.text
    return token.json()["access_token"]


def test_a_better_auth_oauth_token_works_at_mcp_as_the_same_account(better_auth):
    user = new_better_auth_user(better_auth, "email", "assistant")
    token = oauth_access_token(better_auth, user, resource(better_auth.service))
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["iss"], claims["sub"]) == (better_auth.auth_url, user.better_auth_id)
    assert resource(better_auth.service) in claims["aud"]
    result = session(better_auth.service, token, lambda client: client.call_tool("add_task", {"title": "from an assistant"}))
    assert not result.is_error, result.content
    # The account the jwt plugin's token names on the API (GET /api/me) is the one the tool wrote for.
    assert result.structured_content["user_id"] == user.id
    listed = better_auth.api.get(user.tasks_url(), headers=user.headers).json()
    assert [task["id"] for task in listed] == [result.structured_content["id"]]


def test_a_better_auth_oauth_token_is_refused_on_the_api(better_auth):
    user = new_better_auth_user(better_auth, "email", "assistant-on-api")
    token = oauth_access_token(better_auth, user, resource(better_auth.service))
    response = better_auth.api.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert (response.status_code, response.headers["www-authenticate"]) == (401, 'Bearer error="invalid_token"')
