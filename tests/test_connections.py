"""The connection cap (MAX_CONNECTIONS), against the real service process on raw sockets.

Past the cap a new connection takes the place of the connection idle longest; when none is
idle it is answered 503 at once. Either way within 3 s, and never by closing a connection that
is in the middle of a request. Every socket connects to 127.0.0.1 only; every wait is bounded.
"""

import select
import socket
import sys
import time
from contextlib import contextmanager

import httpx
import pytest

from conftest import ROOT, database_for, running_service, service_environment

CAP = 50
ANSWER_WITHIN = 3.0  # seconds: the contract's bound for a new client past the cap
HALF_A_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"  # no blank line: the headers never end


@pytest.fixture(scope="module")
def capped_service(backend, issuer, tmp_path_factory):
    """A service with MAX_CONNECTIONS at CAP, for this module's tests on the backend."""
    directory = tmp_path_factory.mktemp(f"capped-{backend}")
    with database_for(backend, directory) as database_url:
        env = service_environment(database_url, issuer, MAX_CONNECTIONS=str(CAP))
        with running_service(env, directory / "service.log") as service:
            yield service


@pytest.fixture
def capped(capped_service):
    """The capped service, with none of the connections of the test before it left: a new
    client's /healthz is answered only after the service has read the closes sent before it."""
    assert httpx.get(f"{capped_service.url}/healthz", timeout=ANSWER_WITHIN).status_code == 200
    return capped_service


@contextmanager
def connections(service, count: int):
    """`count` plain sockets to the service, opened one after the other, sending nothing."""
    host, port = service.url.removeprefix("http://").split(":")
    sockets = []
    try:
        for _ in range(count):
            sockets.append(socket.create_connection((host, int(port)), timeout=5))
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def closed_by_server(sock) -> bool:
    """Whether the server has closed this socket (end of stream or reset), without waiting."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except ConnectionResetError:
        return True


def timed_healthz(service) -> tuple[httpx.Response, float]:
    """A new client's GET /healthz and the seconds it took; past ANSWER_WITHIN it raises."""
    started = time.monotonic()
    response = httpx.get(f"{service.url}/healthz", timeout=ANSWER_WITHIN)
    return response, time.monotonic() - started


def test_past_the_cap_a_new_client_is_served_because_an_idle_connection_makes_room(capped):
    with connections(capped, CAP + 10):
        time.sleep(0.5)  # all accepted by now
        response, seconds = timed_healthz(capped)
    assert response.status_code == 200, response.text
    assert seconds < ANSWER_WITHIN


def test_the_connection_closed_to_make_room_is_the_one_idle_longest(capped):
    with connections(capped, CAP) as idle:
        time.sleep(0.5)
        with connections(capped, 1):
            time.sleep(0.5)  # the server has closed the oldest by now
            closed = [number for number, sock in enumerate(idle) if closed_by_server(sock)]
    assert closed == [0]


def test_when_no_connection_is_idle_a_new_one_is_answered_503_problem_json_at_once(capped):
    with connections(capped, CAP) as half:
        for sock in half:
            sock.sendall(HALF_A_REQUEST)
        time.sleep(1.0)  # every half request read by now (the header deadline is 10 s)
        response, seconds = timed_healthz(capped)
        cut = [number for number, sock in enumerate(half) if closed_by_server(sock)]
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "Too many connections at once; try again shortly.",
    }
    assert response.headers["retry-after"] == "1"
    assert response.headers["connection"] == "close"
    assert seconds < ANSWER_WITHIN
    assert cut == []  # a half request is the header deadline's to cut, not the cap's
    deadline = time.monotonic() + 5
    while (served := httpx.get(f"{capped.url}/healthz", timeout=5)).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert served.status_code == 200  # once they are gone, clients are served again


def test_a_keep_alive_connection_in_the_middle_of_a_request_is_never_closed_to_make_room(capped):
    """The first connection serves a request, so it is the one idle longest; then it starts a
    login and sends half its body. CAP + 10 idle connections and a new client come after it,
    and its login is still answered when the body is finished."""
    body = b'{"email": "nobody@example.com", "password": "a-wrong-password"}'
    login = b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    with connections(capped, 1) as (busy,):
        busy.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_status(busy) == 200
        busy.sendall(login + body[:10])
        time.sleep(0.3)
        with connections(capped, CAP + 10):
            time.sleep(0.5)
            response, seconds = timed_healthz(capped)
            busy.sendall(body[10:])
            status = read_status(busy)
    assert response.status_code == 200 and seconds < ANSWER_WITHIN
    assert status == 401


def read_status(sock) -> int:
    """The status of the next response on a keep-alive socket, reading through its body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection inside a body"
        body += chunk
    return int(head.split(b" ", 2)[1])


DESCRIPTORS = 256  # the service's open-file limit: MAX_CONNECTIONS defaults to 128


def with_descriptor_limit(limit: int) -> list[str]:
    """The service's command, its open-file limit lowered first (soft and hard, as a platform's would be)."""
    lower_then_start = (
        "import os, resource, sys; limit = int(sys.argv[1]); "
        "resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)); "
        "os.execv(sys.executable, [sys.executable, sys.argv[2]])"
    )
    return [sys.executable, "-c", lower_then_start, str(limit), str(ROOT / "todo_service.py")]


def test_more_idle_connections_than_descriptors_never_lock_a_new_client_out(backend, issuer, tmp_path):
    """All opened at once, more than the spare descriptors are accepted in one turn of the loop:
    asyncio may pause accepting for its second, and the cap has made room by then."""
    with database_for(backend, tmp_path) as database_url:
        env = service_environment(database_url, issuer, MAX_CONNECTIONS=None)  # the default
        with running_service(env, tmp_path / "service.log", command=with_descriptor_limit(DESCRIPTORS)) as service:
            with connections(service, DESCRIPTORS + 50):
                time.sleep(0.5)
                answers = [timed_healthz(service) for _ in range(5)]
    assert [response.status_code for response, _ in answers] == [200] * 5
    assert max(seconds for _, seconds in answers) < ANSWER_WITHIN
