"""Holding under abuse (issue 13): limits shared by replicas, lockout-safe logins, a bounded
bcrypt queue, read deadlines and a connection cap, JWKS refreshed in the background, safe
retries of a create, and small hardenings.

Everything runs against real uvicorn processes over loopback, with small settings so that each
test is over in seconds. What lives in the database (rate limits on PostgreSQL, the per-email
count, idempotency keys) runs on both databases; what lives in the process whatever the
database (the bcrypt queue, read deadlines, the connection cap, the JWKS cache) runs on SQLite,
on services of its own.
"""

import asyncio
import base64
import json
import os
import re
import socket
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import AUDIENCE, ISSUER, database_for, loopback_server, own_token, public_jwk, running_service, service_environment

PROBLEM = "application/problem+json"
SIGNUP, LOGIN = "/api/auth/signup", "/api/auth/login"


def new_account() -> dict:
    return {"email": f"user-{uuid.uuid4().hex[:12]}@example.com", "password": "a-good-password"}


def sign_up(service) -> dict:
    """A password account on this service; its credentials."""
    credentials = new_account()
    response = httpx.post(service.url + SIGNUP, json=credentials, timeout=30)
    assert response.status_code == 201, response.text
    return {**credentials, "id": response.json()["id"]}


def assert_retry_later(response, status: int, most: int = 60) -> None:
    """A refusal the client can act on: problem+json, and Retry-After in whole seconds."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["status"] == status
    retry_after = response.headers.get("retry-after", "")
    assert re.fullmatch(r"[0-9]+", retry_after) and 0 < int(retry_after) <= most, f"Retry-After: {retry_after!r}"


@contextmanager
def own_service(directory: Path, issuer, **overrides):
    """A service of its own on SQLite: for what lives in the process, whatever the database."""
    directory.mkdir(parents=True, exist_ok=True)
    with database_for("sqlite", directory) as database_url:
        with running_service(service_environment(database_url, issuer, **overrides), directory / "service.log") as running:
            yield running


@contextmanager
def client_at(service, address: str):
    """A client whose connections come from this loopback address."""
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(base_url=service.url, transport=transport, timeout=30) as client:
        yield client


def host_and_port(service) -> tuple[str, int]:
    host, port = service.url.removeprefix("http://").split(":")
    return host, int(port)


# ---------------------------------------------------------------------------------------
# 1. Rate limits in PostgreSQL, shared by replicas; clients counted by address, IPv6 by /64.
#
# These tests allow 2 an hour, and start their attempts with time enough left in the hour:
# should a limit ever count in windows that start on the clock (each hour's :00), an attempt
# just after one turned would start a fresh count and the test would flake.
# ---------------------------------------------------------------------------------------

TWO_AN_HOUR, HOUR = "2/hour", 3600


def in_one_window(seconds_needed: float = 20, period: int = HOUR) -> None:
    """Wait, if need be, until the current window of `period` seconds has `seconds_needed` left."""
    left = period - time.time() % period
    if left < seconds_needed:
        time.sleep(left + 0.05)


def attempt_signup(client, email):
    return client.post(SIGNUP, json=new_account())


def attempt_wrong_login(client, email):
    return client.post(LOGIN, json={"email": email, "password": "a-wrong-password"})


@pytest.mark.parametrize(
    ("setting", "attempt", "allowed"),
    [("RATE_LIMIT_SIGNUP", attempt_signup, 201), ("RATE_LIMIT_LOGIN_EMAIL", attempt_wrong_login, 401)],
    ids=["signups-per-client", "failed-logins-per-email"],
)
def test_two_replicas_on_one_postgresql_database_enforce_one_limit(backend, start_service, issuer, tmp_path, setting, attempt, allowed):
    if backend != "postgresql":
        pytest.skip("on SQLite the limits live in the process: replicas never share an SQLite database")
    email, other_email = (f"target-{uuid.uuid4().hex[:12]}@example.com" for _ in range(2))
    with start_service(**{setting: TWO_AN_HOUR}) as first:
        second_env = service_environment(first.database_url, issuer, **{setting: TWO_AN_HOUR})
        with running_service(second_env, tmp_path / "second.log") as second:
            in_one_window()
            with client_at(first, "127.0.0.7") as on_first, client_at(second, "127.0.0.7") as on_second:
                assert [attempt(on_first, email).status_code for _ in range(2)] == [allowed, allowed]
                assert_retry_later(attempt(on_second, email), 429, HOUR)
            with client_at(second, "127.0.0.8") as elsewhere:  # another client, another email: its own count
                assert attempt(elsewhere, other_email).status_code == allowed


def test_ipv6_clients_behind_a_trusted_proxy_are_counted_by_their_64_bit_prefix(start_service):
    with start_service(TRUSTED_PROXIES="127.0.0.1", RATE_LIMIT_SIGNUP=TWO_AN_HOUR) as service, client_at(service, "127.0.0.1") as proxy:
        in_one_window()

        def signup_from(address):
            return proxy.post(SIGNUP, json=new_account(), headers={"X-Forwarded-For": address})

        assert signup_from("2001:db8::1").status_code == 201
        assert signup_from("2001:db8::2").status_code == 201
        assert_retry_later(signup_from("2001:0db8:0000:0000:ffff:ffff:ffff:ffff"), 429, HOUR)  # the same /64, spelled out
        assert signup_from("2001:db8:0:1::1").status_code == 201  # the next /64: a client of its own


# ---------------------------------------------------------------------------------------
# 2. Lockout-safe login: the per-email limit counts failures only; the right password gets in.
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def email_limited(backend, issuer, tmp_path_factory):
    """Two failed logins an hour per email; the per-client limit stays generous. One service
    per backend for the module: each test counts against an account (an email) of its own."""
    directory = tmp_path_factory.mktemp(f"email-limited-{backend}")
    with database_for(backend, directory) as database_url:
        env = service_environment(database_url, issuer, RATE_LIMIT_LOGIN_EMAIL=TWO_AN_HOUR)
        with running_service(env, directory / "service.log") as service:
            with httpx.Client(base_url=service.url, timeout=30) as client:
                yield service, client


def test_past_the_email_limit_a_wrong_password_is_429_and_the_right_one_is_200(email_limited):
    service, client = email_limited
    credentials = sign_up(service)
    login = {"email": credentials["email"], "password": credentials["password"]}
    wrong = {**login, "password": "a-wrong-password"}
    in_one_window()
    assert [client.post(LOGIN, json=wrong).status_code for _ in range(2)] == [401, 401]
    assert_retry_later(client.post(LOGIN, json=wrong), 429, HOUR)
    right = client.post(LOGIN, json=login)
    assert right.status_code == 200, right.text
    assert right.json()["user"] == {"id": credentials["id"], "email": credentials["email"]}


def test_a_right_password_never_counts_against_the_email_limit(email_limited):
    service, client = email_limited
    credentials = sign_up(service)
    login = {"email": credentials["email"], "password": credentials["password"]}
    wrong = {**login, "password": "a-wrong-password"}
    in_one_window()
    assert [client.post(LOGIN, json=login).status_code for _ in range(3)] == [200, 200, 200]
    assert [client.post(LOGIN, json=wrong).status_code for _ in range(2)] == [401, 401]
    assert_retry_later(client.post(LOGIN, json=wrong), 429, HOUR)


# ---------------------------------------------------------------------------------------
# 3. The bcrypt queue: bounded by BCRYPT_QUEUE_SECONDS, beyond it 503 at once; login first.
# ---------------------------------------------------------------------------------------


# The service hashes on all cores but one (one slot on a 2-core machine); the floods grow with
# the slots, so that they overflow the queue on any machine.
HASHING_SLOTS = max(1, len(os.sched_getaffinity(0)) - 1) if hasattr(os, "sched_getaffinity") else max(1, (os.cpu_count() or 1) - 1)


class Timed(NamedTuple):
    response: httpx.Response
    sent: float  # time.monotonic() just before the request went
    answered: float  # and once its answer was read

    @property
    def seconds(self) -> float:
        return self.answered - self.sent


def send_together(service, requests: list[tuple[float, str, str, dict]], timeout: float = 10) -> list[Timed]:
    """Send every (delay, method, path, options), each `delay` seconds after the batch starts,
    one connection each; the timed answers, in the same order."""

    async def timed(client, delay, method, path, options):
        await asyncio.sleep(delay)
        sent = time.monotonic()
        response = await client.request(method, path, **options)
        return Timed(response, sent, time.monotonic())

    async def send_all():
        limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=service.url, timeout=timeout, limits=limits) as client:
            return await asyncio.gather(*(timed(client, *request) for request in requests))

    return asyncio.run(send_all())


def signup_request(n):
    return "POST", SIGNUP, {"json": new_account()}


def login_request(n):
    return "POST", LOGIN, {"json": {"email": f"nobody-{uuid.uuid4().hex[:12]}@example.com", "password": "a-wrong-password"}}


@pytest.mark.parametrize(("request_for", "admitted"), [(signup_request, 201), (login_request, 401)], ids=["signups", "logins"])
def test_hashes_beyond_what_the_queue_works_off_in_time_are_answered_503_at_once(tmp_path, issuer, request_for, admitted):
    """20 at once per hashing slot, with 1 s of queue (a 12-round hash takes about 0.25 s): some
    are hashed, the rest are told at once to come back; none waits long, nothing hangs."""
    with own_service(tmp_path / "service", issuer, BCRYPT_QUEUE_SECONDS="1") as service:
        answers = send_together(service, [(0.0, *request_for(n)) for n in range(20 * HASHING_SLOTS)])
    statuses = Counter(answer.response.status_code for answer in answers)
    assert set(statuses) == {admitted, 503}, statuses
    refused = [answer for answer in answers if answer.response.status_code == 503]
    for answer in refused:
        assert_retry_later(answer.response, 503)
    assert max(answer.seconds for answer in refused) < 1.0, sorted(round(answer.seconds, 2) for answer in refused)
    assert max(answer.seconds for answer in answers) < 5.0, sorted(round(answer.seconds, 2) for answer in answers)


def test_a_login_goes_ahead_of_signups_queued_before_it(tmp_path, issuer):
    """6 signups per hashing slot queue; a login sent half a second later is hashed before the
    last of them (a queue long enough that none is refused)."""
    with own_service(tmp_path / "service", issuer, BCRYPT_QUEUE_SECONDS="10") as service:
        credentials = sign_up(service)
        login = {"email": credentials["email"], "password": credentials["password"]}
        *signups, logged_in = send_together(
            service, [(0.0, *signup_request(n)) for n in range(6 * HASHING_SLOTS)] + [(0.5, "POST", LOGIN, {"json": login})], timeout=20
        )
    assert [answer.response.status_code for answer in signups] == [201] * len(signups)
    assert logged_in.response.status_code == 200, logged_in.response.text
    last_signup = max(answer.answered for answer in signups)
    assert logged_in.answered < last_signup, f"the login finished {logged_in.answered - last_signup:.2f} s after the last signup"


def test_a_login_that_finds_the_queue_full_takes_the_place_of_the_last_queued_signup(tmp_path, issuer):
    """With the queue full of signups, a real user's login is hashed, and a signup is refused."""
    with own_service(tmp_path / "service", issuer, BCRYPT_QUEUE_SECONDS="1") as service:
        credentials = sign_up(service)
        login = {"email": credentials["email"], "password": credentials["password"]}
        *signups, logged_in = send_together(
            service, [(0.0, *signup_request(n)) for n in range(20 * HASHING_SLOTS)] + [(0.3, "POST", LOGIN, {"json": login})]
        )
    assert logged_in.response.status_code == 200, logged_in.response.text
    assert {answer.response.status_code for answer in signups} == {201, 503}


# ---------------------------------------------------------------------------------------
# 4. Read deadlines, on raw sockets (the connection cap: test_connections.py).
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deadlines(tmp_path_factory, issuer):
    """One second for the request line and headers, one for the body."""
    with own_service(tmp_path_factory.mktemp("deadlines"), issuer, HEADER_TIMEOUT_SECONDS="1", BODY_TIMEOUT_SECONDS="1") as service:
        yield service


class Conversation(NamedTuple):
    answer: bytes  # everything the server sent
    closed_after: float | None  # seconds from the first byte sent until the server closed; None: still open

    @property
    def head(self) -> str:
        return self.answer.partition(b"\r\n\r\n")[0].decode("latin-1")

    @property
    def body(self) -> bytes:
        return self.answer.partition(b"\r\n\r\n")[2]

    def header(self, name: str) -> str | None:
        for line in self.head.split("\r\n")[1:]:
            field, _, value = line.partition(":")
            if field.lower() == name.lower():
                return value.strip()
        return None


def converse(service, opening: bytes, trickle: bytes = b"", every: float = 0.2, limit: float = 8.0, after_answer: bool = False) -> Conversation:
    """Send `opening`, then `trickle` one byte every `every` seconds until the server answers
    (or on, if `after_answer`); read until the server closes the connection, or `limit` seconds
    have passed."""
    with socket.create_connection(host_and_port(service), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(opening)
        sock.settimeout(every)
        answer = b""
        while time.monotonic() - started < limit:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if trickle and (after_answer or not answer):
                    try:
                        sock.sendall(trickle[:1])
                    except OSError:
                        pass
                    trickle = trickle[1:]
                continue
            except ConnectionResetError:
                return Conversation(answer, time.monotonic() - started)
            if not chunk:
                return Conversation(answer, time.monotonic() - started)
            answer += chunk
        return Conversation(answer, None)


BODY_HEAD = b"POST /api/auth/signup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"

SLOW_HEADERS = [
    ("half-a-request-line", b"GET /heal", b""),
    ("half-the-headers", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Requ", b""),
    ("headers-a-byte-at-a-time", b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"X-Padding: " + b"a" * 200),
]
SLOW_BODIES = [
    ("10-bytes-of-a-100-byte-body", BODY_HEAD + b'{"email": ', b""),
    ("a-body-a-byte-at-a-time", BODY_HEAD, b"a" * 200),
]


@pytest.mark.parametrize(("opening", "trickle"), [case[1:] for case in SLOW_HEADERS], ids=[case[0] for case in SLOW_HEADERS])
def test_a_client_slow_to_send_its_request_line_and_headers_is_answered_408_and_closed(deadlines, opening, trickle):
    conversation = converse(deadlines, opening, trickle)
    assert conversation.answer.startswith(b"HTTP/1.1 408 "), conversation.answer[:200]
    assert conversation.closed_after is not None and conversation.closed_after < 3.0, conversation.closed_after


@pytest.mark.parametrize(("opening", "trickle"), [case[1:] for case in SLOW_BODIES], ids=[case[0] for case in SLOW_BODIES])
def test_a_client_slow_to_send_its_body_is_answered_408_problem_json_and_closed(deadlines, opening, trickle):
    conversation = converse(deadlines, opening, trickle)
    assert conversation.answer.startswith(b"HTTP/1.1 408 "), conversation.answer[:200]
    assert conversation.header("content-type") == PROBLEM
    assert json.loads(conversation.body)["status"] == 408
    assert conversation.closed_after is not None and conversation.closed_after < 3.0, conversation.closed_after


def test_a_connection_that_sends_nothing_is_closed_by_the_header_deadline_without_a_408(deadlines):
    """A browser's pre-connect or an idle keep-alive asked for nothing: it is closed without a word."""
    conversation = converse(deadlines, b"")
    assert conversation.closed_after is not None and conversation.closed_after < 3.0, conversation.closed_after
    assert conversation.answer == b"", conversation.answer[:200]


def test_the_header_deadline_after_a_request_with_a_body_is_the_header_deadline_not_the_body_one(tmp_path, issuer):
    """A request whose body came a byte at a time, then half of the next request: the
    connection gets its 408 a header deadline (1 s) after the answer, not a body deadline (10 s)."""
    with own_service(tmp_path / "service", issuer, HEADER_TIMEOUT_SECONDS="1", BODY_TIMEOUT_SECONDS="10") as service:
        opening = b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n"
        conversation = converse(service, opening, b"hi" + b"GET /hea", after_answer=True)
    assert conversation.answer.startswith(b"HTTP/1.1 200 "), conversation.answer[:200]
    assert b"HTTP/1.1 408 " in conversation.answer, conversation.answer[-300:]
    assert conversation.closed_after is not None and conversation.closed_after < 4.0, conversation.closed_after


UNREAD_BODIES = [
    ("healthz", b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n", b"HTTP/1.1 200 "),
    ("create-without-a-token", b"POST /api/1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n", b"HTTP/1.1 401 "),
]


@pytest.mark.parametrize(("opening", "first_answer"), [case[1:] for case in UNREAD_BODIES], ids=[case[0] for case in UNREAD_BODIES])
def test_a_body_the_route_never_reads_is_cut_off_at_the_body_deadline_too(deadlines, opening, first_answer):
    """The route answers without reading the body; the client goes on sending it, a byte every
    0.2 s. Its body has not arrived within BODY_TIMEOUT_SECONDS: the connection is closed."""
    conversation = converse(deadlines, opening, b"a" * 200, after_answer=True)
    assert conversation.answer.startswith(first_answer), conversation.answer[:200]
    assert conversation.closed_after is not None and conversation.closed_after < 3.0, conversation.closed_after


def read_response(sock) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length off a keep-alive socket: (status, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"^content-length: *([0-9]+)", head, flags=re.IGNORECASE | re.MULTILINE)[1])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed inside a body"
        body += chunk
    return int(head.split(b" ", 2)[1]), body


def test_requests_on_a_keep_alive_connection_outlive_the_deadlines_of_the_first(deadlines):
    """Four complete requests on one connection, 0.6 s apart: 2.4 s in all, past both deadlines
    counted from the connection's start, and none of them is cut."""
    login = json.dumps({"email": "nobody@example.com", "password": "a-wrong-password"}).encode()
    requests = [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(login), login),
    ] * 2
    statuses = []
    with socket.create_connection(host_and_port(deadlines), timeout=5) as sock:
        for request in requests:
            time.sleep(0.6)
            sock.sendall(request)
            statuses.append(read_response(sock)[0])
    assert statuses == [200, 401, 200, 401]


# ---------------------------------------------------------------------------------------
# 5. The JWKS refreshed in the background, never inside a request.
# ---------------------------------------------------------------------------------------


class JWKSServer:
    """Better Auth's JWKS endpoint on loopback: keys a test adds and drops, and a hang it can switch on."""

    def __init__(self):
        self.keys: dict[str, Ed25519PrivateKey] = {}
        self.alg = "EdDSA"  # what each key's JWK says in `alg`
        self.hang_seconds = 0.0
        self.fetches = 0
        self.released = threading.Event()  # set: no more hanging (so the server can stop)

    def add_key(self) -> str:
        kid = uuid.uuid4().hex
        self.keys[kid] = Ed25519PrivateKey.generate()
        return kid

    def document(self) -> bytes:
        return json.dumps({"keys": [{**public_jwk(key, kid), "alg": self.alg} for kid, key in list(self.keys.items())]}).encode()

    def token(self, kid: str, subject: str, alg: str = "EdDSA", key: Ed25519PrivateKey | None = None) -> str:
        """A fresh token (its own jti, so never one the service has seen) for Better Auth's user `subject`."""
        now = int(time.time())
        claims = {"sub": subject, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 900, "jti": uuid.uuid4().hex}
        return signed({"alg": alg, "kid": kid}, claims, key or self.keys[kid])


@contextmanager
def jwks_server():
    jwks = JWKSServer()

    def answer(path):
        jwks.fetches += 1
        if jwks.hang_seconds:
            jwks.released.wait(jwks.hang_seconds)
        return 200, jwks.document()

    with loopback_server(answer) as url:
        jwks.jwks_url = f"{url}/api/auth/jwks"
        try:
            yield jwks
        finally:
            jwks.released.set()  # a hanging answer returns, so the server can stop


def me(service, token: str) -> httpx.Response:
    return httpx.get(f"{service.url}/api/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_a_jwks_that_starts_hanging_never_delays_a_request_whose_key_is_known(tmp_path):
    with jwks_server() as jwks:
        kid, subject = jwks.add_key(), uuid.uuid4().hex
        with own_service(tmp_path / "service", jwks, JWKS_REFRESH_SECONDS="1") as service:
            assert me(service, jwks.token(kid, subject)).status_code == 200
            jwks.hang_seconds, fetches_before = 10.0, jwks.fetches
            seen, until = [], time.monotonic() + 4
            while time.monotonic() < until:
                started = time.monotonic()
                status = me(service, jwks.token(kid, subject)).status_code
                seen.append((status, round(time.monotonic() - started, 3)))
                time.sleep(0.1)
            refreshes_tried = jwks.fetches - fetches_before
            jwks.released.set()
    assert refreshes_tried >= 1  # the timer did try, and hung, while these were answered
    assert {status for status, _ in seen} == {200}, seen
    assert max(seconds for _, seconds in seen) < 1.0, seen


def test_a_key_removed_from_the_jwks_is_refused_within_seconds_of_the_next_refresh(tmp_path):
    with jwks_server() as jwks:
        kept, dropped, subject = jwks.add_key(), jwks.add_key(), uuid.uuid4().hex
        with own_service(tmp_path / "service", jwks, JWKS_REFRESH_SECONDS="1") as service:
            accepted = jwks.token(dropped, subject)
            assert me(service, accepted).status_code == 200
            key = jwks.keys.pop(dropped)
            removed_at = time.monotonic()
            while (response := me(service, jwks.token(dropped, subject, key=key))).status_code == 200 and time.monotonic() - removed_at < 6:
                time.sleep(0.1)
            refused_after = time.monotonic() - removed_at
            same_token_again = me(service, accepted)
            other_key = me(service, jwks.token(kept, subject))
    assert response.status_code == 401, response.text
    assert refused_after < 5.0
    assert same_token_again.status_code == 401  # a token verified before is not remembered past its key
    assert other_key.status_code == 200


# ---------------------------------------------------------------------------------------
# 6. Safe retries: Idempotency-Key on POST /api/{user_id}/tasks.
# ---------------------------------------------------------------------------------------


def create_with_key(client, user, body: dict, key) -> httpx.Response:
    return client.post(user.tasks_url(), json=body, headers={**user.headers, "Idempotency-Key": key})


def task_count(service, user) -> int:
    return service.sql("SELECT count(*) FROM tasks WHERE user_id = $1", user.id)[0][0]


def a_body() -> dict:
    return {"title": f"pay the rent {uuid.uuid4().hex[:8]}", "tags": ["home"]}


def test_a_retry_with_the_same_key_and_body_answers_the_same_task_and_creates_nothing(client, service, alice):
    key, body = str(uuid.uuid4()), a_body()
    first = create_with_key(client, alice, body, key)
    retried = create_with_key(client, alice, body, key)
    assert first.status_code == 201, first.text
    assert retried.status_code == 201, retried.text
    assert retried.json() == first.json()
    assert retried.headers["location"] == first.headers["location"] == alice.tasks_url(first.json()["id"])
    assert task_count(service, alice) == 1


def test_the_same_key_with_another_body_is_422_and_creates_nothing(client, service, alice):
    key, body = str(uuid.uuid4()), a_body()
    assert create_with_key(client, alice, body, key).status_code == 201
    response = create_with_key(client, alice, {**body, "title": "something else"}, key)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["status"] == 422
    assert task_count(service, alice) == 1


def test_another_users_same_key_is_a_key_of_its_own(client, service, alice, bob):
    key, body = str(uuid.uuid4()), a_body()
    hers, his = create_with_key(client, alice, body, key), create_with_key(client, bob, body, key)
    assert (hers.status_code, his.status_code) == (201, 201)
    assert his.json()["user_id"] == bob.id and his.json()["id"] != hers.json()["id"]
    assert (task_count(service, alice), task_count(service, bob)) == (1, 1)


def test_a_key_used_more_than_24_hours_ago_makes_a_new_task(client, service, alice, backend):
    key, body = str(uuid.uuid4()), a_body()
    first = create_with_key(client, alice, body, key)
    assert first.status_code == 201, first.text
    made_at = datetime.now(UTC) - timedelta(hours=24, minutes=1)  # as if the first create were a day old
    stored = made_at if backend == "postgresql" else made_at.isoformat(timespec="microseconds").replace("+00:00", "Z")
    service.sql(f"UPDATE tasks SET created_at = $1 WHERE id = {int(first.json()['id'])}", stored)
    again = create_with_key(client, alice, body, key)
    assert again.status_code == 201, again.text
    assert again.json()["id"] != first.json()["id"]
    assert task_count(service, alice) == 2


def test_the_quoted_form_of_a_key_is_the_same_key(client, service, alice):
    """The draft's Idempotency-Key is a structured-field string: "abc" is the key abc."""
    key, body = str(uuid.uuid4()), a_body()
    first = create_with_key(client, alice, body, key)
    retried = create_with_key(client, alice, body, f'"{key}"')
    assert (first.status_code, retried.status_code) == (201, 201)
    assert retried.json()["id"] == first.json()["id"]
    assert task_count(service, alice) == 1


VISIBLE_ASCII = "".join(chr(code) for code in range(0x21, 0x7F) if chr(code) != '"')


@pytest.mark.parametrize(
    "key",
    ["k", "x" * 255, VISIBLE_ASCII, '"a-quoted-key"'],
    ids=["one-character", "255-characters", "every-visible-character", "quoted"],
)
def test_a_well_formed_idempotency_key_is_accepted(client, service, alice, key):
    response = create_with_key(client, alice, a_body(), key)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "key",
    ["", "x" * 256, "two words", "tab\there", "clé".encode(), '""'],
    ids=["empty", "256-characters", "space", "tab", "non-ascii", "quoted-empty"],
)
def test_a_malformed_idempotency_key_is_400_naming_the_header_and_creates_nothing(client, service, alice, key):
    response = create_with_key(client, alice, a_body(), key)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM
    assert "idempotency-key" in response.text.lower()
    assert task_count(service, alice) == 0


def test_concurrent_creates_with_one_key_and_one_body_all_answer_the_one_task_they_made(service, alice):
    key, body = str(uuid.uuid4()), a_body()
    headers = {**alice.headers, "Idempotency-Key": key}
    answers = send_together(service, [(0.0, "POST", alice.tasks_url(), {"json": body, "headers": headers}) for _ in range(10)], timeout=30)
    assert [answer.response.status_code for answer in answers] == [201] * 10, [answer.response.text for answer in answers]
    assert len({answer.response.json()["id"] for answer in answers}) == 1
    assert task_count(service, alice) == 1


def test_a_key_holds_across_a_restart_of_the_service(start_service, issuer, tmp_path):
    key, body = str(uuid.uuid4()), a_body()
    with start_service() as first:
        user_id = sign_up(first)["id"]
        headers = {"Authorization": f"Bearer {own_token(user_id)}", "Idempotency-Key": key}
        created = httpx.post(f"{first.url}/api/{user_id}/tasks", json=body, headers=headers, timeout=30)
        first.process.terminate()
        first.process.wait(timeout=30)
        with running_service(service_environment(first.database_url, issuer), tmp_path / "restarted.log") as restarted:
            retried = httpx.post(f"{restarted.url}/api/{user_id}/tasks", json=body, headers=headers, timeout=30)
            count = restarted.sql("SELECT count(*) FROM tasks WHERE user_id = $1", user_id)[0][0]
    assert created.status_code == 201, created.text
    assert retried.status_code == 201, retried.text
    assert retried.json()["id"] == created.json()["id"]
    assert retried.headers["location"] == created.headers["location"]
    assert count == 1


# ---------------------------------------------------------------------------------------
# 7. Small hardenings: no redirect from Host, bounded method names, disconnects, Ed25519.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [("GET", "/api/1/tasks/"), ("GET", "/healthz/"), ("POST", "/api/auth/login/")])
def test_a_trailing_slash_is_404_never_a_redirect_built_from_the_host_header(client, method, path):
    response = client.request(method, path, headers={"Host": "evil.example"})
    assert response.status_code == 404, response.headers
    assert "location" not in response.headers
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["status"] == 404


def log_entries(text: str) -> list[dict]:
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def logged_since(service, start: int, request_id: str) -> tuple[dict, str]:
    """The request line with this id (waited for), and the whole log written since `start`,
    once a later request's line shows that everything before it is written."""
    deadline = time.monotonic() + 5
    while not (found := [entry for entry in log_entries(service.log()[start:]) if entry.get("request_id") == request_id]):
        assert time.monotonic() < deadline, f"no request line with request_id {request_id}"
        time.sleep(0.05)
    marker = f"after-{uuid.uuid4().hex}"
    httpx.get(f"{service.url}/healthz", headers={"X-Request-ID": marker}, timeout=10)
    while not any(entry.get("request_id") == marker for entry in log_entries(service.log()[start:])):
        assert time.monotonic() < deadline + 5, "the marker request was never logged"
        time.sleep(0.05)
    [line] = found
    return line, service.log()[start:]


def raw_exchange(service, request: bytes) -> bytes:
    with socket.create_connection(host_and_port(service), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("method", ["X" * 12_000, "BREW"], ids=["12000-characters", "short-unknown"])
def test_an_unknown_method_is_logged_as_other_on_a_short_line(service, method):
    start, request_id = len(service.log()), f"method-{uuid.uuid4().hex}"
    answer = raw_exchange(service, f"{method} /healthz HTTP/1.1\r\nHost: x\r\nX-Request-ID: {request_id}\r\nConnection: close\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 ")
    line, written = logged_since(service, start, request_id)
    assert line["method"] == "OTHER"
    assert max(len(text) for text in written.splitlines()) <= 2000
    assert method not in written


@pytest.mark.parametrize("route", ["signup", "create-task"])
def test_a_client_that_disconnects_mid_body_is_logged_as_499_at_info_without_an_error(service, alice, route):
    start, request_id = len(service.log()), f"gone-{uuid.uuid4().hex}"
    path, authorization = (SIGNUP, "") if route == "signup" else (alice.tasks_url(), f"Authorization: Bearer {alice.token()}\r\n")
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\nX-Request-ID: {request_id}\r\n{authorization}\r\n"
    with socket.create_connection(host_and_port(service), timeout=10) as sock:
        sock.sendall(head.encode() + b'{"title": ')
        time.sleep(0.3)  # the route is reading the body by now
    line, written = logged_since(service, start, request_id)
    assert (line["status"], line["level"]) == (499, "info")
    assert [entry for entry in log_entries(written) if entry.get("level") in ("error", "critical")] == []
    assert "Exception in ASGI application" not in written
    assert "Traceback" not in written


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(header: dict, claims: dict, key: Ed25519PrivateKey) -> str:
    """A JWS over exactly this header and these claims, signed with this Ed25519 key."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(key.sign(signing_input.encode()))}"


def better_auth_claims(subject: str) -> dict:
    now = int(time.time())
    return {"sub": subject, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 900, "jti": uuid.uuid4().hex}


def test_a_token_whose_alg_is_ed25519_signed_by_a_key_of_the_jwks_is_accepted(client, issuer, alice):
    token = signed({"alg": "Ed25519", "kid": issuer.current_kid}, better_auth_claims(alice.subject), issuer.keys[issuer.current_kid])
    assert jwt.get_unverified_header(token)["alg"] == "Ed25519"
    response = client.get(alice.tasks_url(), headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text


def test_a_token_whose_alg_is_ed25519_signed_by_another_key_is_401(client, issuer, alice):
    token = signed({"alg": "Ed25519", "kid": issuer.current_kid}, better_auth_claims(alice.subject), Ed25519PrivateKey.generate())
    response = client.get(alice.tasks_url(), headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.parametrize("token_alg", ["EdDSA", "Ed25519"])
def test_a_jwks_key_published_with_alg_ed25519_verifies_tokens_under_either_name(tmp_path, token_alg):
    """RFC 9864's name may also reach the JWKS itself, once Better Auth moves to it."""
    with jwks_server() as jwks:
        jwks.alg = "Ed25519"
        kid = jwks.add_key()
        with own_service(tmp_path / "service", jwks) as service:
            response = me(service, jwks.token(kid, uuid.uuid4().hex, alg=token_alg))
    assert response.status_code == 200, response.text
