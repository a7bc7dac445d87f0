"""Interop with a real Better Auth: the tokens its jwt plugin issues drive every route.

tests/better_auth/server.mjs runs Better Auth in Node (memory adapter, email and password,
the jwt plugin with its defaults but for `sub`, which is the backend's user id); install it
with `npm ci --prefix tests/better_auth`. Without Node, or without that install, the module
skips, saying why (under CI a missing install is an error: .ci/run installs it).
It runs once, on PostgreSQL when TEST_DATABASE_URL is set and on SQLite otherwise.
"""

import base64
import json
import os
import secrets
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import httpx
import jwt
import pytest

from conftest import TEST_DATABASE_URL, database_for, free_port, running_service, service_environment

BETTER_AUTH_DIR = Path(__file__).resolve().parent / "better_auth"
INSTALL_COMMAND = "npm ci --prefix tests/better_auth"
JWKS_REFETCH_SECONDS = 30  # the contract: an unknown kid refetches the JWKS at most once per 30 s
TASK_FIELDS = {"id", "user_id", "title", "description", "completed", "created_at", "updated_at"}


def node_or_skip() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the Better Auth interop test needs Node.js 20+ and npm")
    if not (BETTER_AUTH_DIR / "node_modules" / "better-auth").is_dir():
        reason = f"better-auth is not installed in tests/better_auth: run `{INSTALL_COMMAND}`"
        if os.environ.get("CI"):  # .ci/run installs it; under CI a skip would hide a broken install
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return node


@contextmanager
def running_better_auth(node: str, url: str, backend_url: str, log_path: Path):
    """Start server.mjs; yield once it prints that it is ready; stop it with SIGTERM."""
    env = {
        **os.environ,
        "BETTER_AUTH_URL": url,
        "BETTER_AUTH_SECRET": secrets.token_hex(32),
        "BACKEND_URL": backend_url,
        "BETTER_AUTH_TELEMETRY": "0",
        "NODE_ENV": "development",  # as `next dev`: production would rate-limit our sign-ins
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


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Better Auth and the service, configured for each other as in production."""
    node = node_or_skip()
    directory = tmp_path_factory.mktemp("better-auth")
    auth_url = f"http://127.0.0.1:{free_port()}"
    with database_for("postgresql" if TEST_DATABASE_URL else "sqlite", directory) as database_url:
        # Better Auth's defaults: iss and aud are its base URL, the JWKS is at /api/auth/jwks.
        issuer = SimpleNamespace(jwks_url=f"{auth_url}/api/auth/jwks")
        env = service_environment(database_url, issuer, JWT_ISSUER=auth_url, JWT_AUDIENCE=auth_url)
        backend_url = f"http://127.0.0.1:{env['PORT']}"
        with running_better_auth(node, auth_url, backend_url, directory / "better-auth.log"):
            with running_service(env, directory / "service.log") as service:
                # The service fetched the JWKS while starting (Better Auth made its first key then).
                jwks_fetched_by = time.monotonic()
                with httpx.Client(base_url=service.url, timeout=30) as api:
                    yield SimpleNamespace(auth_url=auth_url, service=service, api=api, jwks_fetched_by=jwks_fetched_by)


class BetterAuthUser:
    """Someone signed in to Better Auth: its session cookie gets tokens from GET /api/auth/token."""

    def __init__(self, auth_url, email, password, backend_id):
        self.email, self.password, self.id = email, password, backend_id
        self.session = httpx.Client(base_url=auth_url, timeout=30)
        response = self.session.post("/api/auth/sign-in/email", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        assert self.session.cookies.get("better-auth.session_token")

    def token(self) -> str:
        response = self.session.get("/api/auth/token")
        assert response.status_code == 200, response.text
        return response.json()["token"]

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token()}"}

    def tasks_url(self, task_id=None) -> str:
        return f"/api/{self.id}/tasks" + ("" if task_id is None else f"/{task_id}")


def better_auth_sign_up(stack, email, password, **extra) -> httpx.Response:
    body = {"name": email.partition("@")[0], "email": email, "password": password, **extra}
    return httpx.post(f"{stack.auth_url}/api/auth/sign-up/email", json=body, timeout=30)


@pytest.fixture(scope="module")
def alice(stack):
    """Signed up on the backend first, then in Better Auth with the same credentials."""
    email, password = "alice@example.com", "alice-password-1"
    account = stack.api.post("/api/auth/signup", json={"email": email, "password": password})
    assert account.status_code == 201, account.text
    signed_up = better_auth_sign_up(stack, email, password)
    assert signed_up.status_code == 200, signed_up.text
    assert signed_up.json()["user"]["backendUserId"] == str(account.json()["id"])
    user = BetterAuthUser(stack.auth_url, email, password, account.json()["id"])
    user.account = account.json()
    yield user
    user.session.close()


@pytest.fixture(scope="module")
def bob(stack):
    """Signed up in Better Auth only: its sign-up made his backend account."""
    email, password = "bob@example.com", "bob-password-1"
    signed_up = better_auth_sign_up(stack, email, password)
    assert signed_up.status_code == 200, signed_up.text
    user = BetterAuthUser(stack.auth_url, email, password, int(signed_up.json()["user"]["backendUserId"]))
    yield user
    user.session.close()


def decoded(token: str) -> tuple[dict, dict]:
    """A token's header and claims, unverified: what we look at, not what we trust."""

    def part(text: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))

    header, payload, _ = token.split(".")
    return part(header), part(payload)


def better_auth_jwks(stack) -> dict:
    response = httpx.get(f"{stack.auth_url}/api/auth/jwks")
    assert response.status_code == 200
    return response.json()


def test_better_auth_issues_an_eddsa_token_with_the_backend_id_as_subject(stack, alice):
    token = alice.token()
    header, claims = decoded(token)
    [key] = better_auth_jwks(stack)["keys"]
    assert header == {"alg": "EdDSA", "kid": key["kid"]}  # no typ
    assert {name: key[name] for name in ("kty", "crv", "alg")} == {"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA"}
    verified = jwt.decode(token, jwt.PyJWK(key), algorithms=["EdDSA"], issuer=stack.auth_url, audience=stack.auth_url)
    assert verified == claims
    assert claims["sub"] == str(alice.id)
    assert claims["iss"] == claims["aud"] == stack.auth_url
    assert claims["exp"] - claims["iat"] == 900
    # The rest is Better Auth's whole user, its own string id included: the service ignores it.
    assert claims["email"] == alice.email and claims["backendUserId"] == str(alice.id)
    assert claims["id"] != claims["sub"]


def test_the_session_tells_the_frontend_the_backend_user_id(alice):
    response = alice.session.get("/api/auth/get-session")
    assert response.status_code == 200
    assert response.json()["user"]["backendUserId"] == str(alice.id)


def test_me_with_a_better_auth_token_is_the_backend_account(stack, alice):
    response = stack.api.get("/api/me", headers=alice.headers)
    assert response.status_code == 200, response.text
    assert response.json() == alice.account


def test_a_better_auth_token_drives_every_task_route(stack, alice):
    api, headers = stack.api, alice.headers

    listed = api.get(alice.tasks_url(), headers=headers)
    assert (listed.status_code, listed.json()) == (200, [])

    created = api.post(alice.tasks_url(), json={"title": "  Buy milk ", "description": "2 litres"}, headers=headers)
    assert created.status_code == 201, created.text
    task = created.json()
    assert set(task) == TASK_FIELDS
    assert (task["user_id"], task["title"], task["description"], task["completed"]) == (alice.id, "Buy milk", "2 litres", False)
    task_url = alice.tasks_url(task["id"])

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

    open_tasks = api.get(alice.tasks_url(), params={"completed": "false"}, headers=headers)
    assert (open_tasks.status_code, open_tasks.json()) == (200, [reopened.json()])

    deleted = api.delete(task_url, headers=headers)
    assert (deleted.status_code, deleted.content) == (204, b"")
    gone = api.get(task_url, headers=headers)
    assert gone.status_code == 404
    assert gone.headers["content-type"] == "application/problem+json"


def test_better_auth_sign_up_alone_makes_the_backend_account(stack, bob):
    response = stack.api.get("/api/me", headers=bob.headers)
    assert response.status_code == 200, response.text
    assert (response.json()["id"], response.json()["email"]) == (bob.id, bob.email)


@pytest.fixture
def alices_task(stack, alice):
    created = stack.api.post(alice.tasks_url(), json={"title": "Alice's"}, headers=alice.headers)
    assert created.status_code == 201, created.text
    yield created.json()
    stack.api.delete(alice.tasks_url(created.json()["id"]), headers=alice.headers)


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "{alice}/tasks", None, 403),
        ("POST", "{alice}/tasks", {"title": "not yours"}, 403),
        ("GET", "{alice}/tasks/{task}", None, 403),
        ("PUT", "{alice}/tasks/{task}", {"title": "not yours"}, 403),
        ("PATCH", "{alice}/tasks/{task}", {"title": "not yours"}, 403),
        ("PATCH", "{alice}/tasks/{task}/complete", {"completed": True}, 403),
        ("DELETE", "{alice}/tasks/{task}", None, 403),
        ("GET", "{bob}/tasks/{task}", None, 404),
        ("PUT", "{bob}/tasks/{task}", {"title": "not yours"}, 404),
        ("PATCH", "{bob}/tasks/{task}", {"title": "not yours"}, 404),
        ("PATCH", "{bob}/tasks/{task}/complete", {"completed": True}, 404),
        ("DELETE", "{bob}/tasks/{task}", None, 404),
    ],
    ids=[
        "list-at-her-path", "create-at-her-path", "get-at-her-path", "put-at-her-path", "patch-at-her-path",
        "complete-at-her-path", "delete-at-her-path", "get-at-his-path", "put-at-his-path", "patch-at-his-path",
        "complete-at-his-path", "delete-at-his-path",
    ],
)
def test_another_better_auth_users_token_cannot_touch_her_tasks(stack, alice, bob, alices_task, method, path, body, status):
    url = "/api/" + path.format(alice=alice.id, bob=bob.id, task=alices_task["id"])
    response = stack.api.request(method, url, json=body, headers=bob.headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert stack.api.get(alice.tasks_url(), headers=alice.headers).json() == [alices_task]


def test_better_auth_sign_up_cannot_name_its_own_backend_id(stack, alice):
    response = better_auth_sign_up(stack, "mallory@example.com", "mallory-password", backendUserId=str(alice.id))
    assert response.status_code == 400
    assert response.json()["code"] == "FIELD_NOT_ALLOWED"


def test_better_auth_sign_up_for_an_existing_backend_account_needs_its_password(stack):
    assert stack.api.post("/api/auth/signup", json={"email": "carol@example.com", "password": "carol-password"}).status_code == 201
    response = better_auth_sign_up(stack, "carol@example.com", "not-carols-password")
    assert response.status_code == 400
    assert response.json()["message"] == "todo-backend: The email or the password is wrong."
    signed_in = httpx.post(f"{stack.auth_url}/api/auth/sign-in/email", json={"email": "carol@example.com", "password": "not-carols-password"})
    assert signed_in.status_code == 401


def test_a_token_signed_with_a_key_better_auth_rotated_in_is_accepted(stack, alice):
    old_token = alice.token()
    old_kid = decoded(old_token)[0]["kid"]
    rotated = httpx.post(f"{stack.auth_url}/test/rotate-keys")
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
