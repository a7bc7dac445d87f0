"""The README's frontend types, generated and compiled as a frontend does, then run against the service.

A running service's /openapi.json goes through `openapi-typescript` with its default options
into a temporary folder, beside copies of tests/typescript/flow.ts (the README's flow with
`openapi-fetch`) and misuse.ts (calls the types must refuse). `tsc --strict --noEmit` compiles
both; then tsx runs flow.ts against the service, on SQLite and on PostgreSQL, and the tests
read what it printed: one JSON line per step. Version 3's part of the flow reads the task's
new fields, runs the change feed's loop (without since, then each cursor while has_more)
around writes and compares its end state with GET /tasks, and opens the event stream with a
ticket.

The npm packages are pinned in tests/typescript/package-lock.json. Where Node is present and
they are not installed, the tests run `npm ci` for them once; under CI a missing install is
an error (.ci/run installs them). Without Node the module skips, saying so.
"""

import json
import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

from conftest import npm_installed, running_service, service_environment
from test_tasks import parse_time

TESTS = Path(__file__).resolve().parent
TYPESCRIPT_DIR = TESTS / "typescript"
# tsc's options for the copies: strict, and a module setup as Next.js's tsconfig has it.
TSC_OPTIONS = ["--strict", "--noEmit", "--pretty", "false", "--target", "es2022", "--module", "esnext", "--moduleResolution", "bundler"]
PROBLEM = "application/problem+json"
STEPS = [
    "signup", "login", "me", "create-title-only", "create-every-field", "list-filtered", "list-first-page",
    "get", "patch-if-match", "patch-stale-if-match", "complete", "delete", "invalid",
    "changes-snapshot", "create-recurring", "complete-recurring", "writes", "changes-since", "changes-end-state",
    "ticket", "ticket-stream",
]
CURSOR = re.compile(r"[A-Za-z0-9._~-]{1,200}")
STRONG_ETAG = re.compile(r'"[^"]*"')  # no W/ in front

def run(command: list, **options) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, **options)


@pytest.fixture(scope="session")
def typescript(issuer, tmp_path_factory):
    """A folder as a frontend project has it: the types generated from a running service's
    /openapi.json, the two programs, tests/typescript's node_modules. Made once for the run:
    this module's tests run in three parts (on SQLite, on PostgreSQL, on neither), and a
    module's fixture would be made again for each."""
    node = npm_installed(TYPESCRIPT_DIR, "openapi-typescript", "openapi-fetch", "typescript", "tsx")
    folder = tmp_path_factory.mktemp("typescript")
    (folder / "package.json").write_text('{"type": "module"}\n')
    (folder / "node_modules").symlink_to(TYPESCRIPT_DIR / "node_modules", target_is_directory=True)
    for program in ("flow.ts", "misuse.ts"):
        shutil.copy(TYPESCRIPT_DIR / program, folder / program)
    env = service_environment(f"sqlite:///{folder / 'todo.db'}", issuer)
    with running_service(env, folder / "service.log") as service:
        # The README's command: `npx openapi-typescript <API>/openapi.json -o src/lib/todo-api.d.ts`.
        generated = run([node, TYPESCRIPT_DIR / "node_modules/openapi-typescript/bin/cli.js",
                         f"{service.url}/openapi.json", "-o", "todo-api.d.ts"], cwd=folder)
        document = httpx.get(f"{service.url}/openapi.json").json()
    assert generated.returncode == 0, generated.stdout + generated.stderr
    return {"folder": folder, "node": node, "document": document}


@pytest.fixture(scope="session")
def compiled(typescript):
    """tsc --strict --noEmit over both programs: its diagnostics, by file."""
    folder = typescript["folder"]
    tsc = run([typescript["node"], TYPESCRIPT_DIR / "node_modules/typescript/bin/tsc", *TSC_OPTIONS, "flow.ts", "misuse.ts"], cwd=folder)
    diagnostics = {"flow.ts": [], "misuse.ts": [], "other": []}
    for line in tsc.stdout.splitlines():
        name = line.split("(", 1)[0]
        diagnostics[name if name in diagnostics else "other"].append(line)
    assert (tsc.returncode == 0) == (not any(diagnostics.values())), tsc.stdout + tsc.stderr
    return diagnostics


@pytest.fixture(scope="module")
def flow(typescript, compiled, service):
    """What flow.ts printed, run with tsx against the service: its lines by step."""
    assert compiled["flow.ts"] == [], "flow.ts does not compile:\n" + "\n".join(compiled["flow.ts"])
    email = f"ada.{secrets.token_hex(4)}@example.com"
    env = {**os.environ, "TODO_API_URL": service.url, "TODO_EMAIL": email}
    ran = run([typescript["node"], TYPESCRIPT_DIR / "node_modules/tsx/dist/cli.mjs", "flow.ts"], cwd=typescript["folder"], env=env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    lines = [json.loads(line) for line in ran.stdout.splitlines()]
    return {"email": email, "order": [line["step"] for line in lines], **{line.pop("step"): line for line in lines}}


def test_the_readme_flow_compiles_under_strict_with_the_generated_types(compiled):
    assert compiled["flow.ts"] == []
    assert compiled["other"] == []


def test_the_generated_types_refuse_bodies_and_queries_the_service_refuses(compiled):
    # Each refused call has `@ts-expect-error` above it: one the types let through is TS2578.
    assert compiled["misuse.ts"] == []


def test_the_types_come_from_the_service_that_the_flow_runs_against(typescript, client):
    assert client.get("/openapi.json").json() == typescript["document"]


def test_the_program_prints_every_step_in_order(flow):
    assert flow["order"] == STEPS


def test_signup_and_login_give_the_account_and_a_bearer_token(flow):
    account = {"id": flow["signup"]["id"], "email": flow["email"]}
    assert flow["signup"] == {"status": 201, **account}
    assert flow["login"] == {"status": 200, "token_type": "Bearer", "user": account}
    assert flow["me"] == {"status": 200, **account}


def test_a_task_created_with_only_a_title_takes_the_defaults(flow, service):
    created = flow["create-title-only"]
    task = created["task"]
    assert created == {"status": 201, "task": task, "etag": created["etag"], "location": created["location"]}
    assert task == {
        "id": task["id"], "title": "Buy milk", "description": None, "completed": False,
        "priority": "medium", "due_at": None, "tags": [],
    }
    assert STRONG_ETAG.fullmatch(created["etag"])
    assert urljoin(service.url + "/", created["location"]) == f"{service.url}/api/{flow['me']['id']}/tasks/{task['id']}"


def test_a_task_created_with_every_field_keeps_them(flow):
    created = flow["create-every-field"]
    task = created["task"]
    assert (created["status"], STRONG_ETAG.fullmatch(created["etag"]) is not None) == (201, True)
    assert {**task, "due_at": parse_time(task["due_at"])} == {
        "id": task["id"], "title": "Wrap the presents", "description": "before the guests arrive", "completed": False,
        "priority": "high", "due_at": parse_time("2026-12-24T17:00:00Z"), "tags": ["december", "home"],
    }


def test_a_filtered_list_reads_its_total_from_x_total_count(flow):
    assert flow["list-filtered"] == {"status": 200, "ids": [flow["create-every-field"]["task"]["id"]], "total": 1}


def test_a_first_page_links_to_the_next_keeping_the_sort(flow):
    page = flow["list-first-page"]
    assert {**page, "link": None} == {"status": 200, "titles": ["Buy milk"], "total": 2, "link": None}
    [target] = re.fullmatch(r'<([^>]*)>; rel="next"', page["link"]).groups()
    next_page = urlsplit(target)
    assert next_page.path == f"/api/{flow['me']['id']}/tasks"
    assert parse_qs(next_page.query) == {"sort": ["title"], "limit": ["1"], "offset": ["1"]}


def test_get_answers_the_etag_and_304_for_if_none_match(flow):
    assert flow["get"] == {"status": 200, "etag": flow["create-title-only"]["etag"], "if_none_match_status": 304}


def test_patch_with_the_current_etag_as_if_match_writes_and_answers_a_new_etag(flow):
    patched = flow["patch-if-match"]
    assert patched["status"] == 200
    assert patched["task"] == {**flow["create-title-only"]["task"], "title": "Buy oat milk", "tags": ["shopping"]}
    assert STRONG_ETAG.fullmatch(patched["etag"]) and patched["etag"] != flow["get"]["etag"]


def test_patch_with_a_stale_if_match_is_412_problem(flow):
    assert flow["patch-stale-if-match"] == {"status": 412, "error_status": 412, "title": "Precondition Failed"}


def test_complete_and_delete_with_if_match(flow):
    complete = flow["complete"]
    assert (complete["status"], complete["completed"]) == (200, True)
    assert complete["etag"] not in (flow["get"]["etag"], flow["patch-if-match"]["etag"])
    assert flow["delete"] == {"status": 204}


def test_a_refused_body_names_its_field_in_errors_0(flow):
    invalid = flow["invalid"]
    assert {**invalid, "message": None} == {"status": 400, "content_type": PROBLEM, "field": "due_at", "message": None}
    assert isinstance(invalid["message"], str) and invalid["message"]


# ---------------------------------------------------------------------------------------
# Version 3: the task's new fields, the change feed's loop, a ticket for the event stream.
# ---------------------------------------------------------------------------------------


def test_a_recurring_task_answers_its_v3_fields(flow):
    created = flow["create-recurring"]
    assert (created["status"], parse_time(created["due_at"])) == (201, parse_time("2030-01-07T08:00:00Z"))
    assert {name: created[name] for name in ("recurrence", "time_zone", "series_id", "next_id")} == {
        "recurrence": {"rule": "FREQ=DAILY;COUNT=3", "from": "due"}, "time_zone": "Europe/Berlin",
        "series_id": created["id"], "next_id": None,
    }
    assert [parse_time(r["at"]) if "at" in r else r for r in created["reminders"]] == [
        {"minutes_before": 30}, parse_time("2030-01-07T07:00:00Z"),
    ]


def test_completing_it_makes_the_next_occurrence_in_its_series(flow):
    done, first = flow["complete-recurring"], flow["create-recurring"]
    nxt = done["next"]
    assert (done["status"], done["completed"], done["next_id"], done["series_id"]) == (200, True, nxt["id"], first["id"])
    assert nxt == {
        "id": nxt["id"], "completed": False, "due_at": nxt["due_at"], "recurrence": first["recurrence"],
        "time_zone": "Europe/Berlin", "reminders": [{"minutes_before": 30}], "series_id": first["id"], "next_id": None,
    }
    assert parse_time(nxt["due_at"]) == parse_time("2030-01-08T08:00:00Z")  # 09:00 in Berlin, a day later


def test_the_feed_without_since_is_every_task_that_exists_and_no_tombstone(flow):
    snapshot = flow["changes-snapshot"]
    assert snapshot["seen"] == [flow["create-every-field"]["task"]["id"]]  # the milk was deleted before
    assert snapshot["tombstones"] == []
    assert snapshot["pages"] == [{"status": 200, "count": 1, "has_more": False}]
    assert CURSOR.fullmatch(snapshot["cursor"])


def test_the_feed_since_the_cursor_pages_through_every_change_with_tombstones(flow):
    since, writes = flow["changes-since"], flow["writes"]
    assert writes["statuses"] == [201, 204, 204]
    first, nxt = flow["create-recurring"]["id"], flow["complete-recurring"]["next"]["id"]
    assert since["pages"] == [{"status": 200, "count": 2, "has_more": True}, {"status": 200, "count": 2, "has_more": False}]
    # Each task once, in its latest state: the scratch task's creation is gone with it, and the
    # gift's deletion comes last. (The completion and the occurrence it made are one transaction.)
    assert sorted(since["seen"]) == [first, nxt]
    assert since["tombstones"] == [writes["scratch"], flow["create-every-field"]["task"]["id"]]
    assert CURSOR.fullmatch(since["cursor"]) and since["cursor"] != flow["changes-snapshot"]["cursor"]


def test_the_feed_ends_with_exactly_the_tasks_the_list_has(flow):
    end = flow["changes-end-state"]
    assert end["synced"] == end["listed"]
    assert [task["id"] for task in end["listed"]] == [flow["create-recurring"]["id"], flow["complete-recurring"]["next"]["id"]]


def test_a_ticket_is_short_lived_and_not_cached(flow):
    ticket = flow["ticket"]
    assert {**ticket, "expires_in": None} == {"status": 201, "expires_in": None, "ticket_chars": True, "cache_control": "no-store"}
    assert 0 < ticket["expires_in"] <= 60


def test_the_ticket_opens_one_stream_that_starts_ready_at_the_current_cursor(flow):
    stream = flow["ticket-stream"]
    assert {**stream, "content_type": stream["content_type"].split(";")[0]} == {
        "status": 200, "content_type": "text/event-stream", "retry": True,
        "ready_id": flow["changes-since"]["cursor"], "second_use_status": 401,
    }
