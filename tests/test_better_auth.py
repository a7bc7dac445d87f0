"""Interop with a real Better Auth at its defaults: every sign-in method, its own user ids.

tests/better_auth/server.mjs runs Better Auth in Node as a team sets it up (memory adapter,
email and password, the anonymous and magic-link plugins, `jwt()` with its defaults, so a
token's `sub` is Better Auth's own user id); install it with `npm ci --prefix tests/better_auth`.
The service links each (issuer, sub) to a backend account of its own, made on the first token;
GET /api/me names it, and its id is the one in the task paths.
Without Node, or without that install, the module skips, saying why (under CI a missing
install is an error: .ci/run installs it).
It runs once, on PostgreSQL when there is one to test against, and on SQLite otherwise.
"""

import base64
import json
import os
import secrets
import subprocess
import time
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace

import httpx
import jwt
import pytest

import conftest
from conftest import database_for, free_port, npm_installed, running_service, service_environment

BETTER_AUTH_DIR = Path(__file__).resolve().parent / "better_auth"
JWKS_REFETCH_SECONDS = 30  # the contract: an unknown kid refetches the JWKS at most once per 30 s
PROBLEM = "application/problem+json"
TASK_FIELDS = {
    "id", "user_id", "title", "description", "completed", "priority", "due_at", "tags",
    "recurrence", "time_zone", "reminders", "series_id", "next_id", "created_at", "updated_at",
}
SIGN_IN_METHODS = ["email", "anonymous", "magic-link"]
BETTER_AUTH_PASSWORD = "better-auth-password-1"
BACKEND_PASSWORD = "backend-password-1"


@contextmanager
def running_better_auth(node: str, url: str, log_path: Path, **settings):
    """Start server.mjs; yield once it prints that it is ready; stop it with SIGTERM."""
    env = {
        **os.environ,
        "BETTER_AUTH_URL": url,
        "BETTER_AUTH_SECRET": secrets.token_hex(32),
        "BETTER_AUTH_TELEMETRY": "0",
        "NODE_ENV": "development",  # as `next dev`: production would rate-limit our sign-ins
        **settings,
    }
    with open(log_path, "w") as log_file:
        process = subprocess.Popen([node, "server.mjs"], cwd=BETTER_AUTH_DIR, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while "better-auth ready" not in log_path.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"Better Auth did not start:\n{log_path.read_text()}")
        time.sleep(0.05)
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@contextmanager
def started_stack(directory: Path, service_settings: dict | None = None, **better_auth_settings):
    """Better Auth, then the service on a fresh database, configured for each other as in production."""
    node = npm_installed(BETTER_AUTH_DIR, "better-auth")
    auth_url = f"http://127.0.0.1:{free_port()}"
    with database_for("postgresql" if conftest.TEST_DATABASE_URL else "sqlite", directory) as database_url:
        # Better Auth's defaults: iss and aud are its base URL, the JWKS is at /api/auth/jwks.
        issuer = SimpleNamespace(jwks_url=f"{auth_url}/api/auth/jwks")
        env = service_environment(database_url, issuer, JWT_ISSUER=auth_url, JWT_AUDIENCE=auth_url, **(service_settings or {}))
        # Better Auth is also the authorization server of the service's /mcp (its OAuth provider).
        settings = {"MCP_RESOURCE": env["MCP_RESOURCE"], **better_auth_settings}
        with running_better_auth(node, auth_url, directory / "better-auth.log", **settings):
            with running_service(env, directory / "service.log") as service, ExitStack() as clients:
                # The service fetched the JWKS while starting (Better Auth made its first key then).
                jwks_fetched_by = time.monotonic()
                yield SimpleNamespace(
                    auth_url=auth_url,
                    service=service,
                    api=clients.enter_context(httpx.Client(base_url=service.url, timeout=30)),
                    # A new browser: a cookie jar for one Better Auth session, closed with the stack.
                    browser=lambda: clients.enter_context(httpx.Client(base_url=auth_url, timeout=30)),
                    jwks_fetched_by=jwks_fetched_by,
                )


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """Better Auth as it comes (random user ids) and the service. For the session, so that the
    key rotation test, which runs last, finds the service's start-up fetch 30 s behind it; its
    background refresh of the JWKS (JWKS_REFRESH_SECONDS) is put off for a day, so that however
    long the run, it fetches only at start-up and for an unknown kid."""
    with started_stack(tmp_path_factory.mktemp("better-auth"), service_settings={"JWKS_REFRESH_SECONDS": "86400"}) as stack:
        yield stack


@pytest.fixture(scope="module")
def serial_stack(tmp_path_factory):
    """Better Auth numbering its users 1, 2, 3… (generateId: "serial") and a service of its own."""
    with started_stack(tmp_path_factory.mktemp("better-auth-serial"), BETTER_AUTH_SERIAL_IDS="1") as stack:
        yield stack


# ---------------------------------------------------------------------------------------
# Callers: Better Auth users (a session cookie, tokens from /api/auth/token) and backend
# password users (the service's own token from POST /api/auth/login).
# ---------------------------------------------------------------------------------------


class Caller:
    api: httpx.Client
    id: int

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token()}"}

    def tasks_url(self, task_id=None) -> str:
        return f"/api/{self.id}/tasks" + ("" if task_id is None else f"/{task_id}")


class BetterAuthUser(Caller):
    """A browser signed in to Better Auth; its backend account is what GET /api/me names."""

    def __init__(self, stack, session: httpx.Client):
        self.api, self.session = stack.api, session
        response = session.get("/api/auth/get-session")
        assert response.status_code == 200, response.text
        user = response.json()["user"]
        self.better_auth_id, self.email = user["id"], user["email"]

    def token(self) -> str:
        response = self.session.get("/api/auth/token")
        assert response.status_code == 200, response.text
        return response.json()["token"]

    @cached_property
    def account(self) -> dict:
        response = self.api.get("/api/me", headers=self.headers)
        assert response.status_code == 200, response.text
        return response.json()

    @property
    def id(self) -> int:
        return self.account["id"]


class PasswordUser(Caller):
    """Signed up on the backend with a password; logged in for the service's own token."""

    def __init__(self, stack, email: str):
        self.api, self.email = stack.api, email
        credentials = {"email": email, "password": BACKEND_PASSWORD}
        signed_up = self.api.post("/api/auth/signup", json=credentials)
        assert signed_up.status_code == 201, signed_up.text
        self.account, self.id = signed_up.json(), signed_up.json()["id"]
        logged_in = self.api.post("/api/auth/login", json=credentials)
        assert logged_in.status_code == 200, logged_in.text
        self.access_token = logged_in.json()["access_token"]

    def token(self) -> str:
        return self.access_token


def unique_email(name: str) -> str:
    return f"{name}.{secrets.token_hex(4)}@example.com"


def sign_in(stack, method: str, email: str | None = None) -> BetterAuthUser:
    """Sign in to Better Auth as a browser does, in a new session: by email and password, anonymously
    (always a new user), or by a magic link (a new user the first time for that email)."""
    session = stack.browser()
    if method == "email":
        response = session.post("/api/auth/sign-in/email", json={"email": email, "password": BETTER_AUTH_PASSWORD})
        assert response.status_code == 200, response.text
    elif method == "anonymous":
        response = session.post("/api/auth/sign-in/anonymous")
        assert response.status_code == 200, response.text
    elif method == "magic-link":
        sent = session.post("/api/auth/sign-in/magic-link", json={"email": email})
        assert (sent.status_code, sent.json()) == (200, {"status": True})
        mailbox = session.get("/test/magic-link", params={"email": email})
        assert mailbox.status_code == 200, mailbox.text
        # Following the link sets the session cookie, then redirects to the callbackURL ("/").
        followed = session.get(mailbox.json()["url"])
        assert followed.status_code == 302, followed.text
    else:
        raise ValueError(method)
    assert session.cookies.get("better-auth.session_token")
    return BetterAuthUser(stack, session)


def new_better_auth_user(stack, method: str, name: str) -> BetterAuthUser:
    """A Better Auth user no one has seen yet, signed in by `method`."""
    email = None if method == "anonymous" else unique_email(name)
    if method == "email":
        body = {"name": name, "email": email, "password": BETTER_AUTH_PASSWORD}
        signed_up = httpx.post(f"{stack.auth_url}/api/auth/sign-up/email", json=body, timeout=30)
        assert signed_up.status_code == 200, signed_up.text
    return sign_in(stack, method, email)


def decoded(token: str) -> tuple[dict, dict]:
    """A token's header and claims, unverified: what we look at, not what we trust."""

    def part(text: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))

    header, payload, _ = token.split(".")
    return part(header), part(payload)


def better_auth_jwks(stack) -> dict:
    response = httpx.get(f"{stack.auth_url}/api/auth/jwks", timeout=30)
    assert response.status_code == 200
    return response.json()


def tasks_of(caller: Caller) -> list:
    response = caller.api.get(caller.tasks_url(), headers=caller.headers)
    assert response.status_code == 200, response.text
    return response.json()


# ---------------------------------------------------------------------------------------
# Every sign-in method: Better Auth's token, the account it makes, the task routes.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", SIGN_IN_METHODS)
def test_better_auth_issues_an_eddsa_token_with_its_own_user_id_as_subject(stack, method):
    user = new_better_auth_user(stack, method, "dana")
    token = user.token()
    header, claims = decoded(token)
    [key] = [key for key in better_auth_jwks(stack)["keys"] if key["kid"] == header["kid"]]
    assert header == {"alg": "EdDSA", "kid": key["kid"]}  # no typ
    assert {name: key[name] for name in ("kty", "crv", "alg")} == {"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA"}
    verified = jwt.decode(token, jwt.PyJWK(key), algorithms=["EdDSA"], issuer=stack.auth_url, audience=stack.auth_url)
    assert verified == claims
    assert claims["sub"] == claims["id"] == user.better_auth_id  # Better Auth's id, nothing of the backend's
    assert claims["iss"] == claims["aud"] == stack.auth_url
    assert claims["exp"] - claims["iat"] == 900
    assert claims["email"] == user.email  # for anonymous users, a placeholder Better Auth made up


@pytest.mark.parametrize("method", SIGN_IN_METHODS)
def test_the_first_better_auth_token_makes_the_account_me_names(stack, method):
    user = new_better_auth_user(stack, method, "erin")
    response = stack.api.get("/api/me", headers=user.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    account = response.json()
    assert set(account) == {"id", "email", "created_at"}
    assert type(account["id"]) is int and account["id"] > 0
    assert account["email"] == user.email.lower()
    assert account["created_at"].endswith("Z")
    assert datetime.fromisoformat(account["created_at"]).utcoffset() == timedelta(0)
    again = stack.api.get("/api/me", headers=user.headers)  # a new token of the same session
    assert (again.status_code, again.json()) == (200, account)


@pytest.mark.parametrize("method", SIGN_IN_METHODS)
def test_a_better_auth_user_drives_every_task_route_with_the_id_from_me(stack, method):
    user = new_better_auth_user(stack, method, "fred")
    api, headers = stack.api, user.headers

    listed = api.get(user.tasks_url(), headers=headers)
    assert (listed.status_code, listed.json()) == (200, [])

    created = api.post(user.tasks_url(), json={"title": "  Buy milk ", "description": "2 litres"}, headers=headers)
    assert created.status_code == 201, created.text
    task = created.json()
    assert set(task) == TASK_FIELDS
    assert (task["user_id"], task["title"], task["description"], task["completed"]) == (user.id, "Buy milk", "2 litres", False)
    task_url = user.tasks_url(task["id"])

    fetched = api.get(task_url, headers=headers)
    assert (fetched.status_code, fetched.json()) == (200, task)

    replaced = api.put(task_url, json={"title": "Buy oat milk", "completed": True}, headers=headers)
    assert replaced.status_code == 200, replaced.text
    assert {**replaced.json(), "updated_at": None} == {
        **task, "title": "Buy oat milk", "description": None, "completed": True, "updated_at": None
    }

    patched = api.patch(task_url, json={"description": "from the corner shop"}, headers=headers)
    assert patched.status_code == 200, patched.text
    assert (patched.json()["title"], patched.json()["description"], patched.json()["completed"]) == (
        "Buy oat milk", "from the corner shop", True
    )

    reopened = api.patch(task_url + "/complete", json={"completed": False}, headers=headers)
    assert reopened.status_code == 200, reopened.text
    assert reopened.json()["completed"] is False

    open_tasks = api.get(user.tasks_url(), params={"completed": "false"}, headers=headers)
    assert (open_tasks.status_code, open_tasks.json()) == (200, [reopened.json()])

    deleted = api.delete(task_url, headers=headers)
    assert (deleted.status_code, deleted.content) == (204, b"")
    gone = api.get(task_url, headers=headers)
    assert gone.status_code == 404
    assert gone.headers["content-type"] == PROBLEM


@pytest.mark.parametrize("method", ["email", "magic-link"])  # an anonymous user cannot sign in again
def test_a_new_session_of_the_same_better_auth_user_is_the_same_account(stack, method):
    first = new_better_auth_user(stack, method, "gina")
    created = stack.api.post(first.tasks_url(), json={"title": "from the first session"}, headers=first.headers)
    assert created.status_code == 201, created.text
    again = sign_in(stack, method, first.email)
    assert again.session.cookies["better-auth.session_token"] != first.session.cookies["better-auth.session_token"]
    assert decoded(again.token())[1]["sub"] == first.better_auth_id
    assert again.account == first.account
    assert tasks_of(again) == [created.json()]


# ---------------------------------------------------------------------------------------
# No caller reaches another account's tasks: two Better Auth users, a Better Auth user and
# a backend password user with the same email, and Better Auth's user "1" and backend user 1.
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alice(stack):
    """Signed up in Better Auth by email and password; her first token made her account."""
    user = new_better_auth_user(stack, "email", "alice")
    assert user.account
    return user


@pytest.fixture(scope="module")
def bob(stack):
    """Signed in to Better Auth by a magic link."""
    user = new_better_auth_user(stack, "magic-link", "bob")
    assert user.account
    return user


@pytest.fixture(scope="module")
def alice_by_password(stack, alice):
    """Signed up on the backend with alice's email, after her Better Auth account was linked."""
    return PasswordUser(stack, alice.email)


@pytest.fixture(scope="module")
def backend_user_1(serial_stack):
    """The service's first user: a password account, signed up before anyone used Better Auth."""
    user = PasswordUser(serial_stack, "first@example.com")
    assert user.id == 1, user.account
    return user


@pytest.fixture(scope="module")
def better_auth_user_1(serial_stack, backend_user_1):
    """Better Auth's first user, with the same email as backend user 1: its tokens' sub is "1"."""
    body = {"name": "first", "email": backend_user_1.email, "password": BETTER_AUTH_PASSWORD}
    signed_up = httpx.post(f"{serial_stack.auth_url}/api/auth/sign-up/email", json=body, timeout=30)
    assert signed_up.status_code == 200, signed_up.text
    user = sign_in(serial_stack, "email", backend_user_1.email)
    assert user.better_auth_id == "1"
    return user


@pytest.fixture
def victim(request):
    return request.getfixturevalue(request.param)


@pytest.fixture
def intruder(request):
    return request.getfixturevalue(request.param)


@pytest.fixture
def victims_task(victim):
    created = victim.api.post(victim.tasks_url(), json={"title": "the victim's"}, headers=victim.headers)
    assert created.status_code == 201, created.text
    yield created.json()
    victim.api.delete(victim.tasks_url(created.json()["id"]), headers=victim.headers)


@pytest.mark.parametrize(
    ("victim", "intruder"),
    [
        ("alice", "bob"),
        ("alice", "alice_by_password"),
        ("alice_by_password", "alice"),
        ("backend_user_1", "better_auth_user_1"),
        ("better_auth_user_1", "backend_user_1"),
    ],
    ids=[
        "better-auth-bob-at-alice",
        "password-user-at-better-auth-user-same-email",
        "better-auth-user-at-password-user-same-email",
        "better-auth-1-at-backend-1",
        "backend-1-at-better-auth-1",
    ],
    indirect=True,
)
@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "{victim}/tasks", None, 403),
        ("POST", "{victim}/tasks", {"title": "not yours"}, 403),
        ("GET", "{victim}/tasks/{task}", None, 403),
        ("PUT", "{victim}/tasks/{task}", {"title": "not yours"}, 403),
        ("PATCH", "{victim}/tasks/{task}", {"title": "not yours"}, 403),
        ("PATCH", "{victim}/tasks/{task}/complete", {"completed": True}, 403),
        ("DELETE", "{victim}/tasks/{task}", None, 403),
        ("GET", "{intruder}/tasks/{task}", None, 404),
        ("PUT", "{intruder}/tasks/{task}", {"title": "not yours"}, 404),
        ("PATCH", "{intruder}/tasks/{task}", {"title": "not yours"}, 404),
        ("PATCH", "{intruder}/tasks/{task}/complete", {"completed": True}, 404),
        ("DELETE", "{intruder}/tasks/{task}", None, 404),
    ],
    ids=[
        "list-at-their-path", "create-at-their-path", "get-at-their-path", "put-at-their-path",
        "patch-at-their-path", "complete-at-their-path", "delete-at-their-path", "get-at-own-path",
        "put-at-own-path", "patch-at-own-path", "complete-at-own-path", "delete-at-own-path",
    ],
)
def test_no_token_reaches_another_accounts_tasks(victim, intruder, victims_task, method, path, body, status):
    assert intruder.id != victim.id
    url = "/api/" + path.format(victim=victim.id, intruder=intruder.id, task=victims_task["id"])
    response = intruder.api.request(method, url, json=body, headers=intruder.headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert tasks_of(victim) == [victims_task]


@pytest.mark.parametrize("backend_first", [True, False], ids=["backend-signup-first", "better-auth-first"])
def test_a_backend_signup_and_a_better_auth_user_with_the_same_email_are_two_accounts(stack, backend_first):
    email = unique_email("carol")
    if backend_first:
        by_password = PasswordUser(stack, email)
        by_better_auth = sign_in(stack, "magic-link", email)
        assert by_better_auth.account  # the first token: linked now
    else:
        by_better_auth = sign_in(stack, "magic-link", email)
        assert by_better_auth.account  # linked first: the email is the service's already
        by_password = PasswordUser(stack, email)  # the signup still succeeds (201)
    assert by_password.id != by_better_auth.id
    for user in (by_password, by_better_auth):
        response = stack.api.get("/api/me", headers=user.headers)
        assert response.status_code == 200, response.text
        assert (response.json()["id"], response.json()["email"]) == (user.id, email)


@pytest.mark.parametrize("method", SIGN_IN_METHODS)
def test_a_linked_accounts_email_cannot_log_in_with_a_password(stack, method):
    user = new_better_auth_user(stack, method, "hank")
    assert user.account  # linked: the service has an account with this email, and no password
    refused = stack.api.post("/api/auth/login", json={"email": user.email, "password": BETTER_AUTH_PASSWORD})
    unknown = stack.api.post("/api/auth/login", json={"email": unique_email("nobody"), "password": BETTER_AUTH_PASSWORD})
    assert refused.status_code == 401, refused.text
    assert refused.headers["content-type"] == PROBLEM
    assert refused.json() == unknown.json()  # the usual 401: nothing tells a linked account apart


def test_better_auth_numbers_its_first_user_1_when_asked(better_auth_user_1):
    assert decoded(better_auth_user_1.token())[1]["sub"] == "1"


def test_better_auth_user_1_is_not_backend_user_1(serial_stack, backend_user_1, better_auth_user_1):
    me = serial_stack.api.get("/api/me", headers=better_auth_user_1.headers)
    assert me.status_code == 200, me.text
    assert me.json()["id"] != 1
    assert me.json()["email"] == backend_user_1.email
    theirs = serial_stack.api.get("/api/me", headers=backend_user_1.headers)
    assert (theirs.status_code, theirs.json()) == (200, backend_user_1.account)


# ---------------------------------------------------------------------------------------
# Key rotation: Better Auth's new key is found, its old key's tokens live on.
# ---------------------------------------------------------------------------------------


@pytest.mark.late  # it waits until 30 s after the stack's start-up fetch: the rest of the run passes meanwhile
def test_a_token_signed_with_a_key_better_auth_rotated_in_is_accepted(stack, alice):
    old_token = alice.token()
    old_kid = decoded(old_token)[0]["kid"]
    rotated = httpx.post(f"{stack.auth_url}/test/rotate-keys", timeout=30)
    assert rotated.status_code == 200, rotated.text
    new_kid = rotated.json()["kid"]
    assert new_kid != old_kid
    assert {key["kid"] for key in better_auth_jwks(stack)["keys"]} == {old_kid, new_kid}
    new_token = alice.token()
    assert decoded(new_token)[0] == {"alg": "EdDSA", "kid": new_kid}

    # The service knows only the start-up key, and refetches for an unknown kid at most once
    # per 30 s: wait out the window since that fetch, as a rotation weeks later would find it.
    time.sleep(max(0.0, stack.jwks_fetched_by + JWKS_REFETCH_SECONDS + 0.5 - time.monotonic()))
    for token in (new_token, old_token):  # the old key stays in Better Auth's JWKS, so its tokens live on
        response = stack.api.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        assert response.json() == alice.account
