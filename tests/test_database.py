"""The service against real PostgreSQL servers the tests own: outages, TLS as Neon needs it, PgBouncer.

Each scenario starts its own cluster (tests/pg_cluster.py: initdb into a temporary directory,
a free port, trust auth) so it can stop and start it without touching the machine's
PostgreSQL; the service is the real uvicorn process of conftest's `running_service`.
The outage scenario runs once per module and records what a client saw; each test then
asserts one behaviour of that record.
"""

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from conftest import ROOT, own_token, running_service, service_environment
from pg_cluster import missing_binaries, pgbouncer, private_cluster

PROBLEM = "application/problem+json"
REQUEST_TIMEOUT = 20  # seconds: no request may take this long, so a hang fails instead of blocking the run
DOWN_ANSWER_BOUND = 6  # seconds: the service's connect timeout (5 s) and some slack for a busy machine
PASSWORD = "a-good-password"
IDLE_STOP_SECONDS = 5  # SIGTERM to exit, for a service with no request in flight


def require(*binaries: str) -> None:
    reason = missing_binaries(*binaries)
    if reason:
        pytest.skip(f"{reason}: these tests start real PostgreSQL servers (and PgBouncer) of their own")


@dataclass
class Answer:
    """What a client saw: status None means no HTTP answer at all (refused, reset or timed out)."""

    method: str
    path: str
    status: int | None
    content_type: str = ""
    retry_after: str | None = None
    body: object = None
    started: float = 0.0
    seconds: float = 0.0
    error: str = ""

    def __str__(self) -> str:
        outcome = self.status if self.status is not None else self.error
        return f"{self.method} {self.path} -> {outcome} in {self.seconds:.2f}s {self.body!r:.200}"


def ask(client: httpx.Client, method: str, path: str, **kwargs) -> Answer:
    started = time.monotonic()
    try:
        response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        return Answer(method, path, None, started=started, seconds=time.monotonic() - started, error=f"{type(exc).__name__}: {exc}")
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = response.text
    return Answer(
        method,
        path,
        response.status_code,
        response.headers.get("content-type", ""),
        response.headers.get("retry-after"),
        body,
        started,
        time.monotonic() - started,
    )


def sign_up(client: httpx.Client, email: str) -> int:
    response = client.post("/api/auth/signup", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def service_backends(cluster, database: str) -> list[int]:
    """The pids of the server processes serving `database` (the service's pooled connections)."""
    rows = cluster.sql(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
        database,
    )
    return sorted(row["pid"] for row in rows)


def stopped_within(service, seconds: float) -> bool:
    """SIGTERM; whether the process exited within so many seconds (if not, it is killed)."""
    service.process.terminate()
    try:
        service.process.wait(timeout=seconds)
        return True
    except subprocess.TimeoutExpired:
        service.process.kill()
        service.process.wait()
        return False


def log_problems(log: str) -> list[str]:
    """What went wrong inside the service, from its log: each request that ended in an unhandled
    exception or a 5xx other than 503, and the exception it raised (the last line of its traceback)."""
    problems, in_traceback = [], False
    for line in log.splitlines():
        if "Exception in ASGI application" in line:
            problems.append(line)
            in_traceback = True
        elif in_traceback and re.match(r"[\w.]+(Error|Exception|Exit)\b", line):
            problems.append(line)
            in_traceback = False
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("status"), int) and entry["status"] >= 500 and entry["status"] != 503:
            problems.append(line)
    return problems


# ---------------------------------------------------------------------------------------
# Outage: the database stops and starts again under a running service.
# ---------------------------------------------------------------------------------------

# What each route is asked while the database is down, and again once it is back.
# (name, method, path with {user} and {task}, body, status once the database is back)
ROUTES = [
    ("signup", "POST", "/api/auth/signup", {"email": "{name}@example.com", "password": PASSWORD}, 201),
    ("login", "POST", "/api/auth/login", {"email": "owner@example.com", "password": PASSWORD}, 200),
    ("me", "GET", "/api/me", None, 200),
    ("list", "GET", "/api/{user}/tasks", None, 200),
    ("create", "POST", "/api/{user}/tasks", {"title": "created-{name}"}, 201),
    ("get", "GET", "/api/{user}/tasks/{task}", None, 200),
    ("replace", "PUT", "/api/{user}/tasks/{task}", {"title": "replaced-{name}"}, 200),
    ("update", "PATCH", "/api/{user}/tasks/{task}", {"title": "updated-{name}"}, 200),
    ("complete", "PATCH", "/api/{user}/tasks/{task}/complete", {"completed": True}, 200),
    ("delete", "DELETE", "/api/{user}/tasks/{task}", None, 204),
    ("readyz", "GET", "/readyz", None, 200),
]
NO_DATABASE_ROUTES = [("healthz", "/healthz"), ("jwks", "/api/auth/jwks"), ("openapi", "/openapi.json")]
WRITERS = 6
READERS = 2
RESTARTS_UNDER_TRAFFIC = 2  # each stop is a new chance to catch a connection as the server drops it


@dataclass
class Outage:
    """What the outage scenario saw, phase by phase."""

    user_id: int = 0
    probe_task: dict = field(default_factory=dict)
    pool_before: list[int] = field(default_factory=list)
    burst_after_restart: list[Answer] = field(default_factory=list)
    down: dict[str, Answer] = field(default_factory=dict)
    down_without_database: dict[str, Answer] = field(default_factory=dict)
    first_readyz_after_start: Answer | None = None
    rows_after_down: list = field(default_factory=list)
    emails_after_down: set[str] = field(default_factory=set)
    back: dict[str, Answer] = field(default_factory=dict)
    traffic: list[Answer] = field(default_factory=list)
    up_windows: list[tuple[float, float]] = field(default_factory=list)  # from a start returning to the next stop
    writer_tasks: dict[int, int] = field(default_factory=dict)  # writer -> its task id
    acknowledged_version: dict[int, int] = field(default_factory=dict)  # writer -> last version answered 200
    attempted_version: dict[int, int] = field(default_factory=dict)
    acknowledged_creates: dict[int, str] = field(default_factory=dict)  # task id -> title, answered 201
    rows_after: list = field(default_factory=list)
    service_alive_after: bool = False
    log: str = ""


def fill(template, name: str, user_id: int, task_id: int):
    if isinstance(template, dict):
        return {key: fill(value, name, user_id, task_id) for key, value in template.items()}
    if isinstance(template, str):
        return template.format(name=name, user=user_id, task=task_id)
    return template


def ask_route(client, route, name: str, user_id: int, task_id: int, headers: dict) -> Answer:
    _, method, path, body, _ = route
    kwargs = {"headers": headers}
    if body is not None:
        kwargs["json"] = fill(body, name, user_id, task_id)
    return ask(client, method, fill(path, name, user_id, task_id), **kwargs)


def writer(number: int, url: str, headers: dict, user_id: int, task_id: int, stop: threading.Event, outage: Outage, lock):
    """PATCH one task with numbered versions (title and description equal, completed = version is even)
    and now and then create a task whose title and description are equal: a half-applied write would
    break one of those invariants."""
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT, headers=headers) as client:
        version = 0
        while not stop.is_set():
            version += 1
            if version % 3 == 0:
                title = f"w{number}-c{version}"
                answer = ask(client, "POST", f"/api/{user_id}/tasks", json={"title": title, "description": title})
                if answer.status == 201:
                    with lock:
                        outage.acknowledged_creates[answer.body["id"]] = title
            else:
                title = f"w{number}-v{version}"
                change = {"title": title, "description": title, "completed": version % 2 == 0}
                with lock:
                    outage.attempted_version[number] = version
                answer = ask(client, "PATCH", f"/api/{user_id}/tasks/{task_id}", json=change)
                if answer.status == 200:
                    with lock:
                        outage.acknowledged_version[number] = version
            with lock:
                outage.traffic.append(answer)
            if answer.status is None or answer.status == 503:
                time.sleep(0.05)


def reader(url: str, headers: dict, user_id: int, stop: threading.Event, outage: Outage, lock):
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT, headers=headers) as client:
        while not stop.is_set():
            for path in (f"/api/{user_id}/tasks?limit=5", "/readyz", "/healthz"):
                answer = ask(client, "GET", path)
                with lock:
                    outage.traffic.append(answer)
            time.sleep(0.02)


@pytest.fixture(scope="module")
def outage(issuer, tmp_path_factory):
    """One service on a private cluster, through three things a database does to it:

    1. a restart with no traffic at all, then a burst that must reuse the pool;
    2. a stop, during which every route is asked once, then a start, after which every route is asked again;
    3. a stop and a start while writers and a reader keep sending requests.
    """
    require("initdb", "pg_ctl")
    directory = tmp_path_factory.mktemp("outage")
    record = Outage()
    with private_cluster() as cluster:
        cluster.sql("CREATE DATABASE todo")
        env = service_environment(cluster.url("todo"), issuer)
        with running_service(env, directory / "service.log") as service:
            with httpx.Client(base_url=service.url, timeout=REQUEST_TIMEOUT) as client:
                record.user_id = user_id = sign_up(client, "owner@example.com")
                headers = {"Authorization": f"Bearer {own_token(user_id)}"}

                def new_task(title):
                    response = client.post(f"/api/{user_id}/tasks", json={"title": title}, headers=headers)
                    assert response.status_code == 201, response.text
                    return response.json()

                record.probe_task = new_task("probe")
                record.writer_tasks = {number: new_task(f"writer {number}")["id"] for number in range(WRITERS)}

                # Several pooled connections, all idle when the database goes away.
                with ThreadPoolExecutor(12) as pool:
                    for _ in range(10):
                        list(pool.map(lambda _: ask(client, "GET", f"/api/{user_id}/tasks", headers=headers), range(24)))
                        record.pool_before = service_backends(cluster, "todo")
                        if len(record.pool_before) >= 3:
                            break

                # 1. A restart nobody sees happen: the next requests meet the old, dead connections.
                cluster.stop()
                cluster.start()
                with ThreadPoolExecutor(12) as pool:
                    burst = pool.map(lambda _: ask(client, "GET", f"/api/{user_id}/tasks", headers=headers), range(24))
                    record.burst_after_restart = list(burst)

                # 2. Down: every route once. Then back: the first /readyz, then every route again.
                cluster.stop()
                for route in ROUTES:
                    record.down[route[0]] = ask_route(client, route, "down", user_id, record.probe_task["id"], headers)
                for name, path in NO_DATABASE_ROUTES:
                    record.down_without_database[name] = ask(client, "GET", path)
                cluster.start()
                record.first_readyz_after_start = ask(client, "GET", "/readyz")
                record.rows_after_down = cluster.sql(
                    "SELECT id, title, description, completed FROM tasks WHERE user_id = $1 ORDER BY id", user_id, database="todo"
                )
                record.emails_after_down = {row["email"] for row in cluster.sql("SELECT email FROM users", database="todo")}
                for route in ROUTES:
                    record.back[route[0]] = ask_route(client, route, "back", user_id, record.probe_task["id"], headers)

                # 3. Stop and start under traffic.
                stop, lock = threading.Event(), threading.Lock()
                threads = [
                    threading.Thread(target=writer, args=(n, service.url, headers, user_id, task, stop, record, lock))
                    for n, task in record.writer_tasks.items()
                ]
                threads += [
                    threading.Thread(target=reader, args=(service.url, headers, user_id, stop, record, lock)) for _ in range(READERS)
                ]
                up_since = time.monotonic()
                try:
                    for thread in threads:
                        thread.start()
                    for _ in range(RESTARTS_UNDER_TRAFFIC):
                        time.sleep(1.0)
                        record.up_windows.append((up_since, time.monotonic()))
                        cluster.stop()
                        time.sleep(1.0)
                        cluster.start()
                        up_since = time.monotonic()
                    time.sleep(1.5)
                finally:
                    stop.set()
                    for thread in threads:
                        thread.join(REQUEST_TIMEOUT + 5)
                    record.up_windows.append((up_since, time.monotonic()))

                record.rows_after = cluster.sql(
                    "SELECT id, title, description, completed FROM tasks WHERE user_id = $1 ORDER BY id", user_id, database="todo"
                )
                record.service_alive_after = service.process.poll() is None
            record.log = service.log()
            yield record
            # With no request in flight a service exits within a second of SIGTERM. After these
            # outages a pool connection that died under traffic can stay checked out, and the
            # pool's close would wait for it forever: the service gives that close 3 s. Stop it
            # here, and say so in the run's warnings if it took longer than that.
            if not stopped_within(service, IDLE_STOP_SECONDS):
                warnings.warn(f"the service did not stop within {IDLE_STOP_SECONDS} s of SIGTERM after the outages: killed", stacklevel=1)


def test_the_pool_held_several_connections_before_the_outage(outage):
    # The recovery tests below mean something only if old pooled connections were there to go stale.
    assert len(outage.pool_before) >= 2, outage.pool_before


def test_after_a_restart_with_no_traffic_the_first_requests_all_succeed_on_the_stale_pool(outage):
    failures = [str(answer) for answer in outage.burst_after_restart if answer.status != 200]
    assert failures == [], "\n".join(failures + log_problems(outage.log))


@pytest.mark.parametrize("route", [route[0] for route in ROUTES if route[0] != "readyz"])
def test_while_the_database_is_down_an_api_route_answers_503_problem_json_with_retry_after(outage, route):
    answer = outage.down[route]
    assert answer.status == 503, str(answer)
    assert answer.content_type == PROBLEM
    assert answer.retry_after is not None and answer.retry_after.isdigit() and int(answer.retry_after) > 0
    assert set(answer.body) == {"type", "title", "status", "detail"}
    assert answer.body["status"] == 503
    assert answer.body["title"] == "Service Unavailable"


def test_while_the_database_is_down_readyz_answers_503(outage):
    answer = outage.down["readyz"]
    assert answer.status == 503, str(answer)
    assert answer.content_type == PROBLEM


@pytest.mark.parametrize("route", [name for name, _ in NO_DATABASE_ROUTES])
def test_while_the_database_is_down_routes_that_need_no_database_answer_200(outage, route):
    assert outage.down_without_database[route].status == 200, str(outage.down_without_database[route])


def test_while_the_database_is_down_every_answer_comes_quickly(outage):
    answers = [*outage.down.values(), *outage.down_without_database.values()]
    slow = [str(answer) for answer in answers if answer.status is None or answer.seconds > DOWN_ANSWER_BOUND]
    assert slow == []


def test_writes_answered_503_while_the_database_was_down_left_nothing_behind(outage):
    probe = [row for row in outage.rows_after_down if row["id"] == outage.probe_task["id"]]
    assert [(row["title"], row["description"], row["completed"]) for row in probe] == [("probe", None, False)]
    assert "created-down" not in {row["title"] for row in outage.rows_after_down}
    assert "down@example.com" not in outage.emails_after_down


def test_the_first_readyz_after_the_database_starts_again_is_200(outage):
    answer = outage.first_readyz_after_start
    assert answer.status == 200, f"{answer}\n" + "\n".join(log_problems(outage.log))


@pytest.mark.parametrize("route", ROUTES, ids=[route[0] for route in ROUTES])
def test_once_the_database_is_back_every_route_works_again_in_the_same_process(outage, route):
    answer = outage.back[route[0]]
    assert answer.status == route[4], str(answer)
    assert outage.service_alive_after


def test_every_answer_during_a_restart_under_traffic_is_2xx_or_503(outage):
    statuses = {answer.status for answer in outage.traffic}
    # The scenario must have hit the outage (503s) and served around it (2xx), or it proves nothing.
    assert 503 in statuses and 200 in statuses, statuses
    wrong = [str(answer) for answer in outage.traffic if answer.status is None or not (200 <= answer.status < 300 or answer.status == 503)]
    assert wrong == [], "\n".join(wrong[:20] + log_problems(outage.log))


def test_every_503_during_a_restart_under_traffic_is_problem_json_with_retry_after(outage):
    unavailable = [answer for answer in outage.traffic if answer.status == 503]
    wrong = [str(answer) for answer in unavailable if answer.content_type != PROBLEM or not answer.retry_after]
    assert unavailable and wrong == []


def test_no_request_during_a_restart_under_traffic_hangs(outage):
    slow = [str(answer) for answer in outage.traffic if answer.seconds > DOWN_ANSWER_BOUND]
    assert slow == []


def test_requests_sent_after_the_database_is_back_all_succeed(outage):
    # Asked after a start had returned, and answered before the next stop began.
    after = [
        answer
        for answer in outage.traffic
        if any(up < answer.started and answer.started + answer.seconds < down for up, down in outage.up_windows[1:])
    ]
    failures = [str(answer) for answer in after if answer.status is None or not 200 <= answer.status < 300]
    assert after and failures == [], "\n".join(failures[:20] + log_problems(outage.log))


def test_after_a_restart_under_traffic_each_task_holds_a_whole_write_no_older_than_the_last_acknowledged(outage):
    rows = {row["id"]: row for row in outage.rows_after}
    for number, task_id in outage.writer_tasks.items():
        row = rows[task_id]
        match = re.fullmatch(rf"w{number}-v(\d+)", row["title"])
        assert match, dict(row)
        version = int(match[1])
        assert row["description"] == row["title"], dict(row)
        assert row["completed"] is (version % 2 == 0), dict(row)
        assert outage.acknowledged_version.get(number, 0) <= version <= outage.attempted_version[number]


def test_after_a_restart_under_traffic_every_acknowledged_create_is_stored_whole(outage):
    rows = {row["id"]: row for row in outage.rows_after}
    assert outage.acknowledged_creates
    for task_id, title in outage.acknowledged_creates.items():
        assert task_id in rows, f"task {task_id} ({title}) was answered 201 but is not stored"
        assert rows[task_id]["title"] == rows[task_id]["description"] == title


def test_no_request_ended_in_an_unhandled_exception_through_the_outages(outage):
    assert log_problems(outage.log) == []


def test_through_the_outages_every_log_line_is_one_json_object(outage):
    """Failed reconnects included: a log pipeline reads one record per line, no traceback."""
    lines = outage.log.splitlines()
    assert any('"error": "ConnectionRefusedError"' in line or '"error": "CannotConnectNowError"' in line for line in lines)
    for line in lines:
        assert isinstance(json.loads(line), dict), line


# ---------------------------------------------------------------------------------------
# TLS: a URL as Neon's console gives it, and a server that cannot do TLS.
# ---------------------------------------------------------------------------------------

NEON_USER, NEON_PASSWORD, NEON_DATABASE = "neondb_owner", "npg_test-Secret-42", "neondb"


@pytest.fixture(scope="module")
def tls_cluster():
    require("initdb", "pg_ctl")
    with private_cluster(ssl=True, password_auth=True) as cluster:
        cluster.sql(f"CREATE ROLE {NEON_USER} LOGIN PASSWORD '{NEON_PASSWORD}'")
        cluster.sql(f"CREATE DATABASE {NEON_DATABASE} OWNER {NEON_USER}")
        cluster.sql(f"ALTER DATABASE {NEON_DATABASE} SET timezone TO 'America/St_Johns'")  # UTC-03:30
        yield cluster


@pytest.fixture(scope="module")
def neon_service(tls_cluster, issuer, tmp_path_factory):
    url = tls_cluster.url(NEON_DATABASE, NEON_USER, NEON_PASSWORD, "sslmode=require&channel_binding=require")
    directory = tmp_path_factory.mktemp("neon")
    # asyncpg's own default would try TLS anyway; with libpq's environment saying "disable",
    # only the URL's sslmode, passed on by the service, can turn TLS on.
    env = service_environment(url, issuer, PGSSLMODE="disable")
    with running_service(env, directory / "service.log") as service:
        yield service


def test_a_neon_console_url_with_sslmode_require_serves_a_signup(neon_service):
    response = httpx.post(f"{neon_service.url}/api/auth/signup", json={"email": "neon@example.com", "password": PASSWORD}, timeout=REQUEST_TIMEOUT)
    assert response.status_code == 201, response.text


def test_with_sslmode_require_every_connection_of_the_service_is_tls(neon_service, tls_cluster):
    assert httpx.get(f"{neon_service.url}/readyz", timeout=REQUEST_TIMEOUT).status_code == 200
    rows = tls_cluster.sql(
        "SELECT a.pid, a.usename, s.ssl, s.version FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)"
        " WHERE a.datname = $1 AND a.backend_type = 'client backend'",
        NEON_DATABASE,
    )
    assert rows, "the service holds no connection to the database"
    assert [(row["usename"], row["ssl"]) for row in rows] == [(NEON_USER, True)] * len(rows), [dict(row) for row in rows]


def test_channel_binding_in_the_url_is_reported_rather_than_silently_dropped(neon_service):
    assert "channel_binding" in neon_service.log()


@pytest.fixture(scope="module")
def plain_cluster():
    require("initdb", "pg_ctl")
    with private_cluster(ssl=False) as cluster:
        yield cluster


def named_sql(name: str) -> str:
    """A query of sql/migrations.sql, as the service runs it."""
    block = (ROOT / "sql" / "migrations.sql").read_text().split(f"-- name: {name} ")[1].split("-- name: ")[0]
    return "\n".join(line for line in block.splitlines()[1:] if not line.startswith("--"))


def test_a_replica_starting_while_another_creates_the_schema_waits_for_it_then_serves(plain_cluster, issuer, tmp_path):
    plain_cluster.sql("CREATE DATABASE replicas")
    url = plain_cluster.url("replicas")
    first_replica_is_creating = threading.Event()

    async def first_replica():
        connection = await asyncpg.connect(url)
        async with connection.transaction():
            await connection.execute(named_sql("lock_schema_migrations"))
            await connection.execute(named_sql("create_schema_migrations"))
            first_replica_is_creating.set()
            await asyncio.sleep(2)  # the second replica starts meanwhile
        await connection.close()

    first = threading.Thread(target=asyncio.run, args=(first_replica(),))
    first.start()
    assert first_replica_is_creating.wait(REQUEST_TIMEOUT)
    with running_service(service_environment(url, issuer), tmp_path / "service.log") as second:
        response = httpx.post(f"{second.url}/api/auth/signup", json={"email": "replica@example.com", "password": PASSWORD}, timeout=REQUEST_TIMEOUT)
        assert response.status_code == 201, response.text
    first.join()
    applied = [row["version"] for row in plain_cluster.sql("SELECT version FROM schema_migrations ORDER BY version", database="replicas")]
    assert applied == sorted(path.name for path in (ROOT / "sql" / "schema" / "postgresql").glob("*.sql"))


def test_sslmode_require_against_a_server_without_tls_refuses_to_start_naming_database_url(plain_cluster, issuer, tmp_path):
    plain_cluster.sql("CREATE DATABASE refusal")
    env = service_environment(plain_cluster.url("refusal", query="sslmode=require"), issuer)
    log_path = tmp_path / "service.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen([sys.executable, str(ROOT / "todo_service.py")], env=env, cwd=tmp_path, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            try:
                serving = httpx.get(f"http://127.0.0.1:{env['PORT']}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                serving = False
            assert not serving, "the service started on a connection without TLS:\n" + log_path.read_text()
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    output = log_path.read_text()
    assert process.returncode not in (0, -9), output
    assert any("DATABASE_URL" in line for line in output.splitlines()), output
    # Nor did it go on in plain text for a moment: the server authorized no session on that database.
    assert "database=refusal" not in plain_cluster.server_log()


# ---------------------------------------------------------------------------------------
# A pooled endpoint: PgBouncer in transaction mode, as Neon's "-pooler" hosts are.
# ---------------------------------------------------------------------------------------

BOUNCER_SERVER_POOL = 2  # server connections PgBouncer shares among the service's (up to 10) connections


@pytest.fixture(scope="module")
def pooled_service(issuer, tmp_path_factory):
    require("initdb", "pg_ctl", "pgbouncer")
    directory = tmp_path_factory.mktemp("pooled")
    with private_cluster() as cluster:
        cluster.sql("CREATE DATABASE pooled")
        cluster.sql("ALTER DATABASE pooled SET timezone TO 'Asia/Kolkata'")  # UTC+05:30
        with pgbouncer(cluster, "pooled", "transaction", BOUNCER_SERVER_POOL) as bouncer:
            env = service_environment(bouncer.url("pooled"), issuer, DATABASE_STATEMENT_CACHE_SIZE="0")
            with running_service(env, directory / "service.log") as service:
                service.cluster, service.bouncer = cluster, bouncer
                yield service


def test_through_pgbouncer_in_transaction_mode_concurrent_traffic_all_succeeds(pooled_service, issuer):
    iterations = 15

    def session(number: int) -> list[str]:
        unexpected = []
        with httpx.Client(base_url=pooled_service.url, timeout=REQUEST_TIMEOUT) as client:

            def expect(status, method, path, **kwargs):
                answer = ask(client, method, path, **kwargs)
                if answer.status != status:
                    unexpected.append(f"expected {status}: {answer}")
                return answer.body

            user = expect(201, "POST", "/api/auth/signup", json={"email": f"pooled{number}@example.com", "password": PASSWORD})
            if not isinstance(user, dict) or "id" not in user:
                return unexpected
            client.headers["Authorization"] = f"Bearer {own_token(user['id'])}"
            tasks = f"/api/{user['id']}/tasks"
            for n in range(iterations):
                task = expect(201, "POST", tasks, json={"title": f"task {n}"})
                if not isinstance(task, dict) or "id" not in task:
                    continue
                expect(200, "GET", tasks)
                expect(200, "PATCH", f"{tasks}/{task['id']}", json={"title": f"task {n} patched", "description": "d"})
                expect(200, "PATCH", f"{tasks}/{task['id']}/complete", json={"completed": True})
                expect(200, "GET", f"{tasks}/{task['id']}")
                expect(200, "GET", "/api/me")
        return unexpected

    with ThreadPoolExecutor(4) as pool:
        unexpected = [line for lines in pool.map(session, range(4)) for line in lines]
    assert unexpected == [], "\n".join(unexpected[:20] + log_problems(pooled_service.log()))

    rows = pooled_service.cluster.sql(
        "SELECT u.email, count(*) AS tasks, bool_and(t.completed AND t.title LIKE '% patched') AS all_patched"
        " FROM tasks t JOIN users u ON u.id = t.user_id GROUP BY u.email ORDER BY u.email",
        database="pooled",
    )
    assert [tuple(row) for row in rows] == [(f"pooled{n}@example.com", iterations, True) for n in range(4)]
    # And the traffic really went through PgBouncer's few shared server connections.
    assert len(service_backends(pooled_service.cluster, "pooled")) <= BOUNCER_SERVER_POOL


@pytest.mark.parametrize(("service_fixture", "database"), [("neon_service", NEON_DATABASE), ("pooled_service", "pooled")], ids=["tls", "pgbouncer"])
def test_timestamps_are_utc_whatever_time_zone_the_database_defaults_to(request, service_fixture, database):
    """Both databases default to a time zone half an hour off any whole-hour one."""
    service = request.getfixturevalue(service_fixture)
    response = httpx.post(f"{service.url}/api/auth/signup", json={"email": "zoned@example.com", "password": PASSWORD}, timeout=REQUEST_TIMEOUT)
    assert response.status_code == 201, response.text
    created_at = response.json()["created_at"]
    cluster = service.cluster if service_fixture == "pooled_service" else request.getfixturevalue("tls_cluster")
    [stored] = cluster.sql(
        """SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') FROM users WHERE email = 'zoned@example.com'""",
        database=database,
    )
    assert created_at == stored[0]
    assert abs(datetime.fromisoformat(created_at) - datetime.now(UTC)) < timedelta(seconds=60)
