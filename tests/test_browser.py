"""A real browser on the frontend's origin: Better Auth sign-in, then the API across origins.

Headless Chromium (Debian's chromium package), driven by Playwright for Python through
executable_path, opens tests/browser's page: better-auth's client with `jwtClient()`, bundled
by esbuild. The page is served from Better Auth's own origin, as a Next.js app serves its
pages beside Better Auth (tests/better_auth/server.mjs serves it there, test-only), and the
backend runs on another origin, configured as in production: CORS_ORIGINS names the page's
origin; JWKS_URL, JWT_ISSUER and JWT_AUDIENCE name Better Auth. The page signs up with Better
Auth, gets its token with `authClient.token()` and calls the backend with it, so the browser
sends the preflights and decides what the page may read. A page on an origin CORS_ORIGINS does
not list is refused by the browser itself. Live events: two pages of one user (two browser
contexts, each signed in) open a native EventSource with a ticket, as the README shows, and a
change made through one page reaches the other; on PostgreSQL each page talks to a replica
of its own on the one database, and one replica restarts. On a failure, each open page's
screenshot goes into the test's tmp_path. It runs on SQLite and on PostgreSQL.

Without Chromium, or Node for the npm packages, the module skips saying which package brings
it; under CI that is an error (.ci/run installs them).
"""

import json
import os
import secrets
import shutil
import subprocess
import threading
import time
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
from playwright.sync_api import sync_playwright

from conftest import database_for, free_port, npm_installed, running_service, service_environment
from test_better_auth import BETTER_AUTH_DIR, decoded, running_better_auth
from test_tasks import parse_time

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # Playwright gives each launch a fresh profile (--user-data-dir) of its own
PROBLEM = "application/problem+json"
PASSWORD = "better-auth-password-1"
SIGNUPS_PER_MINUTE = 1  # the backend's own signup, limited so that the page meets a 429

open_pages = []  # screenshotted when a test fails


def chromium_or_skip() -> Path:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: Debian's chromium package brings it (apt-get install chromium)"
        if os.environ.get("CI"):  # .ci/run installs it: under CI a skip would hide a broken install
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(stack):
    """Chromium, started after the stack and stopped before it: while Playwright's sync API is
    open, its event loop counts as running, and the PostgreSQL fixtures' asyncio.run() refuse."""
    executable = chromium_or_skip()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def page_folder(tmp_path_factory):
    """tests/browser's page, and its script bundled for the browser by esbuild: once for the
    run, for the module's SQLite and PostgreSQL parts alike."""
    chromium_or_skip()  # before anything starts: without a browser there is nothing to run
    npm_installed(BROWSER_DIR, "better-auth", "esbuild")
    folder = tmp_path_factory.mktemp("page")
    shutil.copy(BROWSER_DIR / "index.html", folder / "index.html")
    # node_modules/.bin/esbuild: a Node script, or the native binary once esbuild's install script ran
    esbuild = [BROWSER_DIR / "node_modules/.bin/esbuild", "app.js", "--bundle", "--format=esm",
               "--platform=browser", "--target=es2022", f"--outfile={folder / 'app.js'}", "--log-level=warning"]
    built = subprocess.run(esbuild, cwd=BROWSER_DIR, capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stdout + built.stderr
    return folder


@contextmanager
def serving_elsewhere():
    """Another site: a page on an origin that CORS_ORIGINS does not list."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<!doctype html><title>elsewhere</title><h1>Another site</h1>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def stack(backend, page_folder, tmp_path_factory):
    """Better Auth serving the page, the backend on another origin, and another site."""
    node = npm_installed(BETTER_AUTH_DIR, "better-auth")
    directory = tmp_path_factory.mktemp(f"browser-{backend}")
    auth_url = f"http://127.0.0.1:{free_port()}"
    with database_for(backend, directory) as database_url:
        issuer = SimpleNamespace(jwks_url=f"{auth_url}/api/auth/jwks")
        env = service_environment(
            database_url, issuer, JWT_ISSUER=auth_url, JWT_AUDIENCE=auth_url, CORS_ORIGINS=auth_url,
            RATE_LIMIT_SIGNUP=f"{SIGNUPS_PER_MINUTE}/minute",
        )
        with running_better_auth(node, auth_url, directory / "better-auth.log", TEST_PAGE_DIR=str(page_folder)):
            with running_service(env, directory / "service.log") as service, serving_elsewhere() as elsewhere_url:
                assert service.url != auth_url and elsewhere_url not in (auth_url, service.url)
                # PostgreSQL: a second replica on the same database. A SQLite file has one process.
                replica = Replica({**env, "PORT": str(free_port())}, directory) if backend == "postgresql" else None
                try:
                    yield SimpleNamespace(
                        auth_url=auth_url,
                        service=service,
                        replica=replica,
                        page_url=f"{auth_url}/test/page/index.html?api={service.url}",
                        elsewhere_url=elsewhere_url,
                    )
                finally:
                    if replica is not None:
                        replica.stop()


class Replica:
    """Another process of the service, on the same database and port each time it starts."""

    def __init__(self, env: dict, directory: Path):
        self.env, self.directory, self.starts, self.running = env, directory, 0, ExitStack()
        self.start()

    def start(self):
        self.starts += 1
        log_path = self.directory / f"replica-{self.starts}.log"
        self.service = self.running.enter_context(running_service(self.env, log_path))

    def stop(self):
        self.running.close()  # SIGTERM, and its exit awaited


def opened(browser, url: str):
    """A new browser context (its own cookies) with a page at url; console lines collected."""
    page = browser.new_context().new_page()
    page.set_default_timeout(15_000)
    page.console_lines = []  # what the page's console showed, the browser's own messages included
    page.on("console", lambda message: page.console_lines.append(message.text))
    page.goto(url)
    open_pages.append(page)
    return page


class PageUser:
    """The page, signed up and in with Better Auth; its calls run in the page."""

    def __init__(self, page, email: str, sign_up: bool = True):
        self.page, self.email = page, email
        if sign_up:
            signed_up = page.evaluate("([email, password]) => app.signUp('Ada', email, password)", [email, PASSWORD])
            assert signed_up["error"] is None, signed_up
        signed_in = page.evaluate("([email, password]) => app.signIn(email, password)", [email, PASSWORD])
        assert signed_in["error"] is None and (not sign_up or signed_in["id"] == signed_up["id"]), signed_in
        self.better_auth_id = signed_in["id"]

    def token(self) -> str:
        return self.page.evaluate("() => app.token()")

    def call(self, method: str, path: str, body=None, headers=None) -> dict:
        options = {"headers": headers or {}, **({} if body is None else {"body": body})}
        return self.page.evaluate("([method, path, options]) => app.call(method, path, options)", [method, path, options])

    def tasks_url(self, task_id=None) -> str:
        return f"/api/{self.id}/tasks" + ("" if task_id is None else f"/{task_id}")


@pytest.fixture(scope="module")
def user(browser, stack):
    page = opened(browser, stack.page_url)
    page.wait_for_function("() => window.app !== undefined")
    user = PageUser(page, f"ada.{secrets.token_hex(4)}@example.com")
    me = user.call("GET", "/api/me")
    assert me["status"] == 200, me
    user.id = me["body"]["id"]
    yield user
    open_pages.remove(page)
    page.context.close()


@pytest.fixture(scope="module")
def elsewhere(browser, stack):
    """A page of the other site, in a browser context of its own."""
    page = opened(browser, stack.elsewhere_url)
    yield page
    open_pages.remove(page)
    page.context.close()


@pytest.fixture(autouse=True)
def screenshot_on_failure(request, tmp_path):
    """A failed test leaves a screenshot of each open page in its tmp_path."""
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before:  # this test's call was reported failed
        for number, page in enumerate(open_pages):
            path = tmp_path / f"page-{number}.png"
            page.screenshot(path=path, full_page=True)
            print(f"screenshot of {page.url}: {path}")


def requests_logged(service, since: int) -> list:
    """The service's request log lines after the first `since`, as (method, route, status)."""
    time.sleep(0.2)  # the line is written as the response ends
    lines = [json.loads(line) for line in service.log().splitlines() if line.startswith("{")]
    requests = [(line["method"], line["route"], line["status"]) for line in lines if line.get("message") == "request"]
    return requests[since:]


def request_count(service) -> int:
    return len(requests_logged(service, 0))


def create(user, **fields) -> dict:
    created = user.call("POST", user.tasks_url(), body={"title": "a task", **fields})
    assert created["status"] == 201, created
    return created


# ---------------------------------------------------------------------------------------
# The frontend's origin: Better Auth on the same origin, the backend on another.
# ---------------------------------------------------------------------------------------


def test_the_page_gets_a_better_auth_token_with_jwt_client(stack, user):
    header, claims = decoded(user.token())
    assert header["alg"] == "EdDSA"
    assert (claims["iss"], claims["aud"]) == (stack.auth_url, stack.auth_url)
    assert (claims["sub"], claims["email"]) == (user.better_auth_id, user.email)


def test_the_page_asks_the_backend_across_origins_who_the_user_is(user):
    me = user.call("GET", "/api/me")
    assert (me["status"], me["headers"]["content-type"]) == (200, "application/json")
    assert me["body"] == {"id": user.id, "email": user.email, "created_at": me["body"]["created_at"]}
    parse_time(me["body"]["created_at"])
    # The browser lets the page read the CORS-safelisted headers (Content-Type, Content-Length)
    # and those the backend exposes (here X-Request-ID), and hides the rest (Date, Server).
    assert me["readable"] == ["content-length", "content-type", "x-request-id"]


def test_the_page_creates_a_task_and_reads_its_etag_and_location(user, stack):
    created = create(user, title="Buy milk", priority="high", tags=["Home"])
    task = created["body"]
    assert (task["title"], task["priority"], task["tags"], task["user_id"]) == ("Buy milk", "high", ["home"], user.id)
    assert created["readable"] == ["content-length", "content-type", "etag", "location", "x-request-id"]
    assert created["headers"]["etag"].startswith('"')
    location = created["headers"]["location"]
    assert location in (user.tasks_url(task["id"]), stack.service.url + user.tasks_url(task["id"]))


def test_the_page_reads_x_total_count_and_link_of_a_list(user):
    tag = f"list-{secrets.token_hex(3)}"
    for title in ("first", "second", "third"):
        create(user, title=title, tags=[tag])
    listed = user.call("GET", f"{user.tasks_url()}?tag={tag}&sort=title&limit=2")
    assert listed["status"] == 200, listed
    assert [task["title"] for task in listed["body"]] == ["first", "second"]
    assert listed["headers"]["x-total-count"] == "3"
    assert listed["headers"]["link"].endswith('>; rel="next"') and "offset=2" in listed["headers"]["link"]
    assert listed["readable"] == ["content-length", "content-type", "etag", "link", "x-request-id", "x-total-count"]


def test_the_page_updates_a_task_if_it_is_still_the_version_it_read(user):
    created = create(user, title="Call the plumber")
    task_url = user.tasks_url(created["body"]["id"])
    fetched = user.call("GET", task_url)
    assert (fetched["status"], fetched["headers"]["etag"]) == (200, created["headers"]["etag"])
    unchanged = user.call("GET", task_url, headers={"If-None-Match": fetched["headers"]["etag"]})
    assert (unchanged["status"], unchanged["body"]) == (304, "")
    patched = user.call("PATCH", task_url, body={"completed": True}, headers={"If-Match": fetched["headers"]["etag"]})
    assert patched["status"] == 200, patched
    assert patched["body"]["completed"] is True
    assert patched["headers"]["etag"] not in (None, fetched["headers"]["etag"])


def test_the_page_gets_a_412_for_a_version_someone_else_changed(user):
    created = create(user, title="Water the plants")
    task_url = user.tasks_url(created["body"]["id"])
    version = created["headers"]["etag"]
    other_tab = user.call("PATCH", task_url, body={"title": "Water the cactus"}, headers={"If-Match": version})
    assert other_tab["status"] == 200, other_tab
    stale = user.call("PATCH", task_url, body={"title": "Water the ferns"}, headers={"If-Match": version})
    assert (stale["status"], stale["headers"]["content-type"]) == (412, PROBLEM)
    assert (stale["body"]["status"], stale["body"]["title"]) == (412, "Precondition Failed")
    assert user.call("GET", task_url)["body"]["title"] == "Water the cactus"


def test_the_page_reads_retry_after_of_a_429(user):
    first, second = ({"email": f"pat.{secrets.token_hex(4)}@example.com", "password": "backend-password-1"} for _ in "12")
    assert user.call("POST", "/api/auth/signup", body=first)["status"] == 201
    limited = user.call("POST", "/api/auth/signup", body=second)
    assert (limited["status"], limited["headers"]["content-type"]) == (429, PROBLEM)
    assert int(limited["headers"]["retry-after"]) > 0
    assert limited["readable"] == ["content-length", "content-type", "retry-after", "x-request-id"]


# ---------------------------------------------------------------------------------------
# Another origin: not in CORS_ORIGINS, so the browser refuses its page the answers.
# ---------------------------------------------------------------------------------------

FETCH = """async ([url, headers]) => {
    try {
        const response = await fetch(url, { headers });
        return { status: response.status, body: await response.text() };
    } catch (error) {
        return { error: error.name, message: error.message };
    }
}"""


def test_a_page_elsewhere_gets_no_answer_the_server_sent(stack, elsewhere):
    # A simple GET needs no preflight: the server answers, and the browser keeps it from the page.
    elsewhere.console_lines.clear()
    before = request_count(stack.service)
    result = elsewhere.evaluate(FETCH, [f"{stack.service.url}/healthz", {}])
    assert result == {"error": "TypeError", "message": "Failed to fetch"}
    assert requests_logged(stack.service, before) == [("GET", "/healthz", 200)]
    assert any("has been blocked by CORS policy" in line for line in elsewhere.console_lines), elsewhere.console_lines


def test_a_page_elsewhere_cannot_send_a_token(stack, user, elsewhere):
    # A bearer token needs a preflight: the server refuses that origin, so the GET is never sent.
    elsewhere.console_lines.clear()
    before = request_count(stack.service)
    headers = {"Authorization": f"Bearer {user.token()}"}
    result = elsewhere.evaluate(FETCH, [f"{stack.service.url}/api/me", headers])
    assert result == {"error": "TypeError", "message": "Failed to fetch"}
    assert requests_logged(stack.service, before) == [("OPTIONS", None, 400)]
    assert any("has been blocked by CORS policy" in line for line in elsewhere.console_lines), elsewhere.console_lines


# ---------------------------------------------------------------------------------------
# Live events (v3): two pages of one user, each with a native EventSource across origins.
# On PostgreSQL each page talks to a replica of its own, both on one database.
# ---------------------------------------------------------------------------------------

LIVE_SECONDS = 1.0  # the contract: a change reaches the streams of every replica within 1 s
WAIT_MS = 10_000  # every wait below is bounded by this


def events_of(page) -> list:
    return page.evaluate("() => app.events")


def wait_for_event(page, kind: str, count: int = 1, where: str = "true") -> list:
    """Bounded: the page's events of this kind that match `where` (a JS expression of e), once there are `count`."""
    matching = f"(kind) => app.events.filter((e) => e.type === kind && ({where}))"
    page.wait_for_function(f"([kind, count]) => ({matching})(kind).length >= count", arg=[kind, count], timeout=WAIT_MS)
    return page.evaluate(matching, kind)


@pytest.fixture(scope="module")
def two_pages(browser, stack, user):
    """The user's page (on stack.service) listening, and a second page of the same user in a
    browser context of its own, signed in with Better Auth, on the replica where there is one."""
    second_api = (stack.replica.service if stack.replica else stack.service).url
    page = opened(browser, stack.page_url.replace(f"api={stack.service.url}", f"api={second_api}"))
    page.wait_for_function("() => window.app !== undefined")
    second = PageUser(page, user.email, sign_up=False)
    second.id = user.id
    assert second.call("GET", "/api/me")["body"]["id"] == user.id
    for each in (user, second):
        each.page.evaluate("(id) => app.listen(id)", user.id)
        wait_for_event(each.page, "ready")
    yield user, second
    open_pages.remove(page)
    page.context.close()


def test_two_pages_of_one_user_stay_in_step_through_two_replicas(stack, two_pages):
    one, two = two_pages
    created = create(one, title="Feed the cat")["body"]
    for page in (one.page, two.page):  # the creation reached both streams
        wait_for_event(page, "change", where=f"e.data.id === {created['id']}")
    started = time.time()
    done = one.call("PATCH", one.tasks_url(created["id"]) + "/complete", body={"completed": True})
    assert done["status"] == 200, done
    [arrived] = wait_for_event(two.page, "change", where=f"e.data.id === {created['id']} && e.data.completed")
    assert arrived["data"] == done["body"]  # the task as GET answers it
    latency = arrived["at"] / 1000 - started  # the browser's clock and ours are the machine's
    print(f"page two saw the completion {latency:.3f} s after page one asked for its token to send it")
    assert latency < LIVE_SECONDS, latency
    [seen_by_one] = wait_for_event(one.page, "change", where=f"e.data.id === {created['id']} && e.data.completed")
    assert seen_by_one["id"] == arrived["id"]  # one cursor, whichever replica answers it
    # Each change once, on each page; no stream ever errored into a reconnect.
    for page in (one.page, two.page):
        events = events_of(page)
        ids = [event["id"] for event in events if event["type"] == "change"]
        assert len(ids) == len(set(ids)), events
        assert [event["type"] for event in events].count("ready") == 1, events


def test_a_page_whose_replica_restarts_reconnects_with_a_fresh_ticket_and_misses_nothing(stack, two_pages):
    if stack.replica is None:
        pytest.skip("a SQLite file has one process: there is no other replica to write through while this one restarts")
    one, two = two_pages
    stack.replica.stop()  # SIGTERM ends its streams: page two's EventSource errors, and retries each second
    missed = create(one, title="Written while the replica was down")["body"]  # through the other replica
    stack.replica.start()
    # A fresh ticket (the first is used up), ?since= the last event id: the missed change, once.
    wait_for_event(two.page, "ready", count=2)
    [arrived] = wait_for_event(two.page, "change", where=f"e.data.id === {missed['id']}")
    assert arrived["data"] == missed
    events = events_of(two.page)
    ids = [event["id"] for event in events if event["type"] == "change"]
    assert len(ids) == len(set(ids)), events
    # And live again through the restarted replica.
    done = one.call("PATCH", one.tasks_url(missed["id"]) + "/complete", body={"completed": True})
    assert done["status"] == 200, done
    wait_for_event(two.page, "change", where=f"e.data.id === {missed['id']} && e.data.completed")
