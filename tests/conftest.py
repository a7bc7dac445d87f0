"""Fixtures: the service as a real uvicorn process, a JWKS served over real HTTP, real keys.

Every test that takes `service` (or anything built on it) runs twice: once on the embedded
SQLite default and once on PostgreSQL. PostgreSQL comes from TEST_DATABASE_URL, a server the
tests may create databases on, or else from a cluster the tests start themselves where the
PostgreSQL server is installed; each session makes its own fresh databases and drops them.
Only where neither is possible does the PostgreSQL half skip, saying why; under CI it is an error.
"""

import asyncio
import base64
import functools
import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pg_cluster import free_port, missing_binaries, private_cluster

# The tests' clients speak plain HTTP to 127.0.0.1, yet httpx builds a TLS context for every
# client it makes, loading certifi's CA bundle again: 20 ms of CPU a client, the suite makes
# thousands. One context per set of TLS settings, built once, serves them all alike.
httpx._transports.default.create_ssl_context = functools.cache(httpx.create_ssl_context)

ROOT = Path(__file__).resolve().parent.parent
ISSUER = "http://127.0.0.1:3000"  # what Better Auth puts in iss and aud: its base URL
AUDIENCE = "http://127.0.0.1:3000"
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
NO_POSTGRESQL = None  # why the PostgreSQL half cannot run here, when it cannot
private_servers = ExitStack()


def pytest_configure(config):
    """Without TEST_DATABASE_URL, a PostgreSQL cluster of the tests' own where the server is
    installed: `uv run pytest` alone runs everything the machine can run."""
    global TEST_DATABASE_URL, NO_POSTGRESQL
    config.addinivalue_line("markers", "late: runs after every other test, for a test that waits out a window opened earlier")
    if TEST_DATABASE_URL:
        return
    NO_POSTGRESQL = missing_binaries("initdb", "pg_ctl")
    if NO_POSTGRESQL is None:
        TEST_DATABASE_URL = private_servers.enter_context(private_cluster()).url("postgres")
    elif os.environ.get("CI"):
        raise pytest.UsageError(f"CI is set, TEST_DATABASE_URL is not, and no private cluster can start ({NO_POSTGRESQL})")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Tests marked `late` go last, in their order. Such a test waits until some seconds after
    a session-scoped fixture of its module began (a service's start-up fetch of the JWKS, say):
    whatever runs before it shortens that wait, to nothing in a whole run."""
    items.sort(key=lambda item: item.get_closest_marker("late") is not None)


def pytest_unconfigure(config):
    private_servers.close()


def private_key_pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_jwk(key: Ed25519PrivateKey, kid: str) -> dict:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA"}


# The services under test sign their login tokens with this key (JWT_PRIVATE_KEY), so a test
# can mint the service's own tokens for a backend user id without paying for a login.
SERVICE_KEY = Ed25519PrivateKey.generate()


def thumbprint_kid(key: Ed25519PrivateKey) -> str:
    """The kid the service gives its key: the RFC 7638 thumbprint of the public JWK."""
    members = {name: value for name, value in public_jwk(key, "").items() if name in ("crv", "kty", "x")}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def own_token(user_id, **claims) -> str:
    """A token as the service's login issues it, for this backend user id; a claim set to None is left out."""
    now = int(time.time())
    payload = {"sub": str(user_id), "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 900, **claims}
    payload = {name: value for name, value in payload.items() if value is not None}
    return jwt.encode(payload, SERVICE_KEY, algorithm="EdDSA", headers={"kid": thumbprint_kid(SERVICE_KEY)})


# ---------------------------------------------------------------------------------------
# A Better Auth stand-in: its JWKS endpoint, over HTTP on loopback, with keys we can rotate.
# ---------------------------------------------------------------------------------------


class Issuer:
    """Signs tokens the way Better Auth's jwt plugin does and serves its JWKS."""

    def __init__(self):
        self.keys: dict[str, Ed25519PrivateKey] = {}
        self.current_kid = ""
        self.up = True
        self.fetches = 0
        self.rotate()

    def rotate(self, keep_old: bool = True) -> str:
        kid = uuid.uuid4().hex
        if not keep_old:
            self.keys.clear()
        self.keys[kid] = Ed25519PrivateKey.generate()
        self.current_kid = kid
        return kid

    def jwks(self) -> dict:
        return {"keys": [public_jwk(key, kid) for kid, key in self.keys.items()]}

    def token(self, sub, *, key=None, headers=None, **claims) -> str:
        now = int(time.time())
        payload = {"sub": str(sub), "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 900, **claims}
        payload = {name: value for name, value in payload.items() if value is not None}
        header = {"kid": self.current_kid, **(headers or {})}
        return jwt.encode(payload, key or self.keys[self.current_kid], algorithm="EdDSA", headers=header)


@contextmanager
def loopback_server(answer):
    """An HTTP server on 127.0.0.1 that answers every GET with answer(path) -> (status, JSON bytes); yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            status, body = answer(self.path)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def serving(issuer: Issuer):
    """The issuer's JWKS served on loopback at issuer.jwks_url (503 while it is down), each fetch counted."""

    def answer(path):
        issuer.fetches += 1
        return (200, json.dumps(issuer.jwks()).encode()) if issuer.up else (503, b'{"error": "down"}')

    with loopback_server(answer) as url:
        issuer.jwks_url = f"{url}/api/auth/jwks"
        yield issuer


@pytest.fixture(scope="session")
def issuer():
    with serving(Issuer()) as issuer:
        yield issuer


@pytest.fixture
def fresh_issuer_state(issuer):
    """Put the issuer back as it was after a test that rotated keys or took it down."""
    keys, kid = dict(issuer.keys), issuer.current_kid
    yield issuer
    issuer.keys, issuer.current_kid, issuer.up = keys, kid, True


# ---------------------------------------------------------------------------------------
# Databases: a fresh one per session for PostgreSQL, a new file for SQLite.
# ---------------------------------------------------------------------------------------


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(with_database(TEST_DATABASE_URL, urlsplit(TEST_DATABASE_URL).path.lstrip("/")))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextmanager
def fresh_postgres_database(locale: str | None = None):
    """A new, empty database on TEST_DATABASE_URL's server, dropped afterwards; with a locale
    ("C", "C.UTF-8"), its collation and ctype are that one instead of the server's default."""
    name = f"todo_test_{os.getpid()}_{secrets.token_hex(4)}"
    options = "" if locale is None else f" TEMPLATE template0 LC_COLLATE '{locale}' LC_CTYPE '{locale}'"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"{options}'))
    try:
        yield with_database(TEST_DATABASE_URL, name)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def execute_sql(database_url: str, statement: str, *args):
    """Run one statement on the service's database from the outside; returns the rows."""
    if database_url.startswith("sqlite"):
        with sqlite3.connect(urlsplit(database_url).path[1:]) as connection:
            return connection.execute(statement.replace("$1", "?"), args).fetchall()

    async def query():
        connection = await asyncpg.connect(database_url)
        try:
            return await connection.fetch(statement, *args)
        finally:
            await connection.close()

    return asyncio.run(query())


# ---------------------------------------------------------------------------------------
# The service: `python todo_service.py` in a subprocess, configured by its environment.
# ---------------------------------------------------------------------------------------


@contextmanager
def kept_connection(database_url: str):
    """fetch(statement, *args) on one connection to this PostgreSQL database, kept open on an
    event loop in a thread of its own (a test may be running a loop of its own, as Playwright's
    sync API does): a new connection for each statement costs 5 ms, and every test's first
    statement empties the tasks."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    lock = threading.Lock()  # one statement at a time on the connection, whatever thread asks

    def run(coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    def fetch(statement: str, *args):
        with lock:
            return run(connection.fetch(statement, *args))

    try:
        connection = run(asyncpg.connect(database_url))
        try:
            yield fetch
        finally:
            run(connection.close())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


class Service:
    def __init__(self, process, url, log_path, database_url):
        self.process, self.url, self.log_path, self.database_url = process, url, log_path, database_url
        self.fetch = None  # kept_connection()'s, when the service has one

    def log(self) -> str:
        return self.log_path.read_text()

    def sql(self, statement: str, *args):
        if self.fetch is not None:
            return self.fetch(statement, *args)
        return execute_sql(self.database_url, statement, *args)


def service_environment(database_url: str, issuer: Issuer, **overrides) -> dict:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DATABASE_", "JWT_", "JWKS_", "RATE_LIMIT_", "CORS_", "TRUSTED_", "ACCESS_TOKEN", "MCP_"))
    }
    env.update(
        DATABASE_URL=database_url,
        JWKS_URL=issuer.jwks_url,
        JWT_ISSUER=ISSUER,
        JWT_AUDIENCE=AUDIENCE,
        CORS_ORIGINS="http://localhost:3000",
        JWT_PRIVATE_KEY=private_key_pem(SERVICE_KEY),
        # Generous limits: the rate-limit tests start a service of their own with tight ones.
        RATE_LIMIT_SIGNUP="10000/minute",
        RATE_LIMIT_LOGIN="10000/minute",
        RATE_LIMIT_LOGIN_EMAIL="10000/minute",
        BCRYPT_QUEUE_SECONDS="60",  # so that bursts of signups queue; the abuse tests bound it
        PORT=str(free_port()),
    )
    env.update(overrides)
    env.setdefault("MCP_RESOURCE", f"http://127.0.0.1:{env['PORT']}/mcp")  # its own URL, as a deploy sets it
    return {name: value for name, value in env.items() if value is not None}


@contextmanager
def running_service(env: dict, log_path: Path, command=None):
    """Start the service with this environment; yield it once /healthz answers; stop it with SIGTERM."""
    command = command or [sys.executable, str(ROOT / "todo_service.py")]
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(command, env=env, cwd=log_path.parent, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{env['PORT']}"
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited at start:\n{log_path.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the service did not start:\n{log_path.read_text()}")
        time.sleep(0.05)
    try:
        yield Service(process, url, log_path, env.get("DATABASE_URL", f"sqlite:///{log_path.parent}/todo.db"))
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def started_together(stack: ExitStack, services: list) -> list:
    """Enter these context managers (running_service(...) each) at once, a thread each, and leave
    them with `stack`; their values in order. A start is a second and a half of CPU, mostly
    imports, and a second core does another meanwhile."""

    def enter(context):
        inner = ExitStack()
        return inner, inner.enter_context(context)

    with ThreadPoolExecutor(max_workers=len(services)) as pool:
        futures = [pool.submit(enter, context) for context in services]
    values, failures = [], []
    for future in futures:
        if future.exception() is not None:
            failures.append(future.exception())
            continue
        inner, value = future.result()
        stack.enter_context(inner)
        values.append(value)
    if failures:
        raise failures[0]
    return values


@contextmanager
def database_for(backend: str, directory: Path):
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'todo.db'}"
    else:
        with fresh_postgres_database() as url:
            yield url


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request):
    if request.param == "postgresql" and not TEST_DATABASE_URL:
        pytest.skip(f"no PostgreSQL to test against: TEST_DATABASE_URL is unset and the server is {NO_POSTGRESQL} (Debian: postgresql)")
    return request.param


@pytest.fixture(scope="session")
def service(backend, issuer, tmp_path_factory):
    directory = tmp_path_factory.mktemp(f"service-{backend}")
    with database_for(backend, directory) as database_url, ExitStack() as stack:
        running = stack.enter_context(running_service(service_environment(database_url, issuer), directory / "service.log"))
        if backend == "postgresql":
            running.fetch = stack.enter_context(kept_connection(database_url))
        yield running


@pytest.fixture
def start_service(backend, issuer, tmp_path):
    """Start another service on a fresh database of the same backend, with settings of the test's own."""

    @contextmanager
    def start(**overrides):
        with database_for(backend, tmp_path) as database_url:
            env = service_environment(database_url, issuer, **overrides)
            with running_service(env, tmp_path / f"service-{env['PORT']}.log") as running:
                yield running

    return start


@pytest.fixture
def client(service):
    with httpx.Client(base_url=service.url, timeout=30) as client:
        yield client


@pytest.fixture(autouse=True)
def no_tasks_left(request):
    """Each test starts with no tasks (users, costly to hash, live for the session)."""
    if "service" in request.fixturenames:
        request.getfixturevalue("service").sql("DELETE FROM tasks")


# ---------------------------------------------------------------------------------------
# npm packages of the tests that run Node (Better Auth, the TypeScript client, the browser page).
# ---------------------------------------------------------------------------------------

_installed: set[Path] = set()


def npm_installed(folder: Path, *packages: str) -> str:
    """Make sure `folder`'s pinned npm packages are in its node_modules, installing them once with
    `npm ci` when they are not; skip (fail under CI) saying what is missing. Returns node's path."""
    in_ci = bool(os.environ.get("CI"))
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        reason = f"{'node' if node is None else 'npm'} is not installed: tests/{folder.name} needs Node.js 20+ and npm (the nodejs package, version 20 or later)"
        if in_ci:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    command = f"npm ci --prefix tests/{folder.name}"
    hidden_lock = folder / "node_modules" / ".package-lock.json"  # npm writes it last, after an install
    fresh = hidden_lock.is_file() and hidden_lock.stat().st_mtime >= (folder / "package-lock.json").stat().st_mtime
    if folder in _installed or (fresh and all((folder / "node_modules" / name / "package.json").is_file() for name in packages)):
        _installed.add(folder)
        return node
    if in_ci:  # .ci/run installs them: under CI a missing install is a broken CI, not a skip
        pytest.fail(f"the npm packages of tests/{folder.name} are not installed: .ci/run should have run `{command}`", pytrace=False)
    installed = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder, capture_output=True, text=True, timeout=600
    )
    if installed.returncode != 0:
        pytest.skip(f"`{command}` failed, so tests/{folder.name}'s npm packages are missing:\n{installed.stderr[-2000:]}")
    _installed.add(folder)
    return node


# ---------------------------------------------------------------------------------------
# Users: made once per service. Alice and Bob are Better Auth's users, linked to backend
# accounts by their first token; a password account signs up on the backend itself.
# ---------------------------------------------------------------------------------------


class User:
    """An account the tests act as: `token()` mints a fresh access token that speaks for it."""

    def __init__(self, id, email, mint, password=None, subject=None):
        self.id, self.email, self.mint, self.password, self.subject = id, email, mint, password, subject

    def token(self) -> str:
        return self.mint()

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token()}"}

    def tasks_url(self, task_id=None) -> str:
        return f"/api/{self.id}/tasks" + ("" if task_id is None else f"/{task_id}")


def sign_up(service, name: str) -> User:
    """A backend password account; its tokens are the service's own, as its login gives them."""
    email, password = f"{name}@example.com", f"{name}-password-1"
    response = httpx.post(f"{service.url}/api/auth/signup", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    user_id = response.json()["id"]
    return User(user_id, email, lambda: own_token(user_id), password=password)


def link(service, issuer, subject: str, email: str | None = None) -> User:
    """Better Auth's user `subject`: its first token makes the backend account, /api/me tells the id."""
    mint = lambda: issuer.token(subject, email=email)  # noqa: E731
    response = httpx.get(f"{service.url}/api/me", headers={"Authorization": f"Bearer {mint()}"})
    assert response.status_code == 200, response.text
    return User(response.json()["id"], email, mint, subject=subject)


@pytest.fixture(scope="session")
def alice(service, issuer):
    return link(service, issuer, str(uuid.uuid4()), "alice@example.com")


@pytest.fixture(scope="session")
def bob(service, issuer):
    return link(service, issuer, secrets.token_urlsafe(24), "bob@example.com")


@pytest.fixture(scope="session")
def pat(service):
    """A password account: signed up and logged in on the backend, no Better Auth."""
    return sign_up(service, "pat")


@pytest.fixture(scope="module")
def pruned_replica(service, alice, issuer, tmp_path_factory):
    """A second process on the session service's database, started after every deletion was
    aged past CHANGES_RETENTION_DAYS, so that it prunes them (as a process does at start);
    `old_cursor` is alice's cursor from before one of those deletions. For one module only: on
    SQLite a second process is no supported replica, and its chores (reminders) would take
    work from the session service's."""
    headers = {"Authorization": f"Bearer {alice.token()}"}
    with httpx.Client(base_url=service.url, timeout=10) as client:
        task = client.post(alice.tasks_url(), json={"title": "goes"}, headers=headers).json()
        old_cursor = client.get(f"/api/{alice.id}/changes", params={"limit": 500}, headers=headers).json()["cursor"]
        assert client.delete(alice.tasks_url(task["id"]), headers=headers).status_code == 204
    if service.database_url.startswith("sqlite"):
        service.sql("UPDATE task_tombstones SET deleted_at = strftime('%Y-%m-%dT%H:%M:%f000Z', 'now', '-40 days')")
    else:
        service.sql("UPDATE task_tombstones SET deleted_at = now() - interval '40 days'")
    directory = tmp_path_factory.mktemp("replica")
    with running_service(service_environment(service.database_url, issuer), directory / "replica.log") as replica:
        deadline = time.monotonic() + 10
        while service.sql("SELECT count(*) FROM task_tombstones WHERE user_id = $1", alice.id)[0][0]:
            assert time.monotonic() < deadline, "the replica did not prune the aged deletions"
            time.sleep(0.05)
        yield SimpleNamespace(service=replica, old_cursor=old_cursor)


@pytest.fixture
def make_token(issuer):
    """make_token(sub, **claims): a token signed like Better Auth's; a claim set to None is left out."""
    return issuer.token


@pytest.fixture
def create_task(client, alice):
    def create(user=alice, **fields):
        response = client.post(user.tasks_url(), json={"title": "a task", **fields}, headers=user.headers)
        assert response.status_code == 201, response.text
        return response.json()

    return create
