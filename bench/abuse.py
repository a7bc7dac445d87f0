"""The abuse phase's flood, and a real user logging in through it (issue 13).

    python bench/abuse.py --port PORT --out abuse.json --ready FILE --stop FILE [options]

First the real user logs in a few times with nothing else running (its idle login time),
and the first token it gets is checked on GET /api/me (a login token of the service's own
speaks for the user who logged in). Then the flood starts:

  * --signups lanes (40), each its own client address, each with one signup in flight at a time;
  * --login-clients (5) addresses x --logins-per-client (30) lanes, each with one wrong login
    (the real user's email, a wrong password) in flight at a time.

Every lane sends its next request as soon as the last is answered; a 503 is honoured: the
lane waits for its Retry-After, as a client that follows the protocol does, then sends
again. Client addresses go in X-Forwarded-For, so the service must run with
TRUSTED_PROXIES=127.0.0.1 (and with rate limits too high to refuse anything: the point is
the bcrypt queue, not the rate limits). --ready is written once the flood has run for
--ramp seconds; from then the real user's --logins logins start, spread over --window
seconds, each from an address and a connection of its own, each retried after its
Retry-After while it is refused with 503, for at most --login-cap seconds (then it is
given up, and counted at the time it had taken). A login's time is from its first attempt
to its token. The flood stops once --stop exists and every login has ended.

Expected answers: 201 to a signup, 401 to a wrong login, 200 to the real user, 503 with a
Retry-After to any of them. Anything else (another status, a 503 without Retry-After, a
socket error) is counted as unexpected; bench/report.py fails the run on it. Writes --out
(JSON) for bench/report.py. A tiny HTTP/1.1 client over asyncio streams, so that the load
generator costs the shared cores little.
"""

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

HOST = "127.0.0.1"


class Connection:
    """One keep-alive HTTP/1.1 connection; reopened when the server closes it."""

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None

    async def request(self, method: str, path: str, headers: dict, body: bytes = b"") -> tuple[int, dict, bytes]:
        head = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{self.port}", f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        data = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        for attempt in (1, 2):
            fresh = self.writer is None
            if fresh:
                self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
            try:
                self.writer.write(data)
                await self.writer.drain()
                status_line = await self.reader.readline()
            except (ConnectionResetError, BrokenPipeError):
                if fresh:
                    raise
                status_line = b""
            if status_line:
                break
            await self.close()  # the server had closed a kept-alive connection: send again on a new one
            if fresh or attempt == 2:
                raise ConnectionError("connection closed before an answer")
        status = int(status_line.split()[1])
        response_headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            response_headers[name.strip().lower()] = value.strip()
        if "content-length" not in response_headers:
            raise ConnectionError(f"an answer without Content-Length: {response_headers}")
        response_body = await self.reader.readexactly(int(response_headers["content-length"]))
        if response_headers.get("connection", "").lower() == "close":
            await self.close()
        return status, response_headers, response_body


def json_headers(client: str) -> dict:
    return {"Content-Type": "application/json", "X-Forwarded-For": client}


class Tally:
    """Answers of one kind of lane: counts by status, latencies, what was not expected."""

    def __init__(self, expected: int):
        self.expected = expected
        self.status: dict[str, int] = {}
        self.served_latencies: list[float] = []  # answers other than 503
        self.refused_latencies: list[float] = []  # 503s
        self.refused_without_retry_after = 0
        self.socket_errors = 0
        self.unexpected: dict[str, int] = {}

    def add(self, status: int, headers: dict, seconds: float) -> float | None:
        """Count one answer; the seconds to wait before the next request when it was a 503."""
        self.status[str(status)] = self.status.get(str(status), 0) + 1
        if status == 503:
            self.refused_latencies.append(seconds)
            retry_after = headers.get("retry-after", "")
            if not retry_after.isdigit():
                self.refused_without_retry_after += 1
                return 1.0
            return float(retry_after)
        self.served_latencies.append(seconds)
        if status != self.expected:
            self.unexpected[str(status)] = self.unexpected.get(str(status), 0) + 1
        return None

    def summary(self) -> dict:
        def stats(values):
            if not values:
                return None
            ordered = sorted(values)
            return {
                "count": len(values),
                "p50_s": round(statistics.median(ordered), 4),
                "p99_s": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 4),
                "max_s": round(ordered[-1], 4),
            }

        return {
            "sent": sum(self.status.values()) + self.socket_errors,
            "status": self.status,
            "served": stats(self.served_latencies),
            "refused_503": stats(self.refused_latencies),
            "refused_503_count": len(self.refused_latencies),
            "refused_503_without_retry_after": self.refused_without_retry_after,
            "socket_errors": self.socket_errors,
            "unexpected": self.unexpected,
        }


async def lane(port: int, tally: Tally, client: str, next_body, stopping: asyncio.Event) -> None:
    connection = Connection(port)
    path = "/api/auth/signup" if tally.expected == 201 else "/api/auth/login"
    try:
        while not stopping.is_set():
            started = time.perf_counter()
            try:
                status, headers, _ = await connection.request("POST", path, json_headers(client), next_body())
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError):
                tally.socket_errors += 1
                await connection.close()
                await asyncio.sleep(0.1)
                continue
            wait = tally.add(status, headers, time.perf_counter() - started)
            if wait:
                try:  # the Retry-After, cut short if the flood ends meanwhile
                    await asyncio.wait_for(stopping.wait(), wait)
                except TimeoutError:
                    pass
    finally:
        await connection.close()


async def real_login(connection: Connection, client: str, email: str, password: str, cap: float) -> dict:
    """One login as a person's client makes it: retried after Retry-After while refused with
    503, for at most `cap` seconds (then given up)."""
    body = json.dumps({"email": email, "password": password}).encode()
    started = time.perf_counter()
    attempts = []
    while True:
        attempt_started = time.perf_counter()
        status, headers, response = await connection.request("POST", "/api/auth/login", json_headers(client), body)
        attempts.append({"status": status, "seconds": round(time.perf_counter() - attempt_started, 4)})
        if status == 503 and headers.get("retry-after", "").isdigit():
            wait = float(headers["retry-after"])
            if time.perf_counter() + wait - started < cap:
                await asyncio.sleep(wait)
                continue
        return {
            "ok": status == 200,
            "gave_up": status == 503 and headers.get("retry-after", "").isdigit(),
            "seconds": round(time.perf_counter() - started, 4),
            "attempts": attempts,
            "token": json.loads(response)["access_token"] if status == 200 else None,
        }


def login_summary(logins: list[dict]) -> dict:
    """Time from first attempt to token; a login given up counts as its time so far (a lower bound)."""
    times = [login["seconds"] for login in logins]
    refusals = [attempt for login in logins for attempt in login["attempts"] if attempt["status"] == 503]
    last_attempts = [login["attempts"][-1]["seconds"] for login in logins if login["ok"]]
    return {
        "count": len(logins),
        "got_token": sum(login["ok"] for login in logins),
        "gave_up": sum(login["gave_up"] for login in logins),
        "median_s": round(statistics.median(times), 4) if times else None,
        "max_s": round(max(times), 4) if times else None,
        "seconds": times,
        "refused_503": len(refusals),
        "refused_503_max_answer_s": round(max((attempt["seconds"] for attempt in refusals), default=0), 4),
        "served_attempt_median_s": round(statistics.median(last_attempts), 4) if last_attempts else None,
        "statuses": [[attempt["status"] for attempt in login["attempts"]] for login in logins],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--ready", required=True)
    parser.add_argument("--stop", required=True)
    parser.add_argument("--prefix", default="abuse")
    parser.add_argument("--email", default="bench-user-1@example.com")
    parser.add_argument("--password", default="bench password 42")
    parser.add_argument("--user-id", type=int, required=True, help="the real user's id, for the /api/me check")
    parser.add_argument("--signups", type=int, default=40)
    parser.add_argument("--login-clients", type=int, default=5)
    parser.add_argument("--logins-per-client", type=int, default=30)
    parser.add_argument("--idle-logins", type=int, default=3)
    parser.add_argument("--logins", type=int, default=5, help="the real user's logins during the flood")
    parser.add_argument("--window", type=float, default=10.0, help="seconds over which they start")
    parser.add_argument("--login-cap", type=float, default=20.0, help="seconds a login keeps retrying after 503s")
    parser.add_argument("--ramp", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args()

    report = {"settings": {k: v for k, v in vars(args).items() if k not in ("password", "out", "ready", "stop")}}
    unexpected = []
    user = Connection(args.port)

    idle = [await real_login(user, "10.13.3.1", args.email, args.password, args.login_cap) for _ in range(args.idle_logins)]
    report["idle_logins"] = login_summary(idle)
    if not all(login["ok"] for login in idle):
        unexpected.append(f"idle login failed: {[login['attempts'] for login in idle]}")
    else:
        status, _, body = await user.request("GET", "/api/me", {"Authorization": f"Bearer {idle[0]['token']}"})
        me = json.loads(body) if status == 200 else None
        report["login_token_me_check"] = {"status": status, "id": me and me.get("id"), "expected_id": args.user_id}
        if status != 200 or me.get("id") != args.user_id:
            unexpected.append(f"GET /api/me with the login token: {status} {body[:200]!r}, expected the user {args.user_id}")

    stopping = asyncio.Event()
    signups, wrong_logins = Tally(201), Tally(401)
    counter = iter(range(10**9))

    def signup_body(lane_number):
        return lambda: json.dumps({"email": f"{args.prefix}-{lane_number}-{next(counter)}@bench.example.com",
                                   "password": "bench password 42"}).encode()

    def wrong_login_body(lane_number):
        return lambda: json.dumps({"email": args.email, "password": f"wrong password {lane_number}"}).encode()

    flood_started = time.perf_counter()
    lanes = [asyncio.create_task(lane(args.port, signups, f"10.13.1.{n + 1}", signup_body(n), stopping))
             for n in range(args.signups)]
    lanes += [
        asyncio.create_task(lane(args.port, wrong_logins, f"10.13.2.{client + 1}", wrong_login_body(n), stopping))
        for client in range(args.login_clients)
        for n in range(args.logins_per_client)
    ]
    await asyncio.sleep(args.ramp)
    Path(args.ready).write_text("flooding\n")

    # The real user's logins, started one after another across the window (each from a
    # client address of its own, on a connection of its own), whatever the ones before are doing.
    async def staggered_login(number: int) -> dict:
        await asyncio.sleep(number * args.window / args.logins)
        connection = Connection(args.port)
        try:
            return await real_login(connection, f"10.13.3.{number + 2}", args.email, args.password, args.login_cap)
        except (OSError, ConnectionError, asyncio.IncompleteReadError) as exc:
            unexpected.append(f"real user's login {number}: {type(exc).__name__}: {exc}")
            return {"ok": False, "gave_up": False, "seconds": 0.0, "attempts": [], "token": None}
        finally:
            await connection.close()

    logins = await asyncio.gather(*(staggered_login(number) for number in range(args.logins)))
    while not Path(args.stop).exists() and time.perf_counter() - flood_started < args.max_seconds:
        await asyncio.sleep(0.1)
    flood_seconds = time.perf_counter() - flood_started
    stopping.set()
    # Lanes finish the request they have in flight (a hash already queued is answered), so
    # that no request is cut off; any still running after 30 s are.
    done, pending = await asyncio.wait(lanes, timeout=30)
    for task in pending:
        task.cancel()
    await user.close()

    report["flood_seconds"] = round(flood_seconds, 2)
    report["lanes_cut_at_the_end"] = len(pending)
    report["signup"] = signups.summary()
    report["wrong_login"] = wrong_logins.summary()
    report["real_user"] = login_summary(logins)
    for login in logins:
        if not login["ok"] and not login["gave_up"]:
            unexpected.append(f"real user's login under the flood: attempts {login['attempts']}")
    for name, tally in (("signup", signups), ("wrong login", wrong_logins)):
        if tally.unexpected:
            unexpected.append(f"{name}: unexpected statuses {tally.unexpected}")
        if tally.refused_without_retry_after:
            unexpected.append(f"{name}: {tally.refused_without_retry_after} 503s without Retry-After")
        if tally.socket_errors:
            unexpected.append(f"{name}: {tally.socket_errors} socket errors")
    report["unexpected"] = unexpected
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"abuse: flood ran {flood_seconds:.1f} s; signups {signups.status}, wrong logins {wrong_logins.status}; "
          f"real user's logins {report['real_user']['seconds']} s ({report['real_user']['gave_up']} given up); unexpected: {unexpected or 'none'}")


if __name__ == "__main__":
    asyncio.run(main())
