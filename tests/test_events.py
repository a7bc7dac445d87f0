"""Live events, as a client reading GET /api/{user_id}/events sees them (server-sent events).

Written from the contract (section Live events (v3)). Real service processes, real HTTP
streams read with httpx, real PostgreSQL (and SQLite). Every wait is bounded: a read that
gets nothing for READ_SECONDS fails the test instead of hanging it.
"""

import json
import random
import signal
import socket
import threading
import time
from contextlib import ExitStack, contextmanager

import httpx
import pytest

from conftest import database_for, link, running_service, service_environment
from pg_cluster import missing_binaries, private_cluster
from test_changes import apply, listed, sync

PROBLEM = "application/problem+json"
FRONTEND = "http://localhost:3000"
READ_SECONDS = 8


class Stream:
    """An open event stream: next() is its next block of `field: value` lines as a dict
    (a comment line under "comment"), or None once the service has ended the stream."""

    def __init__(self, response: httpx.Response):
        self.response = response
        self.lines = response.iter_lines()

    def next(self) -> dict | None:
        block = {}
        for line in self.lines:
            if line == "":
                if block:
                    return block
                continue
            name, _, value = line.partition(":")
            block[name or "comment"] = value[1:] if value.startswith(" ") else value
        return block or None

    def next_event(self) -> dict | None:
        """The next block that is an event (heartbeat comments skipped)."""
        while (block := self.next()) is not None:
            if "event" in block:
                return block
        return None

    def ready(self) -> dict:
        block = self.next_event()
        assert block is not None and block["event"] == "ready", block
        return block


def new_client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=httpx.Timeout(10, read=READ_SECONDS))


@contextmanager
def opened(client, user, path_user=None, headers=None, **params):
    """GET the events of `path_user` (default `user`) with the user's bearer header (or these headers)."""
    path = f"/api/{(path_user or user).id}/events"
    with client.stream("GET", path, params=params, headers=user.headers if headers is None else headers) as response:
        if response.status_code != 200:
            response.read()
        yield Stream(response)


@pytest.fixture
def events(service):
    with new_client(service.url) as client:
        yield client


def assert_problem(response, status):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["status"] == status


def changes_since(client, user, cursor) -> dict:
    response = client.get(f"/api/{user.id}/changes", params={"since": cursor}, headers=user.headers)
    assert response.status_code == 200, response.text
    return response.json()


def no_streams_open(service, timeout: float = 5) -> None:
    """Wait until the service has closed every stream an earlier test opened."""
    deadline = time.monotonic() + timeout
    while service.sql("SELECT count(*) FROM event_streams")[0][0]:
        assert time.monotonic() < deadline, "streams of earlier tests are still open"
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------
# Opening a stream, and its changes
# ---------------------------------------------------------------------------------------


def test_a_stream_opens_with_retry_and_ready_whose_id_is_a_cursor(events, alice):
    with opened(events, alice) as stream:
        first = stream.next()

    assert int(first["retry"]) > 0
    assert first["event"] == "ready"
    assert changes_since(events, alice, first["id"])["changes"] == []


def test_a_stream_answers_event_stream_no_store_and_no_proxy_buffering(events, alice):
    with opened(events, alice) as stream:
        headers = stream.response.headers

    assert stream.response.status_code == 200
    assert headers["content-type"].split(";")[0] == "text/event-stream"
    assert headers["cache-control"] == "no-store"
    assert headers["x-accel-buffering"] == "no"


REFUSED = {
    "no token": ({}, {}, 401),
    "a bad token": ({"Authorization": "Bearer not-a-token"}, {}, 401),
    "an unknown parameter": (None, {"limit": "1"}, 400),
    "since twice": (None, {"since": ["a", "b"]}, 400),
}


@pytest.mark.parametrize("headers, params, status", REFUSED.values(), ids=REFUSED.keys())
def test_a_stream_that_cannot_open_is_problem_json(events, alice, headers, params, status):
    with opened(events, alice, headers=headers, **params) as stream:
        assert_problem(stream.response, status)


def test_the_stream_of_another_user_is_403(events, alice, bob):
    with opened(events, alice, path_user=bob) as stream:
        assert_problem(stream.response, 403)


# The writes a stream shows, each given a task of the caller's to write.
WRITES = {
    "create": lambda client, user, task: client.post(user.tasks_url(), json={"title": "new"}, headers=user.headers),
    "patch": lambda client, user, task: client.patch(user.tasks_url(task["id"]), json={"title": "patched"}, headers=user.headers),
    "complete": lambda client, user, task: client.patch(user.tasks_url(task["id"]) + "/complete", json={"completed": True}, headers=user.headers),
    "delete": lambda client, user, task: client.delete(user.tasks_url(task["id"]), headers=user.headers),
}


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_a_write_arrives_as_a_change_event_with_the_changes_entry_as_data_and_a_cursor_as_id(events, alice, create_task, write):
    task = create_task()
    with opened(events, alice) as stream:
        ready = stream.ready()
        answer = write(events, alice, task)
        event = stream.next_event()

    assert event["event"] == "change"
    assert changes_since(events, alice, ready["id"]) == {"changes": [json.loads(event["data"])], "cursor": event["id"], "has_more": False}
    if answer.status_code == 204:
        assert json.loads(event["data"]) == {"id": task["id"], "deleted": True, "deleted_at": json.loads(event["data"])["deleted_at"]}
    else:
        assert json.loads(event["data"]) == answer.json()


def test_changes_arrive_in_order_each_with_a_later_cursor(events, alice, create_task):
    with opened(events, alice) as stream:
        stream.ready()
        made = [create_task(title=f"task {n}") for n in range(3)]
        arrived = [stream.next_event() for _ in made]

    assert [json.loads(event["data"]) for event in arrived] == made
    assert changes_since(events, alice, arrived[0]["id"])["changes"] == made[1:]


# ---------------------------------------------------------------------------------------
# Resuming
# ---------------------------------------------------------------------------------------

RESUME = {
    "Last-Event-ID": lambda user, cursor: {"headers": {**user.headers, "Last-Event-ID": cursor}},
    "since": lambda user, cursor: {"since": cursor},
}


@pytest.mark.parametrize("resume", RESUME.values(), ids=RESUME.keys())
def test_a_client_breaking_off_and_resuming_again_and_again_gets_every_change_exactly_once(service, events, alice, create_task, resume):
    for n in range(3):
        create_task(title=f"before {n}")
    state, cursor = sync(events, alice)
    errors = []

    def writer():
        rng, mine = random.Random(1), []
        with httpx.Client(base_url=service.url, timeout=10) as client:
            for n in range(30):
                action = rng.choice(["create", "patch", "delete"]) if mine else "create"
                if action == "create":
                    response = client.post(alice.tasks_url(), json={"title": f"w {n}"}, headers=alice.headers)
                    mine.append(response.json()["id"])
                elif action == "patch":
                    response = client.patch(alice.tasks_url(rng.choice(mine)), json={"title": f"p {n}"}, headers=alice.headers)
                else:
                    response = client.delete(alice.tasks_url(mine.pop()), headers=alice.headers)
                if response.status_code >= 400:
                    errors.append(response.text)
                time.sleep(0.01)
            client.post(alice.tasks_url(), json={"title": "the last"}, headers=alice.headers)

    thread = threading.Thread(target=writer)
    thread.start()
    rng, seen, last_seen, readies = random.Random(2), [], False, []
    deadline = time.monotonic() + 30
    try:
        while not last_seen and time.monotonic() < deadline:
            with opened(events, alice, **resume(alice, cursor)) as stream:
                readies.append((stream.ready()["id"], cursor))
                for _ in range(rng.randint(1, 4)):
                    event = stream.next_event()
                    assert event["event"] == "change", event
                    entry = json.loads(event["data"])
                    apply(state, [entry])
                    seen.append(event["id"])
                    cursor = event["id"]
                    if entry.get("title") == "the last":
                        last_seen = True
                        break
    finally:
        thread.join(timeout=30)

    assert last_seen and errors == []
    assert all(ready == asked for ready, asked in readies)  # ready names the cursor resumed from
    assert len(seen) == len(set(seen))
    assert state == listed(events, alice)


@pytest.mark.parametrize("resume", RESUME.values(), ids=RESUME.keys())
def test_a_client_that_breaks_off_right_after_ready_misses_nothing(events, alice, create_task, resume):
    with opened(events, alice) as stream:
        cursor = stream.ready()["id"]
    made = create_task(title="while away")

    with opened(events, alice, **resume(alice, cursor)) as stream:
        assert stream.ready()["id"] == cursor
        event = stream.next_event()

    assert (event["event"], json.loads(event["data"])) == ("change", made)


def foreign_cursor(client, alice, bob) -> str:
    return sync(client, bob)[1]


def made_up_cursor(client, alice, bob) -> str:
    position, mac = sync(client, alice)[1].split(".")
    return f"{int(position) + 1}.{mac}"


CANNOT_RESUME = {"another user's cursor": foreign_cursor, "a made-up cursor": made_up_cursor}


@pytest.mark.parametrize("resume", RESUME.values(), ids=RESUME.keys())
@pytest.mark.parametrize("cursor", CANNOT_RESUME.values(), ids=CANNOT_RESUME.keys())
def test_a_cursor_it_cannot_resume_from_gets_resync_then_the_stream_ends(events, alice, bob, cursor, resume):
    with opened(events, alice, **resume(alice, cursor(events, alice, bob))) as stream:
        assert stream.response.status_code == 200
        event = stream.next_event()
        rest = stream.next()

    assert event["event"] == "resync"
    assert rest is None


def test_a_cursor_older_than_the_remembered_deletions_gets_resync_then_the_stream_ends(pruned_replica, alice):
    with new_client(pruned_replica.service.url) as client, opened(client, alice, since=pruned_replica.old_cursor) as stream:
        kinds = []
        while (event := stream.next_event()) is not None:
            kinds.append(event["event"])

    assert kinds[-1] == "resync"
    assert "change" not in kinds


# ---------------------------------------------------------------------------------------
# Token expiry and tickets
# ---------------------------------------------------------------------------------------


@pytest.fixture
def expiring(alice, issuer):
    """expiring(seconds): alice's bearer header with a token that expires that soon."""
    return lambda seconds: {"Authorization": f"Bearer {issuer.token(alice.subject, email=alice.email, exp=int(time.time()) + seconds)}"}


def test_a_stream_ends_with_expired_when_its_token_expires(events, alice, expiring):
    started = time.monotonic()
    with opened(events, alice, headers=expiring(3)) as stream:
        stream.ready()
        event = stream.next_event()
        rest = stream.next()

    assert event["event"] == "expired"
    assert rest is None
    assert 1.5 < time.monotonic() - started < 6


def ticket(client, user, headers=None) -> str:
    response = client.post(f"/api/{user.id}/events/tickets", headers=user.headers if headers is None else headers)
    assert response.status_code == 201, response.text
    return response.json()["ticket"]


def test_a_ticket_request_answers_201_with_a_ticket_that_expires_within_60_seconds(events, alice):
    response = events.post(f"/api/{alice.id}/events/tickets", headers=alice.headers)

    assert response.status_code == 201
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"ticket", "expires_in"}
    assert isinstance(body["ticket"], str) and body["ticket"]
    assert isinstance(body["expires_in"], int) and 0 < body["expires_in"] <= 60


def test_a_ticket_opens_a_stream_without_any_header(events, alice):
    with opened(events, alice, headers={}, ticket=ticket(events, alice)) as stream:
        assert stream.response.status_code == 200
        stream.ready()


def test_a_ticket_used_a_second_time_is_401(events, alice):
    once = ticket(events, alice)
    with opened(events, alice, headers={}, ticket=once) as stream:
        stream.ready()

    with opened(events, alice, headers={}, ticket=once) as stream:
        assert_problem(stream.response, 401)


def test_a_ticket_on_another_users_path_is_403(events, alice, bob):
    with opened(events, alice, path_user=bob, headers={}, ticket=ticket(events, alice)) as stream:
        assert_problem(stream.response, 403)


def test_asking_for_a_ticket_on_another_users_path_is_403(events, alice, bob):
    assert_problem(events.post(f"/api/{bob.id}/events/tickets", headers=alice.headers), 403)


def test_an_expired_ticket_is_401(service, events, alice):
    old = ticket(events, alice)
    service.sql("UPDATE event_tickets SET expires_at = '2000-01-01T00:00:00Z'")

    with opened(events, alice, headers={}, ticket=old) as stream:
        assert_problem(stream.response, 401)


def test_a_made_up_ticket_is_401(events, alice):
    with opened(events, alice, headers={}, ticket="made-up") as stream:
        assert_problem(stream.response, 401)


def test_a_stream_opened_by_a_ticket_ends_with_expired_when_the_token_behind_it_expires(events, alice, expiring):
    with opened(events, alice, headers={}, ticket=ticket(events, alice, headers=expiring(3))) as stream:
        stream.ready()
        event = stream.next_event()

    assert event["event"] == "expired"


def test_no_log_line_holds_a_ticket(service, events, alice):
    used = ticket(events, alice)
    with opened(events, alice, headers={}, ticket=used) as stream:
        stream.ready()
    with opened(events, alice, headers={}, ticket=used) as stream:
        assert stream.response.status_code == 401
    time.sleep(0.2)  # the request lines go out at the end of the event loop's turn

    assert used not in service.log()


# ---------------------------------------------------------------------------------------
# Across origins
# ---------------------------------------------------------------------------------------


def test_a_stream_requested_from_a_cors_origin_gets_access_control_allow_origin(events, alice):
    with opened(events, alice, headers={**alice.headers, "Origin": FRONTEND}) as stream:
        assert stream.response.status_code == 200
        assert stream.response.headers["access-control-allow-origin"] == FRONTEND


def test_a_ticket_requested_from_a_cors_origin_gets_access_control_allow_origin(events, alice):
    response = events.post(f"/api/{alice.id}/events/tickets", headers={**alice.headers, "Origin": FRONTEND})
    assert response.status_code == 201
    assert response.headers["access-control-allow-origin"] == FRONTEND


def test_a_preflight_for_a_stream_allows_last_event_id(events, alice):
    response = events.options(
        f"/api/{alice.id}/events",
        headers={"Origin": FRONTEND, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization, last-event-id"},
    )
    assert response.status_code == 200
    assert "last-event-id" in response.headers["access-control-allow-headers"].lower()


# ---------------------------------------------------------------------------------------
# A service with tight settings: heartbeats each second, 3 streams, 2 per user
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tight(backend, issuer, tmp_path_factory):
    directory = tmp_path_factory.mktemp(f"tight-{backend}")
    with database_for(backend, directory) as database_url:
        env = service_environment(database_url, issuer, EVENTS_HEARTBEAT_SECONDS="1", EVENTS_MAX_STREAMS="3", EVENTS_MAX_STREAMS_PER_USER="2")
        with running_service(env, directory / "service.log") as running:
            running.users = [link(running, issuer, f"tight-{n}-{random.random()}") for n in range(4)]
            yield running


@pytest.fixture
def tight_client(tight):
    no_streams_open(tight)
    with new_client(tight.url) as client:
        yield client


def test_a_quiet_stream_sends_a_comment_within_events_heartbeat_seconds(tight, tight_client):
    with opened(tight_client, tight.users[0]) as stream:
        stream.ready()
        started = time.monotonic()
        block = stream.next()

    assert set(block) == {"comment"}
    assert time.monotonic() - started < 1.8


def test_a_stream_past_the_limit_per_user_is_429_problem_json_with_retry_after(tight, tight_client):
    user = tight.users[0]
    with opened(tight_client, user) as first, opened(tight_client, user) as second:
        first.ready(), second.ready()
        with opened(tight_client, user) as third:
            assert_problem(third.response, 429)
            assert int(third.response.headers["retry-after"]) > 0


def test_a_stream_past_the_limit_of_the_process_is_503_problem_json_with_retry_after(tight, tight_client):
    one, other = tight.users[0], tight.users[1]
    with opened(tight_client, one) as first, opened(tight_client, one) as second, opened(tight_client, other) as third:
        first.ready(), second.ready(), third.ready()
        with opened(tight_client, other) as fourth:
            assert_problem(fourth.response, 503)
            assert int(fourth.response.headers["retry-after"]) > 0


def test_a_closed_stream_no_longer_counts_against_the_limit(tight, tight_client):
    user = tight.users[0]
    for _ in range(3):
        with opened(tight_client, user) as stream:
            stream.ready()
        no_streams_open(tight)
    with opened(tight_client, user) as first, opened(tight_client, user) as second:
        assert first.response.status_code == second.response.status_code == 200


def test_a_reader_that_stops_reading_is_dropped_and_the_service_keeps_serving_others(tight, tight_client):
    slow, other = tight.users[2], tight.users[3]
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.connect(("127.0.0.1", int(tight.url.rsplit(":", 1)[1])))
    try:
        reader.sendall(f"GET /api/{slow.id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {slow.headers['Authorization']}\r\n\r\n".encode())
        big = {"title": "big", "description": "x" * 10_000}
        deadline, dropped, writes = time.monotonic() + 40, False, 0
        while time.monotonic() < deadline and not dropped:
            for _ in range(20):
                assert tight_client.post(slow.tasks_url(), json=big, headers=slow.headers).status_code == 201
            writes += 20
            dropped = tight.sql("SELECT count(*) FROM event_streams WHERE user_id = $1", slow.id)[0][0] == 0
        assert dropped, f"still open after {writes} writes of 10 kB"

        with opened(tight_client, other) as stream:
            stream.ready()
            made = tight_client.post(other.tasks_url(), json={"title": "still served"}, headers=other.headers).json()
            assert json.loads(stream.next_event()["data"]) == made
    finally:
        reader.close()


# ---------------------------------------------------------------------------------------
# Stopping
# ---------------------------------------------------------------------------------------


def test_sigterm_with_a_stream_open_ends_the_stream_and_the_process_within_2_seconds(start_service, issuer):
    with start_service() as running:
        user = link(running, issuer, f"sigterm-{random.random()}")
        with new_client(running.url) as client, opened(client, user) as stream:
            stream.ready()
            started = time.monotonic()
            running.process.send_signal(signal.SIGTERM)
            while stream.next() is not None:
                pass
            running.process.wait(timeout=20)
            elapsed = time.monotonic() - started

    assert elapsed < 2.5
    assert running.process.returncode == 0


# ---------------------------------------------------------------------------------------
# PostgreSQL only: replicas and restarts
# ---------------------------------------------------------------------------------------

DIRECTIONS = {"write here, stream there": ("service", "replica"), "write there, stream here": ("replica", "service")}


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
def test_a_change_through_one_process_reaches_a_stream_on_another_within_1_second(service, pruned_replica, alice, direction):
    urls = {"service": service.url, "replica": pruned_replica.service.url}
    with new_client(urls[direction[0]]) as writer, new_client(urls[direction[1]]) as reader:
        with opened(reader, alice) as stream:
            stream.ready()
            made = writer.post(alice.tasks_url(), json={"title": "elsewhere"}, headers=alice.headers).json()
            written = time.monotonic()
            event = stream.next_event()
            arrived = time.monotonic()

    assert json.loads(event["data"]) == made
    assert arrived - written < 1.0


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_streams_of_one_user_opened_at_once_on_two_processes_stay_within_the_limit_per_user(service, pruned_replica, issuer):
    user = link(service, issuer, f"racing-streams-{random.random()}")
    urls = [service.url, pruned_replica.service.url] * 8  # 16 at once, against the default limit of 10
    start, release, statuses = threading.Barrier(len(urls)), threading.Event(), []

    def open_one(url):
        with new_client(url) as client:
            start.wait()
            with opened(client, user) as stream:
                statuses.append(stream.response.status_code)
                release.wait(READ_SECONDS)

    threads = [threading.Thread(target=open_one, args=(url,)) for url in urls]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + READ_SECONDS
    while len(statuses) < len(urls) and time.monotonic() < deadline:
        time.sleep(0.05)
    release.set()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200] * 10 + [429] * 6


def test_after_postgresql_restarts_mid_stream_a_later_write_reaches_the_stream(issuer, tmp_path):
    """The write's NOTIFY may be lost while the listener reconnects; the stream catches up from
    the stored feed (or, if it ended with the database, the client resumes from its last id)."""
    if reason := missing_binaries("initdb", "pg_ctl"):
        pytest.skip(f"no private PostgreSQL cluster: {reason}")
    with private_cluster() as cluster:
        cluster.sql("CREATE DATABASE todo")
        env = service_environment(cluster.url("todo"), issuer, EVENTS_HEARTBEAT_SECONDS="1")
        with running_service(env, tmp_path / "service.log") as running, new_client(running.url) as client, ExitStack() as streams:
            user = link(running, issuer, f"restart-{random.random()}")
            stream = streams.enter_context(opened(client, user))
            cursor = stream.ready()["id"]
            cluster.stop()
            cluster.start()
            deadline = time.monotonic() + 20
            while (made := client.post(user.tasks_url(), json={"title": "after"}, headers=user.headers)).status_code != 201:
                assert made.status_code == 503 and time.monotonic() < deadline, made.text
                time.sleep(0.2)
            made, arrived, resumed = made.json(), None, 0
            while arrived is None and time.monotonic() < deadline:
                event = stream.next_event() if stream.response.status_code == 200 else None
                if event is None:  # the stream ended with the database: resume from the last id
                    resumed += 1
                    stream = streams.enter_context(opened(client, user, since=cursor))
                    if stream.response.status_code == 200:
                        stream.ready()
                    continue
                if event["event"] == "change":
                    cursor = event["id"]
                    if json.loads(event["data"])["id"] == made["id"]:
                        arrived = json.loads(event["data"])

    assert arrived == made, f"resumed {resumed} times"
