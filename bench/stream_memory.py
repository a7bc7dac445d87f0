"""Memory per open event stream, counted object by object: the service's Python objects that each
open stream keeps alive, by where they were allocated (tracemalloc).

    uv run --locked python bench/stream_memory.py [--streams 500] [--database-url URL] [--service-dir DIR]

RSS, as bench/v3.py reads it, moves with what the allocator had free before the streams opened
(a process that served a load first grows less; streams opened after others closed grow it
hardly at all); tracemalloc counts the objects themselves. The service runs in this process
(uvicorn, the service's own protocol class and app, on a scratch SQLite file unless
--database-url names a PostgreSQL database to use and leave), with one user signed up; a child
process opens the streams on raw sockets, 127.0.0.1 only, and holds them. The streams are
opened and closed once first, so that what any first stream builds once (a pool connection,
caches) is not counted; then the heap is snapshotted with none open and with all open, and the
difference is divided by their number (the child's Popen object, a few hundred bytes, with it).
"""

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORT = 18790
HOLDER = """
import socket, sys, time
port, user, token, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
held = []
for _ in range(count):
    held.append(socket.create_connection(("127.0.0.1", port)))
    held[-1].sendall(f"GET /api/{user}/events HTTP/1.1\\r\\nHost: bench\\r\\nAuthorization: Bearer {token}\\r\\n\\r\\n".encode())
for stream in held:
    seen = b""
    while b"event: ready" not in seen:
        received = stream.recv(4096)
        if not received:
            sys.exit(f"a stream was refused or closed: {seen[:200]!r}")
        seen += received
print("open", flush=True)
sys.stdin.read()
"""


async def measure(count: int) -> None:
    import httpx
    import uvicorn

    import todo_service

    config = uvicorn.Config(todo_service.app, host="127.0.0.1", port=PORT, http=todo_service.ReadDeadlines, log_config=None,
                            limit_concurrency=todo_service.MAX_CONNECTIONS + 1)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    account = {"email": f"memory-{os.getpid()}@example.com", "password": "a long password"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}") as client:
        user = (await client.post("/api/auth/signup", json=account)).json()["id"]
        token = (await client.post("/api/auth/login", json=account)).json()["access_token"]

    async def open_streams():
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(PORT), str(user), token, str(count)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert (await asyncio.to_thread(holder.stdout.readline)).strip() == "open", "the streams did not all open"
        await asyncio.sleep(1)
        return holder

    async def close_streams(holder):
        holder.kill()
        holder.wait()
        while todo_service.open_streams:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # and their rows gone, which count against the limit per user

    await close_streams(await open_streams())
    tracemalloc.start(1)
    gc.collect()
    before = tracemalloc.take_snapshot()
    holder = await open_streams()
    gc.collect()
    after = tracemalloc.take_snapshot()
    await close_streams(holder)
    tracemalloc.stop()
    server.should_exit = True
    await serving

    by_file = after.compare_to(before, "filename")
    total = sum(stat.size_diff for stat in by_file)
    print(f"{count} streams open: {total / count / 1024:.1f} KB of Python objects per stream (tracemalloc), by where they were made:")
    for stat in by_file[:12]:
        name = stat.traceback[0].filename
        print(f"  {stat.size_diff / count:7.0f} B  {name.split('site-packages/')[-1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--database-url", help="a PostgreSQL database to use (default: a scratch SQLite file)")
    parser.add_argument("--service-dir", default=str(ROOT), help="another version's todo_service.py and sql/, to compare")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        os.environ.update({
            "DATABASE_URL": args.database_url or f"sqlite:///{scratch}/memory.db",
            "EVENTS_MAX_STREAMS": str(3 * args.streams), "EVENTS_MAX_STREAMS_PER_USER": str(3 * args.streams),
            "MAX_CONNECTIONS": str(3 * args.streams), "LOG_LEVEL": "warning",
        })
        sys.path.insert(0, args.service_dir)
        asyncio.run(measure(args.streams))


if __name__ == "__main__":
    main()
