"""Version 3's benchmark: the list's 304, live events across two processes, their memory, and
a minute's burst of reminders. Runs alone, or as the last phase of bench/run.sh:

    uv run --locked python bench/v3.py [--out DIR]      # about 2 to 3 minutes with the defaults

It makes a database of its own (dropped and created anew on 127.0.0.1:5432, user postgres),
starts two service processes on it (A, then B once A has migrated it), each at LOG_LEVEL=info
in a clean environment as bench/run.sh starts one, seeds USERS users x TASKS tasks with
bench/seed.py (tokens of the service's own), and then, over HTTP to 127.0.0.1 only:

  1. not-modified: the list answered 304 (If-None-Match with each user's weak ETag, fetched
     first) against the same list answered 200, in alternating wrk rounds on process A (the
     table keeps each side's median round; the ratio is each round's, median of rounds).
  2. events: STREAM_USERS users x STREAMS_PER_USER streams (half on A, half on B) held open by
     one asyncio client on raw sockets; then WRITES PATCHes one after another, alternating the
     process they go to, each renaming a stream user's task; for every write and every stream
     of its user, the time from the write's response (and from its request, an upper bound of
     commit-to-event) to the `change` event, split by the stream's process: the writer's own
     or the other one.
  3. memory: each process's RSS with no stream open (after phase 1) and with its streams open.
  4. reminders: REMINDERS tasks, each with one `at` reminder at the same instant LEAD seconds
     ahead, inserted through SQL into tasks (the API's triggers plan the reminder rows; the
     API would take longer to seed than the lead), spread over every seeded user, the stream
     users among them; then the count of reminders fired (rows with fired_at), their lateness
     (fired_at - fire_at), the `reminder` events on the streams (each stream should get each
     of its user's reminders exactly once) and their arrival after the planned time; and the
     list's p99 on A while they fire against the same probe idle just before.

Every loop is bounded in count and time; every process started here is stopped on exit.
Prints a table and writes OUT/v3.json. Exits 1 when a request had an answer it should not
have (a stream refused, a non-2xx write, a wrk error), when events or reminders went missing
or came twice, or when a reminder did not fire.
"""

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import seed  # noqa: E402  (bench/seed.py)

HOST = "127.0.0.1"


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank) of values; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def summary_ms(seconds: list[float]) -> dict:
    return {
        "count": len(seconds),
        **{f"p{q}_ms": None if percentile(seconds, q) is None else round(percentile(seconds, q) * 1000, 1) for q in (50, 90, 99)},
        "max_ms": round(max(seconds) * 1000, 1) if seconds else None,
        "min_ms": round(min(seconds) * 1000, 1) if seconds else None,
    }


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


class Services:
    """The two service processes, stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, args, out: Path, env: dict):
        self.args, self.out, self.env, self.processes = args, out, env, {}

    def start(self, name: str, port: int) -> None:
        with open(self.out / f"service-{name}.log", "wb") as log:  # the child keeps its own descriptor
            self.processes[name] = subprocess.Popen(
                [self.args.python, str(Path(self.args.service_dir) / "todo_service.py")],
                cwd=self.out, env={**self.env, "PORT": str(port)}, stdout=log, stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, name: str, port: int) -> None:
        async with httpx.AsyncClient() as client:
            for _ in range(120):
                if self.processes[name].poll() is not None:
                    raise SystemExit(f"v3: service {name} exited during startup; see {self.out}/service-{name}.log")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"http://{HOST}:{port}/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.5)
        raise SystemExit(f"v3: service {name} did not answer /readyz")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- wrk -----------------------------------------------------------------------------------

def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


async def wrk(out: Path, name: str, port: int, route: str, rows: Path, seconds: float, connections: int, pid: int | None = None) -> dict:
    """One wrk run of bench/routes.lua; its BENCH_JSON line, with requests/s (and the CPU the
    service process `pid` spent per request)."""
    before = cpu_ticks(pid) if pid else 0
    process = await asyncio.create_subprocess_exec(
        "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "-s", str(BENCH / "routes.lua"),
        f"http://{HOST}:{port}", "--", route, str(rows), f"v3-{name}",
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    text = (await asyncio.wait_for(process.communicate(), seconds + 60))[0].decode()
    (out / f"{name}.txt").write_text(text)
    for line in text.splitlines():
        if line.startswith("BENCH_JSON "):
            result = json.loads(line.removeprefix("BENCH_JSON "))
            result["rps"] = round(result["requests"] / (result["duration_us"] / 1e6), 1)
            result["p99_ms"] = round(result["latency_us"]["p99"] / 1000, 1)
            result["p50_ms"] = round(result["latency_us"]["p50"] / 1000, 1)
            result["bytes_per_response"] = round(result["bytes"] / max(1, result["requests"]))
            result["error_count"] = sum(result["errors"].values())
            if pid:
                ticks = cpu_ticks(pid) - before
                result["cpu_us_per_request"] = round(ticks / os.sysconf("SC_CLK_TCK") * 1e6 / max(1, result["requests"]))
            return result
    raise SystemExit(f"v3: wrk {name} printed no result:\n{text}")


# --- Event streams on raw sockets ----------------------------------------------------------

class Stream:
    """One open GET /events, read on a raw socket (HTTP/1.1, chunked): each event's name,
    data and arrival time (time.monotonic() and time.time()) go to the collector."""

    def __init__(self, index: int, process: str, port: int, user: int, token: str, collector):
        self.index, self.process, self.port, self.user, self.token = index, process, port, user, token
        self.collector = collector
        self.ready = asyncio.Event()
        self.status = None
        self.writer = None
        self.error = None

    async def run(self) -> None:
        try:
            reader, self.writer = await asyncio.open_connection(HOST, self.port)
            self.writer.write(
                f"GET /api/{self.user}/events HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
                f"Authorization: Bearer {self.token}\r\nAccept: text/event-stream\r\n\r\n".encode()
            )
            await self.writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            self.status = int(head.split(b" ", 2)[1])
            if self.status != 200:
                self.ready.set()
                return
            if b"transfer-encoding: chunked" not in head.lower():
                raise RuntimeError("expected a chunked response")
            buffer = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                if size == 0:
                    return
                buffer += await reader.readexactly(size)
                await reader.readexactly(2)
                monotonic, wall = time.monotonic(), time.time()
                *events, buffer = buffer.split(b"\n\n")
                for raw in events:
                    event, data = "message", ""
                    for line in raw.decode().split("\n"):
                        if line.startswith("event: "):
                            event = line[7:]
                        elif line.startswith("data: "):
                            data = line[6:]
                    if event == "ready":
                        self.ready.set()
                    elif event in ("change", "reminder"):
                        self.collector(self, event, data, monotonic, wall)
                    elif event in ("expired", "resync"):
                        self.error = f"event {event}"
        except (OSError, asyncio.IncompleteReadError, RuntimeError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.ready.set()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Collector:
    """What the streams received: change events of the probe writes, reminder events."""

    PROBE = re.compile(r"v3 probe (\d+)")

    def __init__(self):
        self.changes = {}  # (write number, stream index) -> [monotonic arrival, ...]
        self.reminders = {}  # (stream index, task id) -> [wall arrival, ...]

    def __call__(self, stream: Stream, event: str, data: str, monotonic: float, wall: float) -> None:
        body = json.loads(data)
        if event == "change":
            match = self.PROBE.fullmatch(body.get("title") or "")
            if match:
                self.changes.setdefault((int(match[1]), stream.index), []).append(monotonic)
        else:
            self.reminders.setdefault((stream.index, body["task"]["id"]), []).append(wall)


# --- The phases ----------------------------------------------------------------------------

async def not_modified_phase(args, out: Path, port: int, pid: int, rows: list[tuple]) -> dict:
    """The list answered 200 against the same list answered 304, in alternating rounds."""
    etag_rows = out / "etag-rows.txt"
    lines = []
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=30) as client:
        semaphore = asyncio.Semaphore(16)

        async def etag_of(user, token, task):
            async with semaphore:
                response = await client.get(f"/api/{user}/tasks", headers={"Authorization": f"Bearer {token}"})
                response.raise_for_status()
                return f"{user} {token} {task} {response.headers['etag']}\n"

        lines = await asyncio.gather(*(etag_of(*row) for row in rows))
        etag_rows.write_text("".join(lines))
        # The ETags answer 304 (a sample), and a stale one answers 200.
        for line in lines[:20]:
            user, token, _, tag = line.split()
            response = await client.get(f"/api/{user}/tasks", headers={"Authorization": f"Bearer {token}", "If-None-Match": tag})
            if response.status_code != 304 or response.content:
                raise SystemExit(f"v3: If-None-Match {tag} answered {response.status_code}, not an empty 304")
        user, token, _, tag = lines[0].split()
        stale = re.sub(r'W/"(\d+)-', lambda m: f'W/"{int(m[1]) + 1000}-', tag)
        if (await client.get(f"/api/{user}/tasks", headers={"Authorization": f"Bearer {token}", "If-None-Match": stale})).status_code != 200:
            raise SystemExit("v3: a stale ETag did not answer 200")
    rows_file = out / "rows.txt"
    say(f"not-modified: {args.rounds} alternating rounds of {args.round_seconds} s, list 200 and list 304, {args.connections} connections, on A")
    await wrk(out, "nm-warmup-200", port, "list", rows_file, 2, args.connections)
    await wrk(out, "nm-warmup-304", port, "list-not-modified", etag_rows, 2, args.connections)
    rounds = []
    for number in range(1, args.rounds + 1):
        order = [("200", "list", rows_file), ("304", "list-not-modified", etag_rows)]
        if number % 2 == 0:
            order.reverse()  # neither side always goes first
        results = {}
        for side, route, file in order:
            results[side] = await wrk(out, f"nm-{side}-{number}", port, route, file, args.round_seconds, args.connections, pid)
        rounds.append(results)
    errors = sum(r[side]["error_count"] for r in rounds for side in r)

    def median_round(side):
        ordered = sorted(rounds, key=lambda r: r[side]["rps"])
        return ordered[len(ordered) // 2][side]

    ratios = [r["304"]["rps"] / r["200"]["rps"] for r in rounds]
    p99_ratios = [r["304"]["p99_ms"] / r["200"]["p99_ms"] for r in rounds]
    pick = lambda r: {k: r[k] for k in ("rps", "p50_ms", "p99_ms", "bytes_per_response", "error_count", "requests", "cpu_us_per_request")}  # noqa: E731
    return {
        "200": pick(median_round("200")),
        "304": pick(median_round("304")),
        "rounds": [{side: pick(r[side]) for side in r} for r in rounds],
        "throughput_ratio_by_round": [round(x, 2) for x in ratios],
        "throughput_ratio_median": round(statistics.median(ratios), 2),
        "p99_ratio_by_round": [round(x, 2) for x in p99_ratios],
        "errors": errors,
    }


def make_streams(args, ports: dict, rows: list[tuple], collector: Collector) -> list[Stream]:
    """STREAMS_PER_USER streams of each of the first STREAM_USERS users, alternately on A and B."""
    streams = []
    for user, token, _task in rows[: args.stream_users]:
        for k in range(args.streams_per_user):
            process = "A" if k % 2 == 0 else "B"
            streams.append(Stream(len(streams), process, ports[process], user, token, collector))
    return streams


async def open_streams(streams: list[Stream], tasks: list[asyncio.Task]) -> float:
    """Open these streams, at most 25 handshakes at once, each until its `ready` (60 s at most)."""
    started = time.monotonic()
    semaphore = asyncio.Semaphore(25)

    async def open_one(stream):
        async with semaphore:
            tasks.append(asyncio.create_task(stream.run()))
            async with asyncio.timeout(60):
                await stream.ready.wait()

    await asyncio.gather(*(open_one(s) for s in streams))
    return time.monotonic() - started


async def events_phase(args, ports: dict, rows: list[tuple], streams: list[Stream], collector: Collector) -> dict:
    """WRITES renames, one after another, alternating A and B; the change event on each stream of the user."""
    by_user = {}
    for stream in streams:
        by_user.setdefault(stream.user, []).append(stream)
    users = rows[: args.stream_users]
    writes = []  # (number, user, process, sent, answered)
    clients = {name: httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=30) for name, port in ports.items()}
    say(f"events: {args.writes} PATCHes, one at a time {args.write_gap * 1000:.0f} ms apart, alternating A and B, to {len(users)} users' tasks")
    bad = []
    try:
        deadline = time.monotonic() + args.writes * (args.write_gap + 1) + 30
        for number in range(args.writes):
            if time.monotonic() > deadline:
                break
            user, token, task = users[number % len(users)]
            process = "A" if number % 2 == 0 else "B"
            sent = time.monotonic()
            response = await clients[process].patch(
                f"/api/{user}/tasks/{task}", json={"title": f"v3 probe {number}"}, headers={"Authorization": f"Bearer {token}"}
            )
            answered = time.monotonic()
            if response.status_code != 200:
                bad.append(response.status_code)
            writes.append((number, user, process, sent, answered))
            await asyncio.sleep(args.write_gap)
        await asyncio.sleep(2)  # the last events' way
    finally:
        for client in clients.values():
            await client.aclose()
    same, other, same_req, other_req = [], [], [], []
    missing = duplicated = 0
    for number, user, process, sent, answered in writes:
        for stream in by_user[user]:
            arrivals = collector.changes.get((number, stream.index), [])
            if not arrivals:
                missing += 1
                continue
            duplicated += len(arrivals) - 1
            (same if stream.process == process else other).append(arrivals[0] - answered)
            (same_req if stream.process == process else other_req).append(arrivals[0] - sent)
    return {
        "writes": len(writes),
        "write_status_not_200": bad,
        "expected_events": len(writes) * args.streams_per_user,
        "missing_events": missing,
        "duplicated_events": duplicated,
        "from_response_same_process": summary_ms(same),
        "from_response_other_process": summary_ms(other),
        "from_request_same_process": summary_ms(same_req),
        "from_request_other_process": summary_ms(other_req),
        "write_latency": summary_ms([answered - sent for _, _, _, sent, answered in writes]),
    }


async def reminders_phase(args, out: Path, database_url: str, ports: dict, pids: dict, streams: list[Stream], collector: Collector) -> dict:
    """REMINDERS reminders at one instant (or spread evenly over REMINDER_SPREAD seconds), across
    both processes; the list probed idle and meanwhile."""
    rows_file = out / "rows.txt"
    say(f"reminders: list {args.probe_seconds} s idle on A ({args.probe_connections} connections)")
    idle = await wrk(out, "list-idle", ports["A"], "list", rows_file, args.probe_seconds, args.probe_connections)
    connection = await asyncpg.connect(database_url)
    try:
        users = await connection.fetchval("SELECT count(*) FROM users WHERE email LIKE 'bench-user-%'")
        per_user = -(-args.reminders // users)
        seeded_at = time.time()
        fire_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=args.lead)
        last_at = fire_at + timedelta(seconds=args.reminder_spread)
        at_text = fire_at.isoformat(timespec="microseconds").replace("+00:00", "Z")
        # Through SQL, as the API's insert_task would store it (reminders as the API writes
        # them): the triggers plan each reminder's row and record the change.
        await connection.execute(
            """
            INSERT INTO tasks (user_id, title, priority, tags, reminders, time_zone)
            SELECT id, 'v3 reminder ' || n, 1, '[]', jsonb_build_array(jsonb_build_object('at', to_char(
                   ($1::text::timestamptz + ((u.r - 1) * $2 + n - 1) * $4::float8 / $3 * interval '1 second') AT TIME ZONE 'UTC',
                   'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))), 'UTC'
            FROM (SELECT id, row_number() OVER (ORDER BY id) AS r FROM users WHERE email LIKE 'bench-user-%') AS u
            CROSS JOIN generate_series(1, $2::int) AS n
            WHERE (u.r - 1) * $2 + n <= $3
            """,
            at_text, per_user, args.reminders, float(args.reminder_spread),
        )
        planned = await connection.fetchval(
            "SELECT count(*) FROM reminders WHERE fire_at BETWEEN $1 AND $2 AND fired_at IS NULL", fire_at, last_at)
        planned_at = {task: at.timestamp() for task, at in await connection.fetch(
            "SELECT task_id, fire_at FROM reminders WHERE fire_at BETWEEN $1 AND $2", fire_at, last_at)}
        seed_seconds = time.time() - seeded_at
        say(f"reminders: {planned} planned for {at_text} (seeded through SQL in {seed_seconds:.1f} s); "
            f"the list probe starts 2 s before it")
        stream_users = {s.user for s in streams}
        task_users = dict(await connection.fetch(
            "SELECT id, user_id FROM tasks WHERE title LIKE 'v3 reminder %'"))
        expected_events = sum(1 for task, user in task_users.items() if user in stream_users) * args.streams_per_user
        await asyncio.sleep(max(0.0, fire_at.timestamp() - 2 - time.time()))
        ticks = {name: cpu_ticks(pid) for name, pid in pids.items()}
        probe = asyncio.create_task(wrk(out, "list-during-reminders", ports["A"], "list", rows_file,
                                        args.probe_seconds + args.reminder_spread, args.probe_connections))
        # Until every reminder has fired and every event arrived, or at most 60 s past the last time.
        fired = 0
        while time.time() < last_at.timestamp() + 60:
            await asyncio.sleep(0.5)
            fired = await connection.fetchval(
                "SELECT count(*) FROM reminders WHERE fire_at BETWEEN $1 AND $2 AND fired_at IS NOT NULL", fire_at, last_at)
            if fired >= planned and sum(len(v) for v in collector.reminders.values()) >= expected_events:
                break
        all_fired_after = time.time() - last_at.timestamp()
        # B's CPU from 2 s before the reminders' time until the last was delivered: the firing
        # and the events alone (A's includes the list probe's requests).
        cpu_seconds = {name: round((cpu_ticks(pid) - ticks[name]) / os.sysconf("SC_CLK_TCK"), 2) for name, pid in pids.items()}
        during = await probe
        await asyncio.sleep(1)
        say(f"reminders: list {args.probe_seconds} s idle on A again, after them")
        after = await wrk(out, "list-after-reminders", ports["A"], "list", rows_file, args.probe_seconds, args.probe_connections)
        lateness = [row[0] for row in await connection.fetch(
            "SELECT extract(epoch FROM fired_at - fire_at)::float8 FROM reminders WHERE fire_at BETWEEN $1 AND $2 AND fired_at IS NOT NULL",
            fire_at, last_at)]
        unfired = await connection.fetchval(
            "SELECT count(*) FROM reminders WHERE fire_at BETWEEN $1 AND $2 AND fired_at IS NULL", fire_at, last_at)
    finally:
        await connection.close()
    arrivals = [times[0] - planned_at[task] for (_, task), times in collector.reminders.items() if task in planned_at]
    duplicated = sum(len(times) - 1 for times in collector.reminders.values())
    return {
        "reminders": args.reminders,
        "planned": planned,
        "fired": len(lateness),
        "unfired": unfired,
        "seeded_through": "SQL into tasks (the triggers planned the reminder rows)",
        "seed_seconds": round(seed_seconds, 2),
        "fire_at": at_text,
        "spread_seconds": args.reminder_spread,
        "all_fired_and_delivered_within_s": round(all_fired_after, 2),
        "service_cpu_seconds_while_firing": cpu_seconds,
        "lateness_fired_at": summary_ms(lateness),
        "events_expected": expected_events,
        "events_received": len(collector.reminders),
        "events_duplicated": duplicated,
        "event_arrival_after_fire_at": summary_ms(arrivals),
        "list_idle": {k: idle[k] for k in ("rps", "p50_ms", "p99_ms", "error_count")},
        "list_during": {k: during[k] for k in ("rps", "p50_ms", "p99_ms", "error_count")},
        "list_after": {k: after[k] for k in ("rps", "p50_ms", "p99_ms", "error_count")},
        "list_p99_during_vs_idle": round(during["p99_ms"] / idle["p99_ms"], 2),
        "list_p99_during_vs_after": round(during["p99_ms"] / after["p99_ms"], 2),
    }


STARTED = time.monotonic()


def say(text: str) -> None:
    print(f"== [v3 {time.monotonic() - STARTED:4.0f} s] {text}", flush=True)


def print_table(result: dict) -> None:
    nm, ev, mem, rem = result["not_modified"], result["events"], result["memory"], result["reminders"]

    def verdict(ok):
        return "meets" if ok else "MISSES"

    print()
    print(f"Version 3 (bench/v3.py), {result['meta']['date']}; load average before {result['meta']['load_before']}, "
          f"after {result['meta']['load_after']} (a shared machine: noisy; the ratios, side by side, less so)")
    for side in ("200", "304"):
        r = nm[side]
        print(f"  list {side}: {r['rps']:.0f} req/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, {r['bytes_per_response']} B/resp, "
              f"service CPU {r['cpu_us_per_request']} µs/req (median round of {len(nm['rounds'])}; by round "
              f"{[x[side]['rps'] for x in nm['rounds']]} req/s)")
    print(f"  304/200 throughput by round {nm['throughput_ratio_by_round']}, median {nm['throughput_ratio_median']}x "
          f"(goal >= 2x: {verdict(nm['throughput_ratio_median'] >= 2)}); p99 ratio by round {nm['p99_ratio_by_round']}")
    print(f"  streams: {result['streams']['open']} open ({result['streams']['per_process']}) in {result['streams']['open_seconds']} s; "
          f"refused {result['streams']['refused']}, broken {result['streams']['broken']}")
    for key, label in [("from_response_same_process", "write response -> event, same process"),
                       ("from_response_other_process", "write response -> event, other process"),
                       ("from_request_same_process", "write request -> event, same process"),
                       ("from_request_other_process", "write request -> event, other process"),
                       ("write_latency", "the write itself (request -> response)")]:
        s = ev[key]
        print(f"  {label:<42} n={s['count']:<5} p50 {s['p50_ms']} ms  p99 {s['p99_ms']} ms  max {s['max_ms']} ms  min {s['min_ms']} ms")
    worst = max(ev["from_response_same_process"]["p99_ms"] or 1e9, ev["from_response_other_process"]["p99_ms"] or 1e9)
    print(f"  events: {ev['writes']} writes, {ev['expected_events']} expected, {ev['missing_events']} missing, "
          f"{ev['duplicated_events']} duplicated (goal p99 < 100 ms from the write's response: {verdict(worst < 100)}; "
          "negative: the event came before the response; from the request: an upper bound of commit-to-event)")
    for name in ("A", "B"):
        m = mem[name]
        print(f"  RSS {name}: {m['idle_kb'] / 1024:.1f} MB with no stream, {m['open_kb'] / 1024:.1f} MB with {m['streams']} open: "
              f"{m['kb_per_stream']:.1f} KB per stream (goal < 20 KB: {verdict(m['kb_per_stream'] < 20)}); the second "
              f"{m['streams'] - m['half_streams']} alone {m['kb_per_stream_second_half']:.1f} KB each; "
              f"after the writes {m['after_writes_kb'] / 1024:.1f} MB")
    late = rem["lateness_fired_at"]
    spread = f"spread over {rem['spread_seconds']} s" if rem["spread_seconds"] else "at one instant"
    print(f"  reminders: {rem['planned']} planned {spread}, {rem['fired']} fired, {rem['unfired']} not fired; lateness (fired_at - fire_at) "
          f"p50 {late['p50_ms']} ms, p99 {late['p99_ms']} ms, max {late['max_ms']} ms "
          f"(goal every one within 5 s: {verdict(rem['fired'] == rem['planned'] and (late['max_ms'] or 1e9) <= 5000)})")
    print(f"  all fired and delivered {rem['all_fired_and_delivered_within_s']} s after the last one's time (polled every 0.5 s); service CPU "
          f"from 2 s before until then: {rem['service_cpu_seconds_while_firing']} s (A's includes the list probe)")
    arr = rem["event_arrival_after_fire_at"]
    print(f"  reminder events: {rem['events_received']} of {rem['events_expected']} expected, {rem['events_duplicated']} duplicated; "
          f"arrival after the planned time p50 {arr['p50_ms']} ms, p99 {arr['p99_ms']} ms, max {arr['max_ms']} ms")
    print(f"  list on A: idle {rem['list_idle']['rps']:.0f} req/s p99 {rem['list_idle']['p99_ms']} ms; while they fire "
          f"{rem['list_during']['rps']:.0f} req/s p99 {rem['list_during']['p99_ms']} ms = {rem['list_p99_during_vs_idle']}x "
          f"(goal <= 2x: {verdict(rem['list_p99_during_vs_idle'] <= 2)}); idle after them {rem['list_after']['rps']:.0f} req/s "
          f"p99 {rem['list_after']['p99_ms']} ms ({rem['list_p99_during_vs_after']}x)")


async def main(args) -> int:
    if shutil.which("wrk") is None:
        raise SystemExit("v3: needs wrk (bash bench/run.sh installs Debian's package; or apt-get install wrk)")
    out = Path(args.out or tempfile.mkdtemp(prefix="todo-bench-v3."))
    out.mkdir(parents=True, exist_ok=True)
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    admin = await asyncpg.connect(f"postgresql://postgres@{HOST}:5432/postgres")
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {args.database}")
    finally:
        await admin.close()
    database_url = f"postgresql://postgres@{HOST}:5432/{args.database}"
    key = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8",
        "DATABASE_URL": database_url, "HOST": HOST, "LOG_LEVEL": "info",
        "JWT_PRIVATE_KEY": key, "JWT_ISSUER": "todo-backend", "JWT_AUDIENCE": "todo-backend",
    }
    ports = {"A": args.port, "B": args.port + 1}
    for port in ports.values():
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            raise SystemExit(f"v3: port {port} is taken; set --port or BENCH_V3_PORT")
    services = Services(args, out, env)
    streams, tasks = [], []
    try:
        say(f"services A and B on 127.0.0.1:{ports['A']} and :{ports['B']}, database {args.database}, output in {out}")
        services.start("A", ports["A"])
        await services.wait_ready("A", ports["A"])  # A migrates the database; then B starts on it
        services.start("B", ports["B"])
        await services.wait_ready("B", ports["B"])
        os.environ.update({k: env[k] for k in ("JWT_PRIVATE_KEY", "JWT_ISSUER", "JWT_AUDIENCE")})
        await seed.seed(database_url, str(out / "rows.txt"), str(out / "heavy-rows.txt"), args.users, args.tasks, 1)
        rows = [tuple(line.split()) for line in (out / "rows.txt").read_text().splitlines()]
        rows = [(int(user), token, int(task)) for user, token, task in rows]

        pids = {name: process.pid for name, process in services.processes.items()}
        result = {"not_modified": await not_modified_phase(args, out, ports["A"], pids["A"], rows)}
        await asyncio.sleep(2)
        idle_rss = {name: rss_kb(pid) for name, pid in pids.items()}

        collector = Collector()
        say(f"events: opening {args.stream_users} users x {args.streams_per_user} streams, half on A, half on B")
        # In two halves, so that the second half's RSS is what a stream adds once the first
        # streams have warmed whatever a first stream allocates once (statement caches, buffers).
        streams = make_streams(args, ports, rows, collector)
        first = streams[: len(streams) // args.streams_per_user // 2 * args.streams_per_user]  # the first half of the users
        open_seconds = await open_streams(first, tasks)
        await asyncio.sleep(3)
        half_rss = {name: rss_kb(pid) for name, pid in pids.items()}
        half_count = {name: sum(1 for s in first if s.process == name and s.status == 200) for name in ports}
        open_seconds += await open_streams(streams[len(first):], tasks)
        refused = [s.status for s in streams if s.status != 200]
        broken = [s.error for s in streams if s.error]
        per_process = {name: sum(1 for s in streams if s.process == name and s.status == 200 and not s.error) for name in ports}
        result["streams"] = {"open": sum(per_process.values()), "per_process": per_process, "open_seconds": round(open_seconds, 1),
                             "refused": refused, "broken": broken[:5]}
        await asyncio.sleep(3)
        open_rss = {name: rss_kb(pid) for name, pid in pids.items()}
        result["events"] = await events_phase(args, ports, rows, streams, collector)
        after_rss = {name: rss_kb(pid) for name, pid in pids.items()}
        result["memory"] = {
            name: {"idle_kb": idle_rss[name], "half_kb": half_rss[name], "half_streams": half_count[name], "open_kb": open_rss[name],
                   "after_writes_kb": after_rss[name], "streams": per_process[name],
                   "kb_per_stream": round((open_rss[name] - idle_rss[name]) / max(1, per_process[name]), 2),
                   "kb_per_stream_second_half": round((open_rss[name] - half_rss[name]) / max(1, per_process[name] - half_count[name]), 2)}
            for name in ports
        }
        result["reminders"] = await reminders_phase(args, out, database_url, ports, pids, streams, collector)
        result["streams"]["broken_at_end"] = [s.error for s in streams if s.error][:5]
        result["meta"] = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "load_before": load_before,
            "load_after": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
            "settings": {k: v for k, v in vars(args).items() if k not in ("python", "service_dir", "out")},
            "elapsed_s": round(time.monotonic() - STARTED),
        }
    finally:
        for stream in streams:
            stream.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        services.stop()
        if not args.keep_database:
            with contextlib.suppress(Exception):
                admin = await asyncpg.connect(f"postgresql://postgres@{HOST}:5432/postgres")
                await admin.execute(f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)")
                await admin.close()
    (out / "v3.json").write_text(json.dumps(result, indent=2))
    print_table(result)
    ev, rem, nm = result["events"], result["reminders"], result["not_modified"]
    failures = {
        "wrk errors": nm["errors"] + sum(rem[k]["error_count"] for k in ("list_idle", "list_during", "list_after")),
        "streams refused or broken": len(result["streams"]["refused"]) + len(result["streams"]["broken_at_end"]),
        "writes not 200": len(ev["write_status_not_200"]),
        "change events missing or twice": ev["missing_events"] + ev["duplicated_events"],
        "reminders not fired": rem["planned"] - rem["fired"] + (args.reminders - rem["planned"]),
        "reminder events missing or twice": rem["events_expected"] - rem["events_received"] + rem["events_duplicated"],
    }
    failures = {k: v for k, v in failures.items() if v}
    print(f"  results in {out}/v3.json")
    if failures:
        print(f"FAILED: {failures}")
        return 1
    print("  errors: none (every stream opened, every write 200, every event and reminder once)")
    return 0


def arguments():
    e = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=e("BENCH_V3_OUT"))
    parser.add_argument("--database", default=e("BENCH_V3_DATABASE", "todo_bench_v3"))
    parser.add_argument("--port", type=int, default=int(e("BENCH_V3_PORT", "18010")), help="A's; B takes the next")
    parser.add_argument("--python", default=e("BENCH_PYTHON") or sys.executable)
    parser.add_argument("--service-dir", default=e("BENCH_SERVICE_DIR") or str(BENCH.parent))
    parser.add_argument("--users", type=int, default=int(e("BENCH_USERS", "1000")))
    parser.add_argument("--tasks", type=int, default=int(e("BENCH_TASKS", "20")))
    parser.add_argument("--connections", type=int, default=int(e("BENCH_CONNECTIONS", "32")))
    parser.add_argument("--rounds", type=int, default=int(e("BENCH_V3_ROUNDS", "5")))
    parser.add_argument("--round-seconds", type=int, default=int(e("BENCH_V3_ROUND_SECONDS", "5")))
    parser.add_argument("--stream-users", type=int, default=int(e("BENCH_V3_STREAM_USERS", "100")))
    parser.add_argument("--streams-per-user", type=int, default=int(e("BENCH_V3_STREAMS_PER_USER", "10")))
    parser.add_argument("--writes", type=int, default=int(e("BENCH_V3_WRITES", "300")))
    parser.add_argument("--write-gap", type=float, default=float(e("BENCH_V3_WRITE_GAP", "0.02")), help="seconds between writes")
    parser.add_argument("--reminders", type=int, default=int(e("BENCH_V3_REMINDERS", "10000")))
    parser.add_argument("--reminder-spread", type=int, default=int(e("BENCH_V3_REMINDER_SPREAD", "0")),
                        help="seconds over which the reminders' times are spread evenly (0: all at one instant)")
    parser.add_argument("--lead", type=int, default=int(e("BENCH_V3_LEAD", "15")), help="seconds from seeding to the reminders' time")
    parser.add_argument("--probe-seconds", type=int, default=int(e("BENCH_V3_PROBE_SECONDS", "10")))
    parser.add_argument("--probe-connections", type=int, default=int(e("BENCH_V3_PROBE_CONNECTIONS", "16")))
    parser.add_argument("--keep-database", action="store_true", default=bool(e("BENCH_KEEP_DATABASE")))
    args = parser.parse_args()
    if args.stream_users > args.users or args.streams_per_user < 2:
        parser.error("--stream-users must be at most --users, and --streams-per-user at least 2 (one on each process)")
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(arguments())))
