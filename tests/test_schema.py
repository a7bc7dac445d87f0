"""Schema upgrades: a database made by an earlier schema, with data in it, upgrades in place.

For every earlier version (the files of sql/schema/<database>/ before the newest), a database
is built with those files alone, as the code of that time left it, and filled with accounts
and tasks; then today's service starts on it. Nothing may be lost, and everything works.
"""

import asyncio
from contextlib import ExitStack
from pathlib import Path

import asyncpg
import bcrypt
import httpx
import pytest

from conftest import ROOT, database_for, own_token, running_service, service_environment, started_together

PASSWORD = "an-old-password"
OLD_USERS = [("old.one@example.com", "2025-01-02T03:04:05.000006Z"), ("old.two@example.com", "2025-06-07T08:09:10.111213Z")]
OLD_TASKS = [
    (1, "first of one", "with a description", True, "2025-02-01T00:00:00.000001Z", "2025-02-02T00:00:00.000002Z"),
    (1, "second of one", None, False, "2025-03-01T00:00:00.000003Z", "2025-03-01T00:00:00.000003Z"),
    (2, "only of two", "Été à İSTANBUL", False, "2025-07-01T00:00:00.000004Z", "2025-07-01T00:00:00.000004Z"),
]


def schema_files(backend: str) -> list[Path]:
    return sorted((ROOT / "sql" / "schema" / backend).glob("*.sql"))


def build_old_database(database_url: str, files: list[Path]) -> None:
    """The schema as these files made it, recorded as applied, with OLD_USERS and OLD_TASKS in it."""
    password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    # Each file whole, as one script (function and trigger bodies hold semicolons).
    scripts = [path.read_text() for path in files]
    scripts.append("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, applied_at TEXT NOT NULL);")
    scripts += [f"INSERT INTO schema_migrations VALUES ('{path.name}', '2025-01-01T00:00:00Z');" for path in files]
    users = [(email, password_hash, created_at) for email, created_at in OLD_USERS]
    if database_url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:
            for script in scripts:
                connection.executescript(script)
            connection.executemany("INSERT INTO users (email, password_hash, created_at) VALUES (?, ?, ?)", users)
            connection.executemany(
                "INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)", OLD_TASKS
            )
        return

    async def build():
        connection = await asyncpg.connect(database_url)
        try:
            for script in scripts:
                async with connection.transaction():  # as the service runs each (005 locks a table)
                    await connection.execute(script)
            await connection.executemany(
                "INSERT INTO users (email, password_hash, created_at) VALUES ($1, $2, $3::text::timestamptz)", users
            )
            await connection.executemany(
                "INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at)"
                " VALUES ($1, $2, $3, $4, $5::text::timestamptz, $6::text::timestamptz)",
                OLD_TASKS,
            )
        finally:
            await connection.close()

    asyncio.run(build())


# Each earlier version, by how many files made it: both databases have as many files.
EARLIER_VERSIONS = range(1, len(schema_files("postgresql")))


@pytest.fixture(scope="module")
def upgrades(backend, issuer, tmp_path_factory) -> dict:
    """Today's service on a database made by the first N schema files, for every earlier N:
    the databases built one by one, the services started together."""
    files = schema_files(backend)
    with ExitStack() as stack:
        starting = []
        for version in EARLIER_VERSIONS:
            directory = tmp_path_factory.mktemp(f"upgrade-{backend}-{version:03}")
            database_url = stack.enter_context(database_for(backend, directory))
            build_old_database(database_url, files[:version])
            starting.append(running_service(service_environment(database_url, issuer), directory / "service.log"))
        services = started_together(stack, starting)
        for service in services:
            service.files = files
            service.client = stack.enter_context(httpx.Client(base_url=service.url, timeout=30))
        yield dict(zip(EARLIER_VERSIONS, services, strict=True))


@pytest.fixture(scope="module", params=EARLIER_VERSIONS, ids=lambda n: f"from-{n:03}")
def upgraded(request, upgrades):
    """Today's service, started on a database made by the first N schema files."""
    return upgrades[request.param]


# What a database's schema is, apart from the table of applied files: every column, index
# and trigger as the database itself describes them.
SCHEMA_QUERIES = {
    "sqlite": ["SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND tbl_name <> 'schema_migrations'"],
    "postgresql": [
        "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns"
        " WHERE table_schema = 'public' AND table_name <> 'schema_migrations'",
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename <> 'schema_migrations'",
        "SELECT event_object_table, trigger_name, action_timing, event_manipulation, action_statement FROM information_schema.triggers",
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE connamespace = 'public'::regnamespace",
    ],
}


def schema_of(service, backend: str) -> list[list[tuple]]:
    return [sorted(tuple(row) for row in service.sql(query)) for query in SCHEMA_QUERIES[backend]]


@pytest.fixture(scope="module")
def new_schema(backend, issuer, tmp_path_factory):
    """The schema of a database today's service made from nothing."""
    directory = tmp_path_factory.mktemp(f"new-{backend}")
    with database_for(backend, directory) as database_url:
        with running_service(service_environment(database_url, issuer), directory / "service.log") as service:
            return schema_of(service, backend)


def test_the_upgraded_schema_is_the_schema_of_a_new_database(upgraded, backend, new_schema):
    assert schema_of(upgraded, backend) == new_schema


def test_every_newer_schema_file_is_applied_and_recorded(upgraded):
    applied = [row[0] for row in upgraded.sql("SELECT version FROM schema_migrations ORDER BY version")]
    assert applied == [path.name for path in upgraded.files]


def test_no_account_or_task_is_lost(upgraded):
    users = upgraded.sql("SELECT id, email FROM users ORDER BY id")
    assert [tuple(row) for row in users] == [(1, OLD_USERS[0][0]), (2, OLD_USERS[1][0])]
    tasks = upgraded.sql("SELECT user_id, title, description FROM tasks ORDER BY id")
    assert [tuple(row) for row in tasks] == [(user_id, title, description) for user_id, title, description, *_ in OLD_TASKS]


def test_an_old_account_logs_in_and_sees_its_tasks_as_they_were(upgraded):
    login = upgraded.client.post("/api/auth/login", json={"email": OLD_USERS[0][0], "password": PASSWORD})
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    listed = upgraded.client.get("/api/1/tasks", params={"sort": "created_at"}, headers={"Authorization": f"Bearer {token}"})
    assert listed.status_code == 200, listed.text
    seen = [(task["title"], task["description"], task["completed"], task["created_at"], task["updated_at"]) for task in listed.json()]
    assert sorted(seen) == sorted((title, description, completed, created, updated) for user_id, title, description, completed, created, updated in OLD_TASKS if user_id == 1)


def test_the_old_tasks_are_counted_and_new_ones_add_to_the_count(upgraded):
    headers = {"Authorization": f"Bearer {own_token(1)}"}
    assert upgraded.client.get("/api/1/tasks", headers=headers).headers["x-total-count"] == "2"
    created = upgraded.client.post("/api/1/tasks", json={"title": "new after the upgrade"}, headers=headers)
    assert upgraded.client.get("/api/1/tasks", headers=headers).headers["x-total-count"] == "3"
    assert upgraded.client.delete(f"/api/1/tasks/{created.json()['id']}", headers=headers).status_code == 204
    assert upgraded.client.get("/api/1/tasks", headers=headers).headers["x-total-count"] == "2"
    assert upgraded.client.get("/api/2/tasks", headers={"Authorization": f"Bearer {own_token(2)}"}).headers["x-total-count"] == "1"


@pytest.mark.parametrize("q", ["ÉTÉ", "istanbul", "Only"])
def test_the_search_finds_old_tasks_beyond_ascii(upgraded, q):
    listed = upgraded.client.get("/api/2/tasks", params={"q": q}, headers={"Authorization": f"Bearer {own_token(2)}"})
    assert listed.status_code == 200, listed.text
    assert [task["title"] for task in listed.json()] == ["only of two"]


def test_an_old_email_is_still_taken_for_a_new_signup(upgraded):
    response = upgraded.client.post("/api/auth/signup", json={"email": OLD_USERS[1][0].upper(), "password": "a-good-password"})
    assert response.status_code == 409


def test_a_new_account_gets_a_new_id(upgraded):
    response = upgraded.client.post("/api/auth/signup", json={"email": "new@example.com", "password": "a-good-password"})
    assert response.status_code == 201
    assert response.json()["id"] > len(OLD_USERS)


def test_better_auth_user_1_gets_its_own_account_beside_the_old_user_1(upgraded, issuer):
    token = issuer.token("1", email=OLD_USERS[0][0])
    me = upgraded.client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json()["id"] not in (1, 2)
    assert upgraded.client.get("/api/1/tasks", headers={"Authorization": f"Bearer {token}"}).status_code == 403
    old_one = upgraded.client.get("/api/1/tasks", headers={"Authorization": f"Bearer {own_token(1)}"})
    assert len(old_one.json()) == 2


def test_the_old_tasks_are_in_the_change_feed_once_each_page_by_page(upgraded):
    headers = {"Authorization": f"Bearer {own_token(1)}"}
    seen, params = [], {"limit": 1}
    for _ in range(10):
        page = upgraded.client.get("/api/1/changes", params=params, headers=headers)
        assert page.status_code == 200, page.text
        seen += [task["title"] for task in page.json()["changes"] if not task.get("deleted")]
        params = {"limit": 1, "since": page.json()["cursor"]}
        if not page.json()["has_more"]:
            break
    assert sorted(seen) == sorted(title for user_id, title, *_ in OLD_TASKS if user_id == 1)


def test_the_old_tasks_answer_the_fields_of_version_3_with_their_defaults(upgraded):
    listed = upgraded.client.get("/api/2/tasks", headers={"Authorization": f"Bearer {own_token(2)}"}).json()
    assert [(task["recurrence"], task["time_zone"], task["reminders"], task["series_id"], task["next_id"]) for task in listed] == [
        (None, "UTC", [], None, None)
    ]
