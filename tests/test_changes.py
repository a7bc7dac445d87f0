"""The change feed, as a syncing client sees it: GET /api/{user_id}/changes and the list's ETag.

Written from the contract (section Changes (v3)). Every test runs on SQLite and on PostgreSQL,
against real service processes over real HTTP; the database is read from the outside only
to check what a client cannot see (the feed's position) or to age the feed (retention).
"""

import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

PROBLEM = "application/problem+json"
CURSOR = re.compile(r"[A-Za-z0-9._~-]{1,200}")
UTC_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")


def changes(client, user, **params) -> httpx.Response:
    return client.get(f"/api/{user.id}/changes", params=params, headers=user.headers)


def page(client, user, **params) -> dict:
    response = changes(client, user, **params)
    assert response.status_code == 200, response.text
    return response.json()


def cursor_now(client, user) -> str:
    """Where the user's feed is now: the cursor of a first sync that pages to its end."""
    return sync(client, user)[1]


def sync(client, user, state=None, since=None, limit=500) -> tuple[dict, str]:
    """Follow has_more to the end, applying each entry to `state` (task id -> body); (state, cursor)."""
    state = {} if state is None else state
    for _ in range(1000):
        body = page(client, user, limit=limit, **({} if since is None else {"since": since}))
        apply(state, body["changes"])
        since = body["cursor"]
        if not body["has_more"]:
            return state, since
    raise AssertionError("has_more never ended")


def apply(state: dict, entries: list) -> None:
    """Apply feed entries to a client's copy of the tasks (id -> task)."""
    for entry in entries:
        if entry.get("deleted"):
            state.pop(entry["id"], None)
        else:
            state[entry["id"]] = entry


def listed(client, user) -> dict:
    response = client.get(user.tasks_url(), params={"limit": 500}, headers=user.headers)
    assert response.status_code == 200, response.text
    return {task["id"]: task for task in response.json()}


def position(service, user) -> int:
    rows = service.sql("SELECT position FROM task_counts WHERE user_id = $1", user.id)
    return rows[0][0] if rows else 0


def assert_problem(response, status):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["status"] == status


# ---------------------------------------------------------------------------------------
# GET /changes
# ---------------------------------------------------------------------------------------


def test_without_since_the_feed_is_every_task_that_exists_and_no_tombstone(client, alice, create_task):
    tasks = [create_task(title=f"task {n}") for n in range(3)]
    assert client.delete(alice.tasks_url(tasks[1]["id"]), headers=alice.headers).status_code == 204

    body = page(client, alice)

    assert body["changes"] == [tasks[0], tasks[2]]
    assert body["has_more"] is False
    assert CURSOR.fullmatch(body["cursor"]), body["cursor"]


def test_paging_with_a_limit_says_has_more_until_the_pages_hold_exactly_the_list(client, alice, create_task):
    for n in range(5):
        create_task(title=f"task {n}")

    pages, since = [], None
    for _ in range(10):
        body = page(client, alice, limit=2, **({} if since is None else {"since": since}))
        pages.append(body)
        since = body["cursor"]
        if not body["has_more"]:
            break

    assert [len(body["changes"]) for body in pages] == [2, 2, 1]
    assert [body["has_more"] for body in pages] == [True, True, False]
    assert {entry["id"]: entry for body in pages for entry in body["changes"]} == listed(client, alice)


def test_a_delete_after_the_cursor_is_a_tombstone_with_id_deleted_and_deleted_at(client, alice, create_task):
    task = create_task()
    since = cursor_now(client, alice)
    assert client.delete(alice.tasks_url(task["id"]), headers=alice.headers).status_code == 204

    (tombstone,) = page(client, alice, since=since)["changes"]

    assert set(tombstone) == {"id", "deleted", "deleted_at"}
    assert tombstone["id"] == task["id"] and tombstone["deleted"] is True
    assert UTC_TIME.fullmatch(tombstone["deleted_at"]), tombstone


def test_each_task_appears_once_in_its_latest_state_ordered_by_its_latest_change(client, alice, create_task):
    since = cursor_now(client, alice)
    first, second = create_task(title="first"), create_task(title="second")
    patched = client.patch(alice.tasks_url(first["id"]), json={"title": "first, patched"}, headers=alice.headers).json()

    assert page(client, alice, since=since)["changes"] == [second, patched]


def test_a_cursor_from_the_end_of_the_feed_answers_no_changes_and_the_same_cursor(client, alice, create_task):
    create_task()
    since = cursor_now(client, alice)

    assert page(client, alice, since=since) == {"changes": [], "cursor": since, "has_more": False}


# Requests that change nothing: (what the request is, how to send it given a task).
NO_CHANGE = {
    "404 patch of no task": lambda client, user, task: client.patch(user.tasks_url(10**15), json={"title": "x"}, headers=user.headers),
    "412 patch with a stale If-Match": lambda client, user, task: client.patch(
        user.tasks_url(task["id"]), json={"title": "x"}, headers={**user.headers, "If-Match": '"0-0"'}
    ),
    "412 delete with a stale If-Match": lambda client, user, task: client.delete(
        user.tasks_url(task["id"]), headers={**user.headers, "If-Match": '"0-0"'}
    ),
    "400 patch with a bad body": lambda client, user, task: client.patch(
        user.tasks_url(task["id"]), json={"completed": "yes"}, headers=user.headers
    ),
    "400 create with a bad body": lambda client, user, task: client.post(user.tasks_url(), json={"title": ""}, headers=user.headers),
    "304 get with If-None-Match": lambda client, user, task: client.get(
        user.tasks_url(task["id"]), headers={**user.headers, "If-None-Match": client.get(user.tasks_url(task["id"]), headers=user.headers).headers["etag"]}
    ),
}


@pytest.mark.parametrize("send", NO_CHANGE.values(), ids=NO_CHANGE.keys())
def test_a_request_that_changes_nothing_leaves_no_change(client, alice, create_task, service, send):
    task = create_task()
    since, before = cursor_now(client, alice), position(service, alice)

    response = send(client, alice, task)

    assert response.status_code in (304, 400, 404, 412), response.text
    assert page(client, alice, since=since) == {"changes": [], "cursor": since, "has_more": False}
    assert position(service, alice) == before


def test_an_idempotent_retry_of_a_create_leaves_no_change_and_no_extra_count(client, alice, service):
    headers = {**alice.headers, "Idempotency-Key": f"retry-{random.random()}"}
    first = client.post(alice.tasks_url(), json={"title": "once"}, headers=headers)
    since, before = cursor_now(client, alice), position(service, alice)

    retry = client.post(alice.tasks_url(), json={"title": "once"}, headers=headers)

    assert retry.status_code in (200, 201) and retry.json() == first.json()
    assert page(client, alice, since=since)["changes"] == []
    assert position(service, alice) == before
    assert client.get(alice.tasks_url(), headers=alice.headers).headers["x-total-count"] == "1"


def test_racing_retries_of_one_create_make_one_task_one_change_and_one_count(service, client, alice):
    headers = {**alice.headers, "Idempotency-Key": f"race-{random.random()}"}
    since, before = cursor_now(client, alice), position(service, alice)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: client.post(alice.tasks_url(), json={"title": "once"}, headers=headers), range(8)))

    assert {answer.status_code for answer in answers} <= {200, 201}
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert page(client, alice, since=since)["changes"] == [answers[0].json()]
    assert position(service, alice) == before + 1
    assert client.get(alice.tasks_url(), headers=alice.headers).headers["x-total-count"] == "1"


def test_a_write_the_database_refuses_leaves_the_feed_where_it_was(client, alice, create_task, service):
    """No change without its write: the feed's position is taken in the write's own transaction,
    so a write that fails on a constraint, after the trigger ran, takes its change with it."""
    create_task()
    before = position(service, alice)

    with pytest.raises(Exception, match="(?i)null|constraint"):
        service.sql("INSERT INTO tasks (user_id, title, created_at, updated_at) VALUES ($1, NULL, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)", alice.id)

    assert position(service, alice) == before
    assert page(client, alice, since=cursor_now(client, alice))["changes"] == []


BAD_PARAMETERS = {
    "limit 0": {"limit": "0"},
    "limit 501": {"limit": "501"},
    "limit abc": {"limit": "abc"},
    "limit -1": {"limit": "-1"},
    "limit empty": {"limit": ""},
    "an unknown parameter": {"offset": "0"},
    "since empty": {"since": ""},
}


@pytest.mark.parametrize("params", BAD_PARAMETERS.values(), ids=BAD_PARAMETERS.keys())
def test_a_bad_parameter_is_400_problem_json(client, alice, params):
    assert_problem(changes(client, alice, **params), 400)


def test_a_parameter_given_twice_is_400_problem_json(client, alice):
    response = client.get(f"/api/{alice.id}/changes?limit=1&limit=2", headers=alice.headers)
    assert_problem(response, 400)


def test_a_cursor_of_another_user_is_400_problem_json(client, alice, bob):
    assert_problem(changes(client, alice, since=cursor_now(client, bob)), 400)


def made_up_cursors(real: str) -> dict:
    position, mac = real.split(".", 1)
    return {
        "a word": "hello",
        "the real one with another position": f"{int(position) + 1}.{mac}",
        "the real one with another mac": f"{position}.{'A' * len(mac)}",
        "the real one and more": real + "0",
        "over 200 characters": "9" * 201,
    }


@pytest.mark.parametrize("name", made_up_cursors("1.abc"))
def test_a_made_up_cursor_is_400_problem_json(client, alice, create_task, name):
    create_task()
    made_up = made_up_cursors(cursor_now(client, alice))[name]
    assert_problem(changes(client, alice, since=made_up), 400)


def test_the_changes_route_of_another_user_is_403(client, alice, bob):
    assert_problem(client.get(f"/api/{bob.id}/changes", headers=alice.headers), 403)


def test_a_cursor_older_than_the_deletions_the_feed_remembers_is_410_problem_json(pruned_replica, alice):
    with httpx.Client(base_url=pruned_replica.service.url, timeout=10) as client:
        assert_problem(changes(client, alice, since=pruned_replica.old_cursor), 410)


def test_after_a_410_a_sync_without_since_works_again(pruned_replica, alice):
    with httpx.Client(base_url=pruned_replica.service.url, timeout=10) as client:
        assert page(client, alice)["has_more"] is False


def test_a_cursor_from_after_the_pruned_deletions_still_works(pruned_replica, client, alice, create_task):
    since = cursor_now(client, alice)
    task = create_task()
    assert page(client, alice, since=since)["changes"] == [task]


# ---------------------------------------------------------------------------------------
# A client syncing while writers race
# ---------------------------------------------------------------------------------------


def writer(url, user, stop, errors, seed):
    """Creates, patches and deletes the user's tasks through HTTP until told to stop."""
    rng, mine = random.Random(seed), []
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            try:
                action = rng.choice(["create", "create", "patch", "complete", "delete"] if mine else ["create"])
                if action == "create":
                    response = client.post(user.tasks_url(), json={"title": f"w{seed}"}, headers=user.headers)
                    if response.status_code == 201:
                        mine.append(response.json()["id"])
                elif action == "patch":
                    response = client.patch(user.tasks_url(rng.choice(mine)), json={"title": f"w{seed} {rng.random()}"}, headers=user.headers)
                elif action == "complete":
                    response = client.patch(user.tasks_url(rng.choice(mine)) + "/complete", json={"completed": True}, headers=user.headers)
                else:
                    response = client.delete(user.tasks_url(mine.pop(rng.randrange(len(mine)))), headers=user.headers)
                if response.status_code >= 500:
                    errors.append(response.text)
            except httpx.HTTPError as exc:
                errors.append(repr(exc))


def test_a_client_that_keeps_syncing_while_four_writers_race_ends_with_exactly_the_list(service, client, alice, create_task):
    for n in range(3):
        create_task(title=f"before {n}")
    stop, errors = threading.Event(), []
    threads = [threading.Thread(target=writer, args=(service.url, alice, stop, errors, n)) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        # While they write, a page at a time: four writers may well outpace one reader.
        state, cursor = {}, None
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            body = page(client, alice, limit=3, **({} if cursor is None else {"since": cursor}))
            apply(state, body["changes"])
            cursor = body["cursor"]
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    state, cursor = sync(client, alice, state, cursor, limit=3)

    assert errors == []
    assert state == listed(client, alice)


# ---------------------------------------------------------------------------------------
# The list's weak ETag
# ---------------------------------------------------------------------------------------


def list_etag(client, user, **params) -> str:
    response = client.get(user.tasks_url(), params=params, headers=user.headers)
    assert response.status_code == 200, response.text
    return response.headers["etag"]


def test_the_task_list_answers_a_weak_etag(client, alice, create_task):
    create_task()
    assert re.fullmatch(r'W/"[\x21\x23-\x7e]+"', list_etag(client, alice))


def test_the_list_with_its_etag_in_if_none_match_is_304_without_a_body(client, alice, create_task):
    create_task()
    tag = list_etag(client, alice)

    response = client.get(alice.tasks_url(), headers={**alice.headers, "If-None-Match": tag})

    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == tag


LIST_WRITES = {
    "create": lambda client, user, task: client.post(user.tasks_url(), json={"title": "new"}, headers=user.headers),
    "replace": lambda client, user, task: client.put(user.tasks_url(task["id"]), json={"title": "put"}, headers=user.headers),
    "patch": lambda client, user, task: client.patch(user.tasks_url(task["id"]), json={"title": "patched"}, headers=user.headers),
    "complete": lambda client, user, task: client.patch(user.tasks_url(task["id"]) + "/complete", json={"completed": True}, headers=user.headers),
    "delete": lambda client, user, task: client.delete(user.tasks_url(task["id"]), headers=user.headers),
}


@pytest.mark.parametrize("write", LIST_WRITES.values(), ids=LIST_WRITES.keys())
def test_after_any_write_the_list_etag_changes_and_the_old_one_is_no_longer_304(client, alice, create_task, write):
    task = create_task()
    tag = list_etag(client, alice)

    assert write(client, alice, task).status_code in (200, 201, 204)

    assert list_etag(client, alice) != tag
    assert client.get(alice.tasks_url(), headers={**alice.headers, "If-None-Match": tag}).status_code == 200


QUERIES = {
    "completed": {"completed": "true"},
    "sort": {"sort": "title"},
    "limit": {"limit": "1"},
    "offset": {"offset": "1"},
    "tag": {"tag": "home"},
}


@pytest.mark.parametrize("params", QUERIES.values(), ids=QUERIES.keys())
def test_a_different_query_has_a_different_list_etag(client, alice, create_task, params):
    create_task()
    tag = list_etag(client, alice, **params)
    assert tag != list_etag(client, alice)
    assert client.get(alice.tasks_url(), headers={**alice.headers, "If-None-Match": tag}).status_code == 200
