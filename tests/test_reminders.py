"""Reminders (v3): fired on the user's event streams and POSTed, signed, to a webhook.

Real service processes on SQLite and PostgreSQL, real HTTP both ways: the webhook receiver is
an HTTP server in this module on 127.0.0.1 that checks every signature with the
`standardwebhooks` package. Reminder times are a few seconds ahead, and every wait is bounded.
"""

import base64
import json
import queue
import secrets
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple

import httpx
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from conftest import database_for, link, running_service, service_environment

WITHIN = 5  # seconds: the contract's bound on how late a reminder fires


def at_text(moment: datetime) -> str:
    """A moment as the service answers it: UTC, microseconds, Z."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def ahead(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def made(service, user, **fields) -> dict:
    response = httpx.post(f"{service.url}{user.tasks_url()}", json={"title": "a task", **fields}, headers=user.headers, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()


# ---------------------------------------------------------------------------------------
# An event stream read in a thread, and a webhook receiver
# ---------------------------------------------------------------------------------------


class Stream:
    """GET /api/{id}/events, read line by line in a thread; `reminder` events are queued with the time they came."""

    def __init__(self, service, user):
        self.events = queue.Queue()
        self.ready = threading.Event()
        self.client = httpx.Client(base_url=service.url, timeout=httpx.Timeout(10, read=120))
        self.url, self.headers = f"/api/{user.id}/events", user.headers
        threading.Thread(target=self.read, daemon=True).start()
        assert self.ready.wait(10), "the stream did not say ready"

    def read(self):
        try:
            with self.client.stream("GET", self.url, headers=self.headers) as response:
                assert response.status_code == 200
                event, data = None, []
                for line in response.iter_lines():
                    if line:
                        field, _, value = line.partition(": ")
                        event = value if field == "event" else event
                        data += [value] if field == "data" else []
                        continue
                    if event == "ready":
                        self.ready.set()
                    elif event == "reminder":
                        self.events.put((datetime.now(UTC), json.loads("\n".join(data))))
                    event, data = None, []
        except (httpx.HTTPError, RuntimeError):
            pass  # closed by the test

    def reminders(self, until: datetime, wanted: int | None = None) -> list:
        """(received, data) of the reminders that come before `until`, or until `wanted` of them came."""
        got = []
        while wanted is None or len(got) < wanted:
            left = (until - datetime.now(UTC)).total_seconds()
            if left <= 0:
                break
            try:
                got.append(self.events.get(timeout=left))
            except queue.Empty:
                break
        return got

    def close(self):
        self.client.close()


@pytest.fixture
def stream():
    """stream(service, user): an open event stream of the user's; closed after the test."""
    with ExitStack() as streams:

        def open_stream(service, user):
            opened = Stream(service, user)
            streams.callback(opened.close)
            return opened

        yield open_stream


@dataclass
class Post:
    received: datetime
    headers: dict
    body: str
    verified: bool
    status: int

    @property
    def title(self) -> str:
        return json.loads(self.body)["data"]["task"]["title"]


class Receiver:
    """Every POST it was sent, its signature checked with the secret; it answers 500 to the
    first `fail[title]` POSTs about a task of that title, and 200 to the rest."""

    def __init__(self):
        self.secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        self.posts: list[Post] = []
        self.fail: dict[str, int] = {}
        self.lock = threading.Lock()

    def receive(self, headers: dict, body: bytes) -> int:
        try:
            Webhook(self.secret).verify(body, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        post = Post(datetime.now(UTC), headers, body.decode(), verified, 200)
        with self.lock:
            if self.fail.get(post.title, 0) > 0:
                self.fail[post.title] -= 1
                post.status = 500
            self.posts.append(post)
        return post.status

    def about(self, *titles) -> list[Post]:
        with self.lock:
            return [post for post in self.posts if post.title in titles]

    def wait(self, titles, count: int, until: datetime) -> list[Post]:
        """The POSTs about these titles once there are `count` of them, or at `until`."""
        while len(self.about(*titles)) < count and datetime.now(UTC) < until:
            time.sleep(0.05)
        return self.about(*titles)


@pytest.fixture(scope="module")
def receiver():
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = receiver.receive({name.lower(): value for name, value in self.headers.items()}, body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 128  # socketserver's 5 refuses a burst of twenty POSTs at once

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    receiver.url = f"http://127.0.0.1:{server.server_port}/hooks/reminders"
    yield receiver
    server.shutdown()
    server.server_close()


def hooked_environment(database_url, issuer, receiver, **overrides) -> dict:
    return service_environment(
        database_url, issuer, REMINDER_WEBHOOK_URL=receiver.url, REMINDER_WEBHOOK_SECRET=receiver.secret, **overrides
    )


@pytest.fixture(scope="module")
def hooked(backend, issuer, receiver, tmp_path_factory):
    """A service of the backend's with the webhook set to the receiver, and a user of its own."""
    directory = tmp_path_factory.mktemp(f"hooked-{backend}")
    with database_for(backend, directory) as database_url:
        with running_service(hooked_environment(database_url, issuer, receiver), directory / "service.log") as service:
            service.user = link(service, issuer, str(uuid.uuid4()), "carol@example.com")
            yield service


def unique_title() -> str:
    return f"reminder {uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------------------------------
# On the stream
# ---------------------------------------------------------------------------------------


def test_an_at_reminder_comes_on_the_stream_within_5_seconds_of_its_time_and_never_before(service, alice, create_task, stream):
    events = stream(service, alice)
    at = ahead(2)
    task = create_task(reminders=[{"at": at_text(at)}])
    got = events.reminders(until=at + timedelta(seconds=WITHIN + 2), wanted=1)
    assert len(got) == 1, "no reminder came"
    received, data = got[0]
    assert at <= received <= at + timedelta(seconds=WITHIN)
    assert data == {"task": task, "at": at_text(at), "late": False}


def test_a_minutes_before_reminder_comes_that_many_minutes_before_due_at(service, alice, create_task, stream):
    events = stream(service, alice)
    due = ahead(62)
    task = create_task(due_at=at_text(due), reminders=[{"minutes_before": 1}])
    fire_at = due - timedelta(minutes=1)
    got = events.reminders(until=fire_at + timedelta(seconds=WITHIN + 2), wanted=1)
    assert len(got) == 1, "no reminder came"
    received, data = got[0]
    assert fire_at <= received <= fire_at + timedelta(seconds=WITHIN)
    assert data == {"task": task, "at": at_text(fire_at), "late": False}


def test_changing_due_at_plans_its_reminder_again_at_the_new_time(client, service, alice, create_task, stream):
    events = stream(service, alice)
    task = create_task(due_at=at_text(ahead(3600)), reminders=[{"minutes_before": 0}])
    due = ahead(2)
    response = client.patch(alice.tasks_url(task["id"]), json={"due_at": at_text(due)}, headers=alice.headers)
    assert response.status_code == 200, response.text
    got = events.reminders(until=due + timedelta(seconds=WITHIN + 2), wanted=1)
    assert [(data["task"]["id"], data["at"]) for _, data in got] == [(task["id"], at_text(due))]
    assert due <= got[0][0] <= due + timedelta(seconds=WITHIN)


def test_changing_reminders_plans_them_again(client, service, alice, create_task, stream):
    events = stream(service, alice)
    task = create_task(reminders=[{"at": at_text(ahead(3600))}])
    at = ahead(2)
    response = client.patch(alice.tasks_url(task["id"]), json={"reminders": [{"at": at_text(at)}]}, headers=alice.headers)
    assert response.status_code == 200, response.text
    got = events.reminders(until=at + timedelta(seconds=WITHIN + 2), wanted=1)
    assert [(data["task"]["id"], data["at"]) for _, data in got] == [(task["id"], at_text(at))]


def test_a_completed_deleted_moved_or_already_past_reminder_never_fires(client, service, alice, create_task, stream):
    # One wait for the four, against a reminder that does fire after them: a test each would
    # wait the same seconds four times over.
    events = stream(service, alice)
    soon = at_text(ahead(2))
    completed = create_task(title="completed", reminders=[{"at": soon}])
    deleted = create_task(title="deleted", reminders=[{"at": soon}])
    moved = create_task(title="moved away", due_at=soon, reminders=[{"minutes_before": 0}])
    past = create_task(title="already past", reminders=[{"at": at_text(ahead(-1))}])
    assert client.patch(alice.tasks_url(completed["id"]) + "/complete", json={"completed": True}, headers=alice.headers).status_code == 200
    assert client.delete(alice.tasks_url(deleted["id"]), headers=alice.headers).status_code == 204
    assert client.patch(alice.tasks_url(moved["id"]), json={"due_at": at_text(ahead(3600))}, headers=alice.headers).status_code == 200
    control_at = ahead(3)
    control = create_task(title="control", reminders=[{"at": at_text(control_at)}])
    got = events.reminders(until=control_at + timedelta(seconds=WITHIN + 1))
    assert [data["task"]["id"] for _, data in got] == [control["id"]]
    assert past["reminders"] != []  # kept on the task, only never planned


def test_a_reminder_of_another_user_never_comes_on_alices_stream(service, alice, bob, create_task, stream):
    events = stream(service, alice)
    at = ahead(2)
    create_task(user=bob, title="bob's", reminders=[{"at": at_text(at)}])
    mine = create_task(title="alice's", reminders=[{"at": at_text(at + timedelta(seconds=1))}])
    got = events.reminders(until=at + timedelta(seconds=WITHIN + 2), wanted=1)
    assert [data["task"]["id"] for _, data in got] == [mine["id"]]


def test_a_reminder_on_time_fires_even_with_reminder_late_seconds_0(start_service, issuer, stream):
    # REMINDER_LATE_SECONDS is about reminders that fell due while no replica ran: one that a
    # running replica fires within its 5 s is on time, whatever the setting.
    with start_service(REMINDER_LATE_SECONDS="0") as service:
        user = link(service, issuer, str(uuid.uuid4()), "gina@example.com")
        events = stream(service, user)
        at = ahead(2)
        task = made(service, user, reminders=[{"at": at_text(at)}])
        got = events.reminders(until=at + timedelta(seconds=WITHIN + 2), wanted=1)
        assert [(data["task"]["id"], data["at"], data["late"]) for _, data in got] == [(task["id"], at_text(at), False)]
        assert "reminder dropped" not in service.log()


# ---------------------------------------------------------------------------------------
# To the webhook
#
# Each webhook test has a task of its own, and all of them are made at once, when the first
# of these tests runs (`webhook_tasks`): their reminders fire, and their retries pass,
# together, where one test after the other would wait out each in turn.
# ---------------------------------------------------------------------------------------


class Planned(NamedTuple):
    title: str
    at: datetime  # its reminder's time
    task: dict  # as the service answered its POST


def planned(service, receiver, seconds: float, failures: int, fields) -> Planned:
    """A task on the service whose reminder is `seconds` ahead; the receiver answers 500 to its
    first `failures` POSTs. `fields(at)` are the task's reminders (and due date)."""
    title, at = unique_title(), ahead(seconds)
    receiver.fail[title] = failures
    return Planned(title, at, made(service, service.user, title=title, **fields(at)))


def at_once(at: datetime) -> dict:
    return {"reminders": [{"at": at_text(at)}]}


def at_and_a_minute_before_due(at: datetime) -> dict:
    return {"due_at": at_text(at + timedelta(minutes=1)), "reminders": [{"minutes_before": 1}, {"at": at_text(at + timedelta(seconds=1))}]}


# Each test's task on `hooked`: (seconds until its reminder, POSTs answered 500 first, its fields).
WEBHOOK_TASKS = {
    "signed": (2, 0, at_once),
    "signature": (1, 0, at_once),
    "retried": (1, 1, at_once),
    "two-reminders": (2, 0, at_and_a_minute_before_due),
}
LONG_RETRIES_TASK = (1, 2, at_once)  # on PostgreSQL only: see "Retries that take their time" below


@pytest.fixture(scope="module")
def webhook_tasks(request, backend, hooked, receiver) -> dict[str, Planned]:
    """The webhook tests' tasks by name, made together; on PostgreSQL with the long retries'
    task, and with `giving_up` started (its task is made as it starts)."""
    tasks = {name: planned(hooked, receiver, *case) for name, case in WEBHOOK_TASKS.items()}
    if backend == "postgresql":
        tasks["long-retries"] = planned(hooked, receiver, *LONG_RETRIES_TASK)
        request.getfixturevalue("giving_up")
    return tasks


def test_a_reminder_is_posted_to_the_webhook_signed_by_standard_webhooks(hooked, receiver, webhook_tasks):
    title, at, task = webhook_tasks["signed"]
    posts = receiver.wait([title], 1, until=at + timedelta(seconds=WITHIN + 2))
    assert len(posts) == 1, "no POST came"
    post = posts[0]
    assert post.verified
    assert at <= post.received <= at + timedelta(seconds=WITHIN)
    assert post.headers["content-type"] == "application/json"
    assert post.headers["webhook-id"]
    assert abs(int(post.headers["webhook-timestamp"]) - post.received.timestamp()) <= WITHIN
    body = json.loads(post.body)
    assert body == {
        "type": "task.reminder",
        "timestamp": body["timestamp"],
        "data": {"user_id": hooked.user.id, "task": task, "at": at_text(at), "late": False},
    }
    assert at <= datetime.fromisoformat(body["timestamp"]) <= post.received


def test_the_webhook_signature_fails_with_another_secret_or_another_body(receiver, webhook_tasks):
    title, at, _ = webhook_tasks["signature"]
    [post] = receiver.wait([title], 1, until=at + timedelta(seconds=WITHIN + 2))
    other = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(post.body, post.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(receiver.secret).verify(post.body.replace('"late": false', '"late": true'), post.headers)
    assert Webhook(receiver.secret).verify(post.body, post.headers) == json.loads(post.body)


def test_a_webhook_answered_500_is_tried_again_within_10_seconds_with_the_same_id_and_body(receiver, webhook_tasks):
    title, at, _ = webhook_tasks["retried"]
    posts = receiver.wait([title], 2, until=at + timedelta(seconds=WITHIN + 12))
    assert [post.status for post in posts] == [500, 200]
    first, retry = posts
    assert retry.received - first.received <= timedelta(seconds=10)
    assert (retry.headers["webhook-id"], retry.body) == (first.headers["webhook-id"], first.body)
    assert first.verified and retry.verified


def test_every_reminder_of_a_task_is_posted_with_an_id_of_its_own(receiver, webhook_tasks):
    title, at, _ = webhook_tasks["two-reminders"]  # due a minute after `at`: reminders at `at` and a second later
    posts = receiver.wait([title], 2, until=at + timedelta(seconds=WITHIN + 3))
    assert sorted(json.loads(post.body)["data"]["at"] for post in posts) == [at_text(at), at_text(at + timedelta(seconds=1))]
    assert len({post.headers["webhook-id"] for post in posts}) == 2


def five_at_once(at: datetime) -> dict:
    return {"reminders": [{"at": at_text(at + timedelta(microseconds=n))} for n in range(5)]}


def test_a_burst_of_500_reminders_is_posted_each_within_5_seconds_of_its_time(hooked, receiver):
    burst = [planned(hooked, receiver, 3, 0, five_at_once) for _ in range(100)]  # due within the second or two it takes to make them
    due = {task.title: task.at for task in burst}
    posts = receiver.wait(list(due), 500, until=max(due.values()) + timedelta(seconds=WITHIN + 2))
    assert len(posts) == 500
    assert all(post.verified for post in posts)
    assert all(due[post.title] <= post.received <= due[post.title] + timedelta(seconds=WITHIN) for post in posts)


# ---------------------------------------------------------------------------------------
# PostgreSQL: several replicas on one database, and restarts
# ---------------------------------------------------------------------------------------


@pytest.fixture
def postgresql_only(backend):
    if backend != "postgresql":
        pytest.skip("replicas share a PostgreSQL database; a SQLite file has one process")


@pytest.fixture
def replica(postgresql_only, issuer, receiver, tmp_path):
    """replica(database_url, **settings): a service with the webhook on that database, stopped with the test."""
    with ExitStack() as replicas:

        def start(database_url, **overrides):
            env = hooked_environment(database_url, issuer, receiver, **overrides)
            return replicas.enter_context(running_service(env, tmp_path / f"service-{env['PORT']}.log"))

        yield start


@pytest.fixture
def shared_database(postgresql_only, tmp_path):
    with database_for("postgresql", tmp_path) as database_url:
        yield database_url


def test_two_replicas_deliver_each_of_twenty_reminders_due_at_once_exactly_once(shared_database, replica, issuer, receiver, stream):
    first, second = replica(shared_database), replica(shared_database)
    user = link(first, issuer, str(uuid.uuid4()), "dave@example.com")
    events = stream(second, user)  # a stream on one replica hears the reminders the other claims too
    at = ahead(6)  # time enough to make twenty tasks on a machine under load
    titles = [unique_title() for _ in range(20)]
    for number, title in enumerate(titles):
        made(first if number % 2 else second, user, title=title, reminders=[{"at": at_text(at)}])
    posts = receiver.wait(titles, 20, until=at + timedelta(seconds=WITHIN + 3))
    heard = events.reminders(until=at + timedelta(seconds=WITHIN + 3), wanted=20)
    time.sleep(2)  # a second delivery of any of them would come by now
    posts = receiver.about(*titles)
    assert len(posts) == 20
    assert len({post.headers["webhook-id"] for post in posts}) == 20
    assert sorted(post.title for post in posts) == sorted(titles)
    assert all(post.verified for post in posts)
    assert all(at <= post.received <= at + timedelta(seconds=WITHIN) for post in posts), sorted((post.received - at).total_seconds() for post in posts)[-3:]
    assert sorted(data["task"]["title"] for _, data in heard) == sorted(titles)
    assert events.events.empty()


class MadeBeforeAStop(NamedTuple):
    database_url: str
    user: object
    title: str
    at: datetime  # its reminder's time
    task: dict


@pytest.fixture(scope="module")
def made_before_a_stop(backend, issuer, receiver, tmp_path_factory) -> dict[str, MadeBeforeAStop]:
    """For each of the two tests below, a database of its own where a service made a task with
    a reminder a second or two ahead, then stopped before it fell due. Both are made when the
    first of those tests runs, so that their waits for the reminders to be past pass together."""
    if backend != "postgresql":
        pytest.skip("replicas share a PostgreSQL database; a SQLite file has one process")
    made_up = {}
    with ExitStack() as databases:
        for email, seconds in (("erin@example.com", 2), ("frank@example.com", 1)):
            directory = tmp_path_factory.mktemp("stopped")
            database_url = databases.enter_context(database_for("postgresql", directory))
            with running_service(hooked_environment(database_url, issuer, receiver), directory / "stopped.log") as stopped:
                user = link(stopped, issuer, str(uuid.uuid4()), email)
                title, at = unique_title(), ahead(seconds)
                made_up[email] = MadeBeforeAStop(database_url, user, title, at, made(stopped, user, title=title, reminders=[{"at": at_text(at)}]))
        yield made_up


def test_a_reminder_due_while_no_replica_ran_fires_late_at_the_next_start(made_before_a_stop, replica, receiver):
    database_url, user, title, at, task = made_before_a_stop["erin@example.com"]
    time.sleep(max(0.0, (at + timedelta(seconds=WITHIN + 1) - datetime.now(UTC)).total_seconds()))  # a second past its 5 s
    assert receiver.about(title) == []
    started = datetime.now(UTC)
    replica(database_url)
    posts = receiver.wait([title], 1, until=datetime.now(UTC) + timedelta(seconds=WITHIN))
    assert len(posts) == 1, "no POST came after the start"
    assert posts[0].verified and posts[0].received >= started
    assert json.loads(posts[0].body)["data"] == {"user_id": user.id, "task": task, "at": at_text(at), "late": True}


def test_a_reminder_later_than_reminder_late_seconds_is_dropped_and_logged_never_delivered(made_before_a_stop, replica, receiver):
    database_url, _, title, at, task = made_before_a_stop["frank@example.com"]
    # Later than REMINDER_LATE_SECONDS and than the 5 s within which a reminder is on time.
    time.sleep(max(0.0, (at + timedelta(seconds=WITHIN + 1) - datetime.now(UTC)).total_seconds()))  # a second past its 5 s
    restarted = replica(database_url, REMINDER_LATE_SECONDS="1")
    deadline = time.monotonic() + WITHIN
    while "reminder dropped" not in restarted.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = [json.loads(line) for line in restarted.log().splitlines() if "reminder dropped" in line]
    assert len(lines) == 1, restarted.log()[-3000:]
    assert (lines[0]["level"], lines[0]["task_id"], lines[0]["at"]) == ("warning", task["id"], at_text(at))
    time.sleep(2)
    assert receiver.about(title) == []
    assert restarted.sql("SELECT count(*) FROM reminders WHERE task_id = $1", task["id"])[0][0] == 0


# ---------------------------------------------------------------------------------------
# Retries that take their time, on PostgreSQL only (where the service runs in production):
# the pauses and the give-up are worked out in Python, the SQL that stores a retry runs on
# both databases in test_a_webhook_answered_500_is_tried_again_within_10_seconds_with_the_same_id_and_body,
# and each test here waits ten seconds or more, which a second backend would double for no new code.
# ---------------------------------------------------------------------------------------

ONCE_ON_POSTGRESQL = "the retries' timing is tested once, on PostgreSQL: see the banner of its section"
ALWAYS = 10**9  # a receiver.fail count no test uses up
GIVEN_UP_TASK = (1, ALWAYS, at_once)
TURN = timedelta(seconds=1)  # how often a service looks for webhook attempts that are due
RETRY_SECONDS = 5  # REMINDER_WEBHOOK_RETRY_SECONDS of `giving_up`: the first retry (5 s after the first try) comes after it


@pytest.fixture
def long_retries_task(backend, request) -> Planned:
    """The long retries' task of `webhook_tasks`, on PostgreSQL; on SQLite a skip, before
    `hooked` starts a service for nothing."""
    if backend != "postgresql":
        pytest.skip(ONCE_ON_POSTGRESQL)
    return request.getfixturevalue("webhook_tasks")["long-retries"]


@pytest.fixture(scope="module")
def giving_up(backend, issuer, receiver, tmp_path_factory):
    """A service with the webhook set to the receiver that gives a reminder's webhook up
    RETRY_SECONDS after it fired, a user of its own, and her task of GIVEN_UP_TASK (`planned`,
    and its reminder's `reminder_id`), made as it starts; on PostgreSQL only."""
    if backend != "postgresql":
        pytest.skip(ONCE_ON_POSTGRESQL)
    directory = tmp_path_factory.mktemp("giving-up")
    with database_for(backend, directory) as database_url:
        env = hooked_environment(database_url, issuer, receiver, REMINDER_WEBHOOK_RETRY_SECONDS=str(RETRY_SECONDS))
        with running_service(env, directory / "service.log") as service:
            service.user = link(service, issuer, str(uuid.uuid4()), "hank@example.com")
            service.planned = planned(service, receiver, *GIVEN_UP_TASK)
            [(service.reminder_id,)] = service.sql("SELECT id FROM reminders WHERE task_id = $1", service.planned.task["id"])
            yield service


def test_later_webhook_retries_pause_longer_each_with_the_same_id_and_body_signed_anew(long_retries_task, receiver):
    """Three attempts, about 17 s: the service pauses 5 s, then 10 s. On PostgreSQL only (see
    the section's banner)."""
    title, at, _ = long_retries_task  # answered 500 twice
    posts = receiver.wait([title], 3, until=at + timedelta(seconds=WITHIN + 10 + 15))
    assert [post.status for post in posts] == [500, 500, 200]
    first, second, third = posts
    pauses = [second.received - first.received, third.received - second.received]
    assert pauses[0] <= timedelta(seconds=10), pauses
    # A steady pause shows at most a turn of jitter between two gaps; a growing one, more.
    assert pauses[1] > pauses[0] + TURN, pauses
    assert {(post.headers["webhook-id"], post.body) for post in posts} == {(first.headers["webhook-id"], first.body)}
    assert all(post.verified for post in posts)
    # Signed at each attempt: a retry an hour later with the first timestamp fails a receiver's tolerance.
    assert all(abs(int(post.headers["webhook-timestamp"]) - post.received.timestamp()) <= WITHIN for post in posts)


def test_a_webhook_that_always_fails_is_given_up_once_retry_seconds_have_passed_and_logged_without_secrets(giving_up, receiver):
    """About 10 s. On PostgreSQL only: the give-up is a comparison of times in Python and a
    DELETE that the delivered case runs on both databases, and REMINDER_WEBHOOK_RETRY_SECONDS
    needs a service of its own, which a second backend would start and wait on again."""
    (title, at, _), reminder_id = giving_up.planned, giving_up.reminder_id  # answered 500 always
    deadline = time.monotonic() + (at - datetime.now(UTC)).total_seconds() + WITHIN + 10 + RETRY_SECONDS + 5

    def given_up() -> list[dict]:
        lines = [json.loads(line) for line in giving_up.log().splitlines() if "reminder webhook given up" in line]
        return [line for line in lines if line.get("reminder_id") == reminder_id]

    while not given_up() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2 * TURN.total_seconds())  # an attempt after the give-up would have come by now
    posts, lines = receiver.about(title), given_up()
    assert len(lines) == 1, f"{len(lines)} give-ups after {len(posts)} attempts"
    line = lines[0]
    assert line == {
        "time": line["time"], "level": "warning", "message": "reminder webhook given up", "reminder_id": reminder_id, "attempts": len(posts)
    }
    assert len(posts) >= 2, "never tried again"
    assert all(post.status == 500 and post.verified for post in posts)
    assert len({post.headers["webhook-id"] for post in posts}) == 1
    fired = datetime.fromisoformat(json.loads(posts[0].body)["timestamp"])
    given_up_at = datetime.fromisoformat(line["time"])
    assert given_up_at >= fired + timedelta(seconds=RETRY_SECONDS), "given up before its time"
    assert posts[-2].received < fired + timedelta(seconds=RETRY_SECONDS), "tried again after its time, before it was given up"
    assert all(post.received < given_up_at + timedelta(milliseconds=1) for post in posts), "tried after it was given up"  # the log's precision
    assert giving_up.sql("SELECT count(*) FROM reminders WHERE id = $1", reminder_id)[0][0] == 0
    log = giving_up.log()
    for kept_out in (receiver.secret.removeprefix("whsec_"), title, *(post.headers["webhook-signature"] for post in posts), "eyJ"):
        assert kept_out not in log  # the key, the body, a signature, a token (every JWT starts eyJ)
