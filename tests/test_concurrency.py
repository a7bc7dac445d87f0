"""Concurrency: many requests in flight at once against the running service, over real HTTP.

An asyncio httpx client sends each batch together (one connection per request), so the
service's event loop, its database pool and the database's own locking all meet real
contention. SQLite is the embedded default: it must answer these too, not 503.
"""

import asyncio
from collections import Counter

import httpx

TASK_FIELDS = {
    "id", "user_id", "title", "description", "completed", "priority", "due_at", "tags",
    "recurrence", "time_zone", "reminders", "series_id", "next_id", "created_at", "updated_at",
}


def send_together(service, requests: list[tuple[str, str, dict]]) -> list[httpx.Response]:
    """Send every (method, path, options) at once; the answers, in the same order."""

    async def send_all():
        limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=service.url, timeout=60, limits=limits) as client:
            return await asyncio.gather(*(client.request(method, path, **options) for method, path, options in requests))

    return asyncio.run(send_all())


def statuses(responses) -> Counter:
    return Counter(response.status_code for response in responses)


def newest_first(tasks: list[dict]) -> list[dict]:
    """The list's default order: created_at descending, ties by id (racing creates may take
    their timestamps in another order than their ids)."""
    return sorted(tasks, key=lambda task: (task["created_at"], task["id"]), reverse=True)


def test_100_concurrent_creates_make_exactly_100_tasks_with_distinct_ids(service, client, alice):
    headers = alice.headers
    responses = send_together(service, [("POST", alice.tasks_url(), {"json": {"title": f"task {n}"}, "headers": headers}) for n in range(100)])
    assert statuses(responses) == {201: 100}
    created = {response.json()["id"]: response.json()["title"] for response in responses}
    assert sorted(created.values()) == sorted(f"task {n}" for n in range(100))
    listed = client.get(alice.tasks_url(), params={"limit": 500}, headers=headers).json()
    assert sorted(task["id"] for task in listed) == sorted(created)
    assert listed == newest_first(listed)


def test_the_total_stays_exact_while_creates_and_deletes_race(service, client, alice, create_task):
    """The total of an unfiltered list is a count the database keeps on each insert and delete."""
    doomed = [create_task(title=f"doomed {n}")["id"] for n in range(30)]
    headers = alice.headers
    requests = [("POST", alice.tasks_url(), {"json": {"title": f"new {n}"}, "headers": headers}) for n in range(60)]
    requests += [("DELETE", alice.tasks_url(task_id), {"headers": headers}) for task_id in doomed]
    assert statuses(send_together(service, requests)) == {201: 60, 204: 30}
    listed = client.get(alice.tasks_url(), params={"limit": 500}, headers=headers)
    assert len(listed.json()) == 60
    assert listed.headers["x-total-count"] == "60"
    assert client.get(alice.tasks_url(), params={"limit": 1}, headers=headers).headers["x-total-count"] == "60"


def test_50_concurrent_writes_to_one_task_leave_one_of_the_written_states(service, client, alice, create_task):
    """PUT, PATCH and complete race; every answer is a whole row, and the row left is one of them."""
    task_id = create_task(title="write 0", description="written by 0")["id"]
    headers = alice.headers
    requests = []
    for n in range(1, 51):
        fields = {"title": f"write {n}", "description": f"written by {n}", "completed": n % 2 == 0}
        if n % 3 == 0:
            requests.append(("PUT", alice.tasks_url(task_id), {"json": fields, "headers": headers}))
        elif n % 3 == 1:
            requests.append(("PATCH", alice.tasks_url(task_id), {"json": fields, "headers": headers}))
        else:
            requests.append(("PATCH", alice.tasks_url(task_id) + "/complete", {"json": {"completed": fields["completed"]}, "headers": headers}))
    responses = send_together(service, requests)
    assert statuses(responses) == {200: 50}
    for (_, _, options), response in zip(requests, responses, strict=True):
        row = response.json()
        assert set(row) == TASK_FIELDS and row["id"] == task_id
        # title and description always come from the same write: never one from each of two
        assert row["description"] == row["title"].replace("write", "written by")
        sent = options["json"]
        assert {name: row[name] for name in sent} == sent
    final = client.get(alice.tasks_url(task_id), headers=headers).json()
    assert final in [response.json() for response in responses]


def test_concurrent_signups_with_one_email_give_one_201_and_the_rest_409(service):
    spellings = ["race@example.com", "RACE@example.com", "Race@Example.com", "race@EXAMPLE.COM"]
    requests = [("POST", "/api/auth/signup", {"json": {"email": spellings[n % 4], "password": f"race-password-{n}"}}) for n in range(12)]
    responses = send_together(service, requests)
    assert statuses(responses) == {201: 1, 409: 11}
    [created] = [response.json() for response in responses if response.status_code == 201]
    assert created["email"] == "race@example.com"
    for response in responses:
        if response.status_code == 409:
            assert response.headers["content-type"] == "application/problem+json"
    assert service.sql("SELECT count(*) FROM users WHERE email = 'race@example.com'")[0][0] == 1


def test_lists_while_writes_run_are_200_with_whole_tasks_newest_first(service, alice, create_task):
    headers = alice.headers
    existing = [create_task(title=f"existing {n}")["id"] for n in range(30)]
    writes = [("POST", alice.tasks_url(), {"json": {"title": f"new {n}"}, "headers": headers}) for n in range(40)]
    writes += [("PATCH", alice.tasks_url(task_id), {"json": {"completed": True}, "headers": headers}) for task_id in existing[:15]]
    writes += [("DELETE", alice.tasks_url(task_id), {"headers": headers}) for task_id in existing[15:]]
    lists = [("GET", alice.tasks_url(), {"params": {"limit": 500}, "headers": headers}) for _ in range(70)]
    requests = [request for pair in zip(writes, lists, strict=True) for request in pair]
    responses = send_together(service, requests)
    assert statuses(responses[1::2]) == {200: 70}
    assert statuses(responses[0::2]) == {201: 40, 200: 15, 204: 15}
    for response in responses[1::2]:
        listed = response.json()
        ids = [task["id"] for task in listed]
        assert listed == newest_first(listed) and len(set(ids)) == len(ids)
        assert all(set(task) == TASK_FIELDS and task["user_id"] == alice.id for task in listed)
        # deletes and creates may be half seen, but never more than 30 + 40 tasks nor fewer than 15
        assert 15 <= len(listed) <= 70


def test_a_burst_of_900_calls_queues_instead_of_answering_503(service, alice, bob):
    """800 creates and 100 lists of two users at once: contention is no outage, so every answer
    is a success. (SQLite lets one writer in at a time; a writer waiting past its busy timeout
    must not become a 503.)"""
    calls = []
    for n in range(50):
        for user in (alice, bob):
            calls += [("POST", user.tasks_url(), {"json": {"title": f"burst {n}.{k}"}, "headers": user.headers}) for k in range(8)]
            calls.append(("GET", user.tasks_url(), {"headers": user.headers}))
    responses = send_together(service, calls)
    assert statuses(responses) == {201: 800, 200: 100}
