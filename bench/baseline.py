"""What a bare Python service does for GET /api/{user_id}/tasks, in four modes, to measure the service against.

Each mode is a bare Starlette app with one route and nothing else (no middleware, no log
line, no cache unless the mode says so), answering the page the service answers by default
for a user of 20 tasks: the same columns, newest first (created_at DESC, id DESC), 20 tasks,
the number of the user's tasks in X-Total-Count, every field as the service writes it
(priority as its name, tags as an array, timestamps RFC 3339 in UTC with microseconds and Z).
The SQL is its own, written out here: it never imports the service or reads its sql/.

    BASELINE_MODE=bare           verify the token with PyJWT (Ed25519) on every request, run one
                                 asyncpg query, build the tasks and json.dumps them
    BASELINE_MODE=token-cached   the same, with a dict of verified tokens (until their exp)
    BASELINE_MODE=database-json  token-cached, and PostgreSQL writes the whole body
                                 (json_agg of json_build_object, as PostgREST does): the route
                                 passes the text through
    BASELINE_MODE=ceiling        a fixed body of 20 tasks: no token, no query, no database
                                 (the framework's ceiling)

Started with the service's uvicorn settings (todo_service.main()): h11 (the service's
protocol is h11's with a header deadline), the asyncio loop, no access log, proxy headers
from TRUSTED_PROXIES, limit_concurrency below the descriptor limit.

Environment: BASELINE_MODE (or the first argument), DATABASE_URL, HOST, PORT, LOG_LEVEL,
JWT_PRIVATE_KEY (PEM; its public half verifies), JWT_ISSUER and JWT_AUDIENCE (default
todo-backend), DATABASE_POOL_SIZE (10), TRUSTED_PROXIES.
"""

import json
import os
import resource
import sys
import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

MODES = ("bare", "token-cached", "database-json", "ceiling")
MODE = (sys.argv[1] if len(sys.argv) > 1 else os.environ.get("BASELINE_MODE", "bare")).strip()
if MODE not in MODES:
    raise SystemExit(f"bench/baseline.py: BASELINE_MODE must be one of {', '.join(MODES)}, not {MODE!r}")
ISSUER = os.environ.get("JWT_ISSUER", "todo-backend")
AUDIENCE = os.environ.get("JWT_AUDIENCE", "todo-backend")
POOL_SIZE = int(os.environ.get("DATABASE_POOL_SIZE", "10"))
TRUSTED_PROXIES = [item.strip() for item in os.environ.get("TRUSTED_PROXIES", "").split(",") if item.strip()]
PAGE_SIZE = 20
PRIORITIES = ("low", "medium", "high")  # stored as the rank: 0, 1, 2

# The page, as rows: the service's list columns (version too, which the body leaves out),
# and the count of the user's tasks once, as a subquery.
LIST_ROWS = f"""
SELECT id, user_id, title, description, completed, priority, due_at, tags, recurrence, time_zone, reminders,
       series_id, next_id, version, created_at, updated_at,
       (SELECT count(*) FROM tasks WHERE user_id = $1) AS total
FROM tasks
WHERE user_id = $1
ORDER BY created_at DESC, id DESC
LIMIT {PAGE_SIZE}
"""

# The page, as the body: PostgreSQL builds every task and the array, as PostgREST does.
RFC3339 = """'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'"""
LIST_BODY = f"""
SELECT coalesce(json_agg(json_build_object(
           'id', id, 'user_id', user_id, 'title', title, 'description', description, 'completed', completed,
           'priority', (ARRAY['low', 'medium', 'high'])[priority + 1],
           'due_at', to_char(due_at AT TIME ZONE 'UTC', {RFC3339}),
           'tags', tags,
           'recurrence', recurrence, 'time_zone', time_zone, 'reminders', reminders,
           'series_id', COALESCE(series_id, CASE WHEN recurrence IS NOT NULL THEN id END), 'next_id', next_id,
           'created_at', to_char(created_at AT TIME ZONE 'UTC', {RFC3339}),
           'updated_at', to_char(updated_at AT TIME ZONE 'UTC', {RFC3339})
       ) ORDER BY created_at DESC, id DESC), '[]')::text AS body,
       (SELECT count(*) FROM tasks WHERE user_id = $1) AS total
FROM (
    SELECT * FROM tasks WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT {PAGE_SIZE}
) AS page
"""

pool: asyncpg.Pool | None = None
PUBLIC_KEY = None
if MODE != "ceiling":
    PUBLIC_KEY = serialization.load_pem_private_key(os.environ["JWT_PRIVATE_KEY"].encode(), password=None).public_key()
verified_tokens: dict[str, tuple[int, float]] = {}  # token-cached, database-json: token -> (user id, exp)
VERIFIED_TOKENS_MAX = 10_000


def claims_of(token: str) -> dict | None:
    """The token's claims, checked with PyJWT and the Ed25519 public key; None for a bad token."""
    try:
        return jwt.decode(
            token, PUBLIC_KEY, algorithms=["EdDSA"], issuer=ISSUER, audience=AUDIENCE,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
    except jwt.InvalidTokenError:
        return None


def user_of(claims: dict | None) -> int | None:
    sub = claims and claims["sub"]
    return int(sub) if isinstance(sub, str) and sub.isdigit() else None


def verify(token: str) -> int | None:
    """The user id the token speaks for, its signature checked on every call."""
    return user_of(claims_of(token))


def verify_cached(token: str) -> int | None:
    """The same, remembered until the token's exp."""
    entry = verified_tokens.get(token)
    if entry is not None and time.time() < entry[1]:
        return entry[0]
    claims = claims_of(token)
    user_id = user_of(claims)
    if user_id is not None:
        if len(verified_tokens) >= VERIFIED_TOKENS_MAX:
            verified_tokens.pop(next(iter(verified_tokens)))  # the oldest entry
        verified_tokens[token] = (user_id, claims["exp"])
    return user_id


def caller(request: Request, check) -> int | Response:
    """The path's user id if the bearer token is theirs, else the 401 or 403 to answer."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    user_id = check(token) if scheme.lower() == "bearer" else None
    if user_id is None:
        return Response(status_code=401)
    if user_id != request.path_params["user_id"]:
        return Response(status_code=403)
    return user_id


def timestamp(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def task(row) -> dict:
    return {
        "id": row["id"],
        "user_id": row["user_id"],
        "title": row["title"],
        "description": row["description"],
        "completed": row["completed"],
        "priority": PRIORITIES[row["priority"]],
        "due_at": timestamp(row["due_at"]),
        "tags": json.loads(row["tags"]),
        "recurrence": None if row["recurrence"] is None else json.loads(row["recurrence"]),
        "time_zone": row["time_zone"],
        "reminders": json.loads(row["reminders"]),
        "series_id": row["series_id"] if row["series_id"] is not None or row["recurrence"] is None else row["id"],
        "next_id": row["next_id"],
        "created_at": timestamp(row["created_at"]),
        "updated_at": timestamp(row["updated_at"]),
    }


async def rows_as_json(request: Request, check) -> Response:
    user_id = caller(request, check)
    if isinstance(user_id, Response):
        return user_id
    async with pool.acquire() as connection:
        rows = await connection.fetch(LIST_ROWS, user_id)
    body = json.dumps([task(row) for row in rows], ensure_ascii=False, separators=(",", ":"))
    return Response(body, media_type="application/json", headers={"X-Total-Count": str(rows[0]["total"] if rows else 0)})


async def list_bare(request: Request) -> Response:
    return await rows_as_json(request, verify)


async def list_token_cached(request: Request) -> Response:
    return await rows_as_json(request, verify_cached)


async def list_database_json(request: Request) -> Response:
    user_id = caller(request, verify_cached)
    if isinstance(user_id, Response):
        return user_id
    async with pool.acquire() as connection:
        row = await connection.fetchrow(LIST_BODY, user_id)
    return Response(row["body"], media_type="application/json", headers={"X-Total-Count": str(row["total"])})


def fixed_page() -> bytes:
    """20 tasks shaped and sized as a seeded user's page (bench/seed.py)."""
    start = datetime(2026, 11, 1, tzinfo=UTC)
    tasks = []
    for n in range(20, 0, -1):
        created = timestamp(start + timedelta(minutes=n))
        tasks.append({
            "id": 400_000 + n, "user_id": 20_000, "title": f"Seeded task {n}", "description": f"Task {n} of user 20000",
            "completed": n % 4 == 0, "priority": PRIORITIES[n % 3],
            "due_at": None if n % 5 == 0 else timestamp(datetime(2026, 12, 1, tzinfo=UTC) + timedelta(hours=7 * n)),
            "tags": [["work"], ["home", "shopping"], ["urgent", "work"], []][n % 4],
            "recurrence": None, "time_zone": "UTC", "reminders": [], "series_id": None, "next_id": None,
            "created_at": created, "updated_at": created,
        })
    return json.dumps(tasks, separators=(",", ":")).encode()


FIXED_PAGE = fixed_page()


async def list_ceiling(request: Request) -> Response:
    return Response(FIXED_PAGE, media_type="application/json", headers={"X-Total-Count": "20"})


@asynccontextmanager
async def lifespan(app):
    global pool
    if MODE == "ceiling":
        yield
        return

    # asyncpg's default codecs: timestamptz as aware datetimes, jsonb (tags) as its text.
    # Idle connections close after a few seconds, so that the four baselines of a run do not
    # hold 40 connections of a shared server between their rounds (each round warms up first).
    pool = await asyncpg.create_pool(
        os.environ["DATABASE_URL"], min_size=1, max_size=POOL_SIZE, max_inactive_connection_lifetime=5
    )
    try:
        yield
    finally:
        await pool.close()


HANDLERS = {"bare": list_bare, "token-cached": list_token_cached, "database-json": list_database_json, "ceiling": list_ceiling}
app = Starlette(routes=[Route("/api/{user_id:int}/tasks", HANDLERS[MODE], methods=["GET"])], lifespan=lifespan)

if __name__ == "__main__":
    # The service's settings in todo_service.main().
    uvicorn.run(
        app,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8001")),
        log_level=os.environ.get("LOG_LEVEL", "warning"),
        access_log=False,
        http="h11",
        proxy_headers=bool(TRUSTED_PROXIES),
        forwarded_allow_ips=TRUSTED_PROXIES or None,
        timeout_graceful_shutdown=20,
        limit_concurrency=max(1, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 128),
    )
