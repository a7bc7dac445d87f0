"""todo-backend: accounts and per-user tasks for a Next.js + Better Auth frontend.

Read top to bottom, in the order a request meets it: settings, database and SQL,
security (passwords and their queue, tokens, JWKS, linked accounts, the authentication
middleware, tickets and /mcp's guard, rate limits), body schemas, errors, the steps handlers
share, handlers, then the three capabilities of version 3, each a section of its own on the
same steps and SQL: changes and live events (the feed, cursors, event streams, LISTEN/NOTIFY),
recurrence and reminders (the next occurrence, reminders fired once, their webhook), and
assistants (the MCP server and its tools); then the request log and read deadlines, the
OpenAPI document, routes, and the app. Task bodies are written by the database itself
(sql/<database>/json.sql), and so is every change (the triggers of sql/schema/).
`uv run todo_service.py` serves it; every setting comes from the environment (or `.env`).
"""

import asyncio
import base64
import calendar
import contextlib
import contextvars
import functools
import gc
import hashlib
import heapq
import hmac
import ipaddress
import itertools
import json
import logging
import math
import os
import re
import resource
import secrets
import signal
import sqlite3
import sys
import time
from collections import deque
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Literal, NamedTuple, TypedDict
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, available_timezones

import asyncpg
import bcrypt
import databases
import h11
import httpx
import jwt
import standardwebhooks
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from dateutil.rrule import rrulestr
from dotenv import load_dotenv
from jwt.algorithms import OKPAlgorithm
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, TextContent
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from uvicorn.protocols.http.h11_impl import H11Protocol

# ---------------------------------------------------------------------------------------
# Settings: read once, each default in one place (README and .env.example mirror them).
# ---------------------------------------------------------------------------------------

load_dotenv(".env")  # the directory it is started from; the real environment wins


def invalid_setting(name: str, why: str):
    raise SystemExit(f"todo-backend: invalid configuration: {name} {why}")


def setting(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, "").strip() or default


def int_setting(name: str, default: int, low: int, high: int) -> int:
    raw = setting(name, str(default))
    if not re.fullmatch(r"[0-9]{1,9}", raw) or not low <= int(raw) <= high:
        invalid_setting(name, f"must be a whole number from {low} to {high}, not {raw!r}")
    return int(raw)


def list_setting(name: str, default: str) -> list[str]:
    return [item.strip() for item in setting(name, default).split(",") if item.strip()]


def rate_setting(name: str, default: str) -> tuple[int, int]:
    """A limit written `10/minute`: (requests, seconds)."""
    raw = setting(name, default)
    match = re.fullmatch(r"([0-9]{1,9})/(second|minute|hour)", raw)
    if not match or int(match[1]) == 0:
        invalid_setting(name, f"must look like 10/minute (per second, minute or hour), not {raw!r}")
    return int(match[1]), {"second": 1, "minute": 60, "hour": 3600}[match[2]]


def url_setting(name: str, default: str | None = None) -> str | None:
    """An http(s) URL; plain http only to this machine, so keys never travel in clear text."""
    raw = setting(name, default)
    if raw is not None:
        url = urlsplit(raw)
        loopback = url.hostname in ("localhost", "127.0.0.1", "::1")
        if not url.hostname or not (url.scheme == "https" or (url.scheme == "http" and loopback)):
            invalid_setting(name, "must be an https:// URL (http:// only for localhost)")
    return raw


HOST = setting("HOST", "127.0.0.1")
PORT = int_setting("PORT", 8000, 1, 65535)
LOG_LEVEL = setting("LOG_LEVEL", "info").lower()
DATABASE_URL = setting("DATABASE_URL", "sqlite:///./todo.db")
DATABASE_POOL_SIZE = int_setting("DATABASE_POOL_SIZE", 10, 1, 1000)
# 0 turns asyncpg's prepared-statement cache off, as PgBouncer in transaction mode needs
# (Neon's "-pooler" endpoints).
DATABASE_STATEMENT_CACHE_SIZE = int_setting("DATABASE_STATEMENT_CACHE_SIZE", 100, 0, 10_000)
JWKS_URL = url_setting("JWKS_URL")
JWT_ISSUER = setting("JWT_ISSUER", None if JWKS_URL else "todo-backend")
JWT_AUDIENCE = setting("JWT_AUDIENCE", None if JWKS_URL else "todo-backend")
JWT_ALGORITHMS = list_setting("JWT_ALGORITHMS", "EdDSA")
JWT_PRIVATE_KEY = setting("JWT_PRIVATE_KEY")
ACCESS_TOKEN_TTL = int_setting("ACCESS_TOKEN_TTL", 900, 60, 86_400)
CORS_ORIGINS = list_setting("CORS_ORIGINS", "http://localhost:3000")
TRUSTED_PROXIES = list_setting("TRUSTED_PROXIES", "")
JWKS_REFRESH_SECONDS = int_setting("JWKS_REFRESH_SECONDS", 600, 1, 86_400)
BCRYPT_QUEUE_SECONDS = int_setting("BCRYPT_QUEUE_SECONDS", 2, 0, 60)
HEADER_TIMEOUT_SECONDS = int_setting("HEADER_TIMEOUT_SECONDS", 10, 1, 3600)
BODY_TIMEOUT_SECONDS = int_setting("BODY_TIMEOUT_SECONDS", 30, 1, 3600)
# Below the descriptor limit, so that past the cap a new connection is answered (or takes an
# idle one's place), never left waiting for a descriptor: some stay for the database pool, the
# log and the JWKS fetch. A burst of more than that, accepted in one turn of the loop before
# the cap sees it, can still use them up: asyncio then pauses accepting for a second, by which
# time the cap has made room. (A listen backlog small enough to prevent it drops connects, a
# 1 s retry each, whenever a burst outruns one turn of the loop, far below the cap too.)
MAX_CONNECTIONS = int_setting("MAX_CONNECTIONS", max(1, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 128), 1, 1_000_000)
# Version 3: the change feed, live events, reminders and their webhook.
DATABASE_LISTEN_URL = setting("DATABASE_LISTEN_URL", DATABASE_URL)
CHANGES_RETENTION_DAYS = int_setting("CHANGES_RETENTION_DAYS", 30, 1, 3650)
EVENTS_HEARTBEAT_SECONDS = int_setting("EVENTS_HEARTBEAT_SECONDS", 15, 1, 3600)
EVENTS_MAX_STREAMS = int_setting("EVENTS_MAX_STREAMS", 1000, 1, 1_000_000)
EVENTS_MAX_STREAMS_PER_USER = int_setting("EVENTS_MAX_STREAMS_PER_USER", 10, 1, 10_000)
REMINDER_LATE_SECONDS = int_setting("REMINDER_LATE_SECONDS", 3600, 0, 30 * 86_400)
REMINDER_WEBHOOK_URL = url_setting("REMINDER_WEBHOOK_URL")
REMINDER_WEBHOOK_SECRET = setting("REMINDER_WEBHOOK_SECRET")
REMINDER_WEBHOOK_RETRY_SECONDS = int_setting("REMINDER_WEBHOOK_RETRY_SECONDS", 86_400, 0, 30 * 86_400)
# The MCP endpoint's public URL (RFC 8707 resource indicator): the `aud` its tokens carry, and
# the origin its metadata URL is built on. Behind a proxy, the URL clients use.
MCP_RESOURCE = setting("MCP_RESOURCE", f"http://{f'[{HOST}]' if ':' in HOST else HOST}:{PORT}/mcp")
# Where an MCP client gets its tokens (RFC 9728 `authorization_servers`): Better Auth, when it
# signs them; without JWKS_URL the service itself, whose login takes a `resource`.
MCP_AUTHORIZATION_SERVER = setting("MCP_AUTHORIZATION_SERVER", JWT_ISSUER if JWKS_URL else None)
RATE_LIMITS = {
    "signup": rate_setting("RATE_LIMIT_SIGNUP", "10/minute"),
    "login": rate_setting("RATE_LIMIT_LOGIN", "30/minute"),
    "login_email": rate_setting("RATE_LIMIT_LOGIN_EMAIL", "10/minute"),
}

# Asymmetric algorithms only: `none` and the HMAC family would let anyone holding the
# public key, or nobody at all, mint tokens.
SIGNATURE_ALGORITHMS = {"EdDSA", "ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}

if LOG_LEVEL not in ("debug", "info", "warning", "error"):
    invalid_setting("LOG_LEVEL", f"must be debug, info, warning or error, not {LOG_LEVEL!r}")
if JWKS_URL and not (JWT_ISSUER and JWT_AUDIENCE):
    invalid_setting("JWT_ISSUER", "and JWT_AUDIENCE are required when JWKS_URL is set")
if not JWT_ALGORITHMS or not set(JWT_ALGORITHMS) <= SIGNATURE_ALGORITHMS:
    invalid_setting("JWT_ALGORITHMS", f"may name only {', '.join(sorted(SIGNATURE_ALGORITHMS))}")
if "EdDSA" not in JWT_ALGORITHMS:
    invalid_setting("JWT_ALGORITHMS", "must include EdDSA: the service signs its own login tokens with it")
if REMINDER_WEBHOOK_URL and not re.fullmatch(r"whsec_[A-Za-z0-9+/]{16,}={0,2}", REMINDER_WEBHOOK_SECRET or ""):
    invalid_setting("REMINDER_WEBHOOK_SECRET", "must be a Standard Webhooks secret, whsec_ and base64, when REMINDER_WEBHOOK_URL is set")
for origin in CORS_ORIGINS:
    if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
        invalid_setting("CORS_ORIGINS", f"holds {origin!r}, which is not an origin like https://app.example.com")

mcp_url = urlsplit(MCP_RESOURCE)
if mcp_url.scheme not in ("http", "https") or not mcp_url.hostname or mcp_url.query or mcp_url.fragment or "#" in MCP_RESOURCE:
    invalid_setting("MCP_RESOURCE", f"must be an absolute http(s) URL without query or fragment, not {MCP_RESOURCE!r}")
if MCP_RESOURCE == JWT_AUDIENCE:
    invalid_setting("MCP_RESOURCE", "must differ from JWT_AUDIENCE, or API tokens would pass at /mcp and MCP tokens on the API")
MCP_ORIGIN = f"{mcp_url.scheme}://{mcp_url.netloc}"
MCP_AUTHORIZATION_SERVER = MCP_AUTHORIZATION_SERVER or MCP_ORIGIN
if urlsplit(MCP_AUTHORIZATION_SERVER).scheme not in ("http", "https") or not urlsplit(MCP_AUTHORIZATION_SERVER).hostname:
    invalid_setting("MCP_AUTHORIZATION_SERVER", f"must be the issuer URL of an OAuth authorization server, not {MCP_AUTHORIZATION_SERVER!r}")
# RFC 9728 section 3.1: the well-known segment goes between the host and the resource's path.
MCP_RESOURCE_METADATA = f"{MCP_ORIGIN}/.well-known/oauth-protected-resource{mcp_url.path.rstrip('/')}"

MAX_ID = 2**63 - 1  # ids are 64-bit signed integers in both databases
MAX_BODY_BYTES = 1024 * 1024
MAX_TOKEN_CHARS = 8192
CLOCK_LEEWAY_SECONDS = 30
JWKS_REFETCH_SECONDS = 30
BCRYPT_ROUNDS = 12
MAX_PASSWORD_BYTES = 72  # bcrypt reads no further, and bcrypt 5 raises past it
SHUTDOWN_GRACE_SECONDS = 20

log = logging.getLogger("todo_service")


@functools.lru_cache(maxsize=1)
def utc_second(second: int) -> str:
    """A second as RFC 3339 in UTC, without its fraction: made once for all the lines in it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def log_time(created: float) -> str:
    """RFC 3339 in UTC, to the millisecond."""
    second, millisecond = divmod(int(created * 1000), 1000)
    return f"{utc_second(second)}.{millisecond:03d}Z"


def json_line(created: float, level: str, message: str, fields: dict) -> str:
    """One JSON object a line, so a log pipeline needs no parser of its own."""
    return json.dumps({"time": log_time(created), "level": level, "message": message, **fields}, default=str)


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = dict(getattr(record, "fields", {}))
        if record.exc_info:
            # The exception's name, never its text or traceback: a driver's message may quote
            # the query's arguments.
            fields["error"] = record.exc_info[0].__name__
        return json_line(record.created, record.levelname.lower(), record.getMessage(), fields)


def summarise_bursts():
    """A log filter: the same record (logger, message, level) at most once a second; the next
    one that passes says how many it stands for. Out of descriptors, asyncio reports every
    failed accept, thousands a second."""
    seen: dict[tuple, list] = {}  # record's key -> [when it may pass again, records held back]

    def keep(record: logging.LogRecord) -> bool:
        key, now = (record.name, record.msg, record.levelno), time.monotonic()
        passes_at, held_back = seen.get(key, (0.0, 0))
        if now < passes_at:
            seen[key] = [passes_at, held_back + 1]
            return False
        if len(seen) > 1000:
            seen.clear()
        seen[key] = [now + 1.0, 0]
        if held_back:
            record.fields = {**getattr(record, "fields", {}), "repeated": held_back}
        return True

    return keep


def exit_message_only(record: logging.LogRecord) -> bool:
    """A log filter: Starlette hands uvicorn the traceback of a start-up that failed, and
    uvicorn logs it. A SystemExit is a start-up the service stopped on purpose, with one line
    for the operator (the database cannot be reached): that line is kept, not the traceback."""
    message = record.getMessage()
    if message.startswith("Traceback") and "\nSystemExit: " in message:
        record.msg, record.args = message.rpartition("\nSystemExit: ")[2].strip(), ()
    return True


# Every line the process writes is JSON: uvicorn's own (main() keeps uvicorn from configuring
# logging), asyncpg's pool, which reports each failed reconnect during an outage, and
# asyncio's, which reports failed accepts, and the MCP SDK's. Only the request log may repeat itself.
for logger in (log, *map(logging.getLogger, ("uvicorn", "asyncpg", "asyncio", "mcp"))):
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(JsonLines())
        if logger is not log:
            handler.addFilter(summarise_bursts())
        if logger.name == "uvicorn":
            handler.addFilter(exit_message_only)
        logger.addHandler(handler)
        logger.setLevel(LOG_LEVEL.upper())
        logger.propagate = False

# ---------------------------------------------------------------------------------------
# Database and SQL: named queries from sql/*.sql, loaded once.
# ---------------------------------------------------------------------------------------

SQL_DIR = Path(__file__).parent / "sql"


# What a lost, refused or restarting database raises: the request is answered 503, and the
# pool reconnects by itself on a later one. asyncpg's InternalClientError is what a pooled
# connection raises when the server has closed it a moment ago and asyncpg has read the
# server's goodbye but not yet the closed socket: it refuses to start the query at all.
DATABASE_UNAVAILABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,
    sqlite3.OperationalError,
)


async def keep_session(connection: asyncpg.Connection) -> None:
    """The pool's reset of a connection coming back: nothing to do.

    asyncpg has already rolled back any open transaction when it calls this. Its default
    reset would go on to clear session state the service never sets (SET, LISTEN, advisory
    locks): a round trip on every release, and one that, when the server had just gone,
    raised into a request whose query had succeeded (a committed write answered 500).
    """


# timestamptz as it travels in binary, whatever the session's TimeZone or DateStyle (which
# a pooler may not pass on): microseconds since 2000-01-01 UTC.
POSTGRES_EPOCH = datetime(2000, 1, 1)
MICROSECOND = timedelta(microseconds=1)


def timestamp_to_postgres(text: str) -> tuple[int]:
    return ((datetime.fromisoformat(text).astimezone(UTC).replace(tzinfo=None) - POSTGRES_EPOCH) // MICROSECOND,)


def timestamp_from_postgres(value: tuple[int]) -> str:
    return (POSTGRES_EPOCH + value[0] * MICROSECOND).isoformat(timespec="microseconds") + "Z"


async def timestamps_as_text(connection: asyncpg.Connection) -> None:
    # Timestamps are RFC 3339 text in UTC from end to end, as SQLite keeps them: formatting
    # asyncpg's aware datetimes cost a list request more than all the rest of its Python.
    await connection.set_type_codec(
        "timestamptz", schema="pg_catalog", encoder=timestamp_to_postgres, decoder=timestamp_from_postgres, format="tuple"
    )


def connect_options(url: str) -> tuple[str, dict]:
    """The URL `databases` understands, and the pool options the URL's query asked for.

    `databases` ignores libpq's `sslmode`, so a Neon URL would silently run in plain text;
    it is handed to asyncpg as `ssl` instead.
    """
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        # SQLite lets one writer in at a time: under a burst, a writer waits its turn this
        # many seconds (the default is 5) before the request gives up with a 503.
        return url, {"timeout": 30}
    if parts.scheme not in ("postgresql", "postgres"):
        invalid_setting("DATABASE_URL", "must start with postgresql:// or sqlite:///")
    options = {
        "min_size": 1,
        "max_size": DATABASE_POOL_SIZE,
        "statement_cache_size": DATABASE_STATEMENT_CACHE_SIZE,
        "timeout": 5,  # seconds to connect, so an outage answers 503 quickly instead of hanging
        "command_timeout": 30,
        "reset": keep_session,
        "init": timestamps_as_text,
    }
    for key, value in parse_qsl(parts.query):
        if key == "sslmode" and value in ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"):
            options["ssl"] = value
        elif key == "channel_binding":
            log.warning("DATABASE_URL asks for channel_binding, which asyncpg cannot do; TLS still follows sslmode")
        else:
            invalid_setting("DATABASE_URL", f"has the option {key}={value!r}, which this service does not understand")
    return urlunsplit(("postgresql", parts.netloc, parts.path, "", "")), options


database_url, database_options = connect_options(DATABASE_URL)
database = databases.Database(database_url, **database_options)
IS_POSTGRES = database_url.startswith("postgresql")


class Query(NamedTuple):
    mode: str  # one: a row or None; many: a list of rows; exec: nothing
    text: str  # as the driver takes it: $1, $2 for asyncpg, :name for sqlite3
    params: tuple[str, ...]  # the names, in the order asyncpg numbers them


# Sort orders of the task list, by the `sort` values a client may send: each a fixed SQL
# fragment, ties broken by id in the same direction, tasks without a due date last both ways.
# Titles sort by their lower-case bytes in both databases.
TITLE = 'lower(title) COLLATE "C"' if IS_POSTGRES else "lower(title)"
SORT_ORDERS = {
    "created_at": "created_at, id",
    "-created_at": "created_at DESC, id DESC",
    "updated_at": "updated_at, id",
    "-updated_at": "updated_at DESC, id DESC",
    "due_at": "due_at NULLS LAST, id",
    "-due_at": "due_at DESC NULLS LAST, id DESC",
    "priority": "priority, id",
    "-priority": "priority DESC, id DESC",
    "title": f"{TITLE}, id",
    "-title": f"{TITLE} DESC, id DESC",
}


def sql_blocks(paths: list[Path]) -> dict[tuple[str, str], str]:
    """Every `-- name: NAME :MODE` and `-- fragment: NAME` block of these files, by (kind,
    header), its comment lines dropped (so that a `:word` in a comment is never a parameter)."""
    blocks = {}
    for path in paths:
        parts = re.split(r"^-- (name|fragment): ", path.read_text(), flags=re.MULTILINE)
        for kind, block in zip(parts[1::2], parts[2::2], strict=True):
            header, _, body = block.partition("\n")
            lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
            blocks[kind, header.strip()] = "\n".join(lines).strip()
    return blocks


def prepared(mode: str, text: str) -> Query:
    params = tuple(dict.fromkeys(re.findall(r"(?<![:\w]):(\w+)", text)))
    if IS_POSTGRES:
        text = re.sub(r"(?<![:\w]):(\w+)", lambda match: f"${params.index(match[1]) + 1}", text)
    return Query(mode, text, params)


def load_queries(directory: Path) -> dict[str, Query]:
    """Every `-- name: NAME :MODE` block of sql/*.sql and of the database's own sql/<database>/*.sql.

    The database's own files also hold `-- fragment: NAME` blocks, which stand in for
    `{NAME}` in the shared queries. A query with `{order}` is prepared once per entry of
    SORT_ORDERS, as `NAME:SORT`.
    """
    paths = sorted(directory.glob("*.sql")) + sorted((directory / ("postgresql" if IS_POSTGRES else "sqlite")).glob("*.sql"))
    blocks = sql_blocks(paths)
    fragments = {name: text for (kind, name), text in blocks.items() if kind == "fragment"}
    queries = {}
    for (kind, header), text in blocks.items():
        if kind != "name":
            continue
        name, mode = header.split()
        while any(f"{{{fragment}}}" in text for fragment in fragments):  # fragments may hold fragments
            for fragment, fragment_text in fragments.items():
                text = text.replace(f"{{{fragment}}}", fragment_text)
        if "{order}" not in text:
            queries[name] = prepared(mode.lstrip(":"), text)
            continue
        for sort, order in SORT_ORDERS.items():
            queries[f"{name}:{sort}"] = prepared(mode.lstrip(":"), text.replace("{order}", order))
    return queries


QUERIES = load_queries(SQL_DIR)

# asyncpg's pool gives a returned connection to whichever request asks next, not to the one
# that has waited longest (its queue lets a newcomer barge in), so under load a few requests
# waited hundreds of milliseconds. These slots, one per pooled connection, are first come,
# first served. A slot is held for one query: no request opens a transaction, which would
# hold its connection between queries without a slot.
database_slots = asyncio.Semaphore(DATABASE_POOL_SIZE)
# The few writes that take more than one statement (a completion that makes the next
# occurrence) hold one slot for their whole transaction instead.
in_transaction = contextvars.ContextVar("in_transaction", default=False)


@asynccontextmanager
async def transaction():
    """One slot and one connection for the statements inside, committed together or not at all."""
    async with database_slots, database.transaction():
        token = in_transaction.set(True)
        try:
            yield
        finally:
            in_transaction.reset(token)


def lower_text(value):
    """lower() one character at a time, as PostgreSQL does: str.lower() alone makes a word's
    last capital sigma a final ς, so ΟΔΟΣ would no longer be found in ΟΔΟΣΗΜΑΝΣΗ."""
    return "".join(map(str.lower, value)) if isinstance(value, str) else value


def search_fold(text: str) -> str:
    """q as the list's search compares it, folded as both databases fold titles and descriptions
    (sql/<database>/search.sql): lower_text(), then every sigma σ and İ's i-and-dot a plain i."""
    return lower_text(text).replace("ς", "σ").replace("i\u0307", "i")


async def run(name: str, **params):
    """Run a named query on this task's connection (inside its transaction, if one is open).

    Queries go to the driver itself, bypassing SQLAlchemy: asyncpg prepares each statement
    once per connection instead of having it compiled again on every call, and a missing
    parameter is a KeyError here instead of a silent NULL.
    """
    query = QUERIES[name]
    async with contextlib.nullcontext() if in_transaction.get() else database_slots, database.connection() as connection:
        driver = connection.raw_connection
        if IS_POSTGRES:
            args = [params[param] for param in query.params]
            if query.mode == "one":
                return await driver.fetchrow(query.text, *args)
            if query.mode == "many":
                return await driver.fetch(query.text, *args)
            return await driver.execute(query.text, *args)
        args = {param: params[param] for param in query.params}
        # SQLite's own lower() folds A to Z only; PostgreSQL's folds every letter, and so
        # must this one, for searches and title order to agree (`databases` opens a
        # connection per query, so it is set on each).
        await driver.create_function("lower", 1, lower_text, deterministic=True)
        cursor = await driver.execute(query.text, args)
        columns = [column[0] for column in cursor.description or ()]
        rows = [dict(zip(columns, row, strict=True)) for row in await cursor.fetchall()]
        if query.mode == "one":
            return rows[0] if rows else None
        return rows if query.mode == "many" else None


def utc_text(moment: datetime) -> str:
    """A moment as RFC 3339 text in UTC, to the microsecond: what both databases store, and what the API shows."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def utc_now(seconds_ago: float = 0) -> str:
    """Now (or so many seconds ago), as utc_text."""
    return utc_text(datetime.now(UTC) - timedelta(seconds=seconds_ago))


def user_json(row) -> dict:
    return {"id": row["id"], "email": row["email"], "created_at": row["created_at"]}


PRIORITIES = ("low", "medium", "high")  # stored as the rank: 0, 1, 2 (json.sql names them)


def etag(row) -> str:
    """The task's strong ETag: its id and its version, which every write of it, and only a write, bumps."""
    return f'"{row["id"]}-{row["version"]}"'


async def apply_migrations() -> None:
    """Run each file of sql/schema/<database>/ that has not run yet, each in one transaction."""
    schema_dir = SQL_DIR / "schema" / ("postgresql" if IS_POSTGRES else "sqlite")
    async with database.transaction():
        # Under the lock too: two replicas creating the table at once, one of them fails.
        if IS_POSTGRES:
            await run("lock_schema_migrations")
        await run("create_schema_migrations")
    for path in sorted(schema_dir.glob("*.sql")):
        async with database.transaction():
            if IS_POSTGRES:
                await run("lock_schema_migrations")
            if path.name in {row["version"] for row in await run("applied_migrations")}:
                continue
            async with database.connection() as connection:
                for statement in schema_statements(path.read_text()):
                    await connection.raw_connection.execute(statement)
            await run("record_migration", version=path.name, applied_at=utc_now())
            log.info("applied schema %s", path.name)


def schema_statements(script: str) -> list[str]:
    """A schema file as the driver runs it: whole on PostgreSQL, which takes a script in one
    call (a function's body holds semicolons); on SQLite a statement at a time, each ending
    where sqlite3 says one is complete (a trigger's BEGIN ... END holds semicolons too)."""
    if IS_POSTGRES:
        return [script]
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending)
            pending = ""
    return statements


# ---------------------------------------------------------------------------------------
# Security: passwords, the service's own tokens, Better Auth's JWKS, the account a token
# speaks for, the authentication middleware, rate limits.
# ---------------------------------------------------------------------------------------


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_ROUNDS)).decode()


def password_matches(password: str, password_hash: str) -> bool:
    """bcrypt's check. A password bcrypt cannot take never matches, but costs the same time."""
    candidate = password.encode()
    if len(candidate) > MAX_PASSWORD_BYTES or b"\x00" in candidate:
        bcrypt.checkpw(b"", password_hash.encode())
        return False
    return bcrypt.checkpw(candidate, password_hash.encode())


# Checked when an email is unknown, so that login takes as long as for a known one.
DUMMY_PASSWORD_HASH = hash_password(secrets.token_urlsafe(32))

# bcrypt holds a core for a quarter of a second. Hashes take turns on all cores but one, so
# that a burst of signups queues here instead of taking the CPU the event loop serves with.
# The queue holds only what the slots work off in BCRYPT_QUEUE_SECONDS, at the speed hashes
# have lately run: past that a signup or login is told at once to come back (503), instead
# of waiting behind a flood. Logins go first, and a login that finds the queue full takes
# the place of the signup queued last: a user who has an account is not kept waiting by
# accounts being made.
# The cores this process may use, where the system says (Linux); macOS has no affinity call.
usable_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
BCRYPT_SLOTS = max(1, usable_cores - 1)
LOGIN_FIRST, SIGNUP_NEXT = 0, 1
bcrypt_free_slots = BCRYPT_SLOTS
bcrypt_waiters: list[tuple[int, int, asyncio.Future]] = []  # a heap: (priority, arrival, turn)
bcrypt_arrivals = itertools.count()
bcrypt_seconds = 0.25  # a moving average of how long a hash takes here, from every hash run
QUEUE_FULL = "Too many sign-ups and logins at once; try again shortly."


def bcrypt_queue_full() -> bool:
    """As many wait as the slots work off in BCRYPT_QUEUE_SECONDS, at the recent hash speed."""
    return len(bcrypt_waiters) >= BCRYPT_QUEUE_SECONDS * BCRYPT_SLOTS / bcrypt_seconds


def bcrypt_queue_room(priority: int) -> bool:
    """Whether a hash of this priority may wait its turn now (always, when a slot is free)."""
    if bcrypt_free_slots > 0 or not bcrypt_queue_full():
        return True
    return priority == LOGIN_FIRST and any(waiting == SIGNUP_NEXT for waiting, _, _ in bcrypt_waiters)


def queue_full() -> "ProblemError":
    return ProblemError(503, QUEUE_FULL, {"Retry-After": str(max(1, BCRYPT_QUEUE_SECONDS))})


def release_bcrypt_slot() -> None:
    """Hand the slot to the first waiter, or free it."""
    global bcrypt_free_slots
    if bcrypt_waiters:
        heapq.heappop(bcrypt_waiters)[2].set_result(None)
    else:
        bcrypt_free_slots += 1


def leave_bcrypt_queue(waiter: tuple) -> None:
    bcrypt_waiters.remove(waiter)
    heapq.heapify(bcrypt_waiters)


async def in_bcrypt_slot(request: Request, priority: int, function, *args):
    """Run a bcrypt function in a worker thread once a slot is free, for a client still there."""
    global bcrypt_free_slots, bcrypt_seconds
    if bcrypt_free_slots > 0:
        bcrypt_free_slots -= 1
    else:
        if not bcrypt_queue_room(priority):
            raise queue_full()
        if bcrypt_queue_full():  # room was made for a login: the last queued signup goes
            last_signup = max(waiter for waiter in bcrypt_waiters if waiter[0] == SIGNUP_NEXT)
            leave_bcrypt_queue(last_signup)
            last_signup[2].set_exception(queue_full())
        waiter = (priority, next(bcrypt_arrivals), asyncio.get_running_loop().create_future())
        heapq.heappush(bcrypt_waiters, waiter)
        try:
            await waiter[2]
        except asyncio.CancelledError:
            if waiter[2].cancelled():  # the client went while waiting: its place goes too
                leave_bcrypt_queue(waiter)
            elif waiter[2].exception() is None:  # handed the slot just as it was cancelled
                release_bcrypt_slot()
            raise
    try:
        if await request.is_disconnected():  # a hash nobody will read is a quarter second lost
            raise ClientDisconnect()
        started = time.perf_counter()
        result = await run_in_threadpool(function, *args)
        bcrypt_seconds = 0.8 * bcrypt_seconds + 0.2 * (time.perf_counter() - started)
        return result
    finally:
        release_bcrypt_slot()


def load_signing_key() -> Ed25519PrivateKey:
    if not JWT_PRIVATE_KEY:
        return Ed25519PrivateKey.generate()
    try:
        key = serialization.load_pem_private_key(JWT_PRIVATE_KEY.replace("\\n", "\n").encode(), password=None)
    except ValueError:
        invalid_setting("JWT_PRIVATE_KEY", "is not a PEM private key without a passphrase")
    if not isinstance(key, Ed25519PrivateKey):
        invalid_setting("JWT_PRIVATE_KEY", "must be an Ed25519 key (openssl genpkey -algorithm ed25519)")
    return key


def base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(key: Ed25519PrivateKey) -> dict:
    """The public half as a JWK, its kid the RFC 7638 thumbprint."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    members = {"crv": "Ed25519", "kty": "OKP", "x": base64url(raw)}
    thumbprint = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest()
    return {**members, "kid": base64url(thumbprint), "alg": "EdDSA", "use": "sig"}


SIGNING_KEY = load_signing_key()
SIGNING_JWK = public_jwk(SIGNING_KEY)
OWN_KEYS = {SIGNING_JWK["kid"]: jwt.PyJWK(SIGNING_JWK)}


def issue_token(user_id: int, audience: str = JWT_AUDIENCE) -> str:
    """A login token for the API (JWT_AUDIENCE) or, asked for with `resource`, for /mcp (MCP_RESOURCE)."""
    now = int(time.time())
    claims = {"sub": str(user_id), "iss": JWT_ISSUER, "aud": audience, "iat": now, "exp": now + ACCESS_TOKEN_TTL}
    return jwt.encode(claims, SIGNING_KEY, algorithm="EdDSA", headers={"kid": SIGNING_JWK["kid"]})


# Better Auth's public keys by kid. Refetched only for an unknown kid, at most once per
# JWKS_REFETCH_SECONDS; a failed fetch keeps the keys already known.
jwks_cache = {"keys": {}, "fetched_at": -math.inf}
jwks_lock = asyncio.Lock()
jwks_client = httpx.AsyncClient(timeout=5.0, follow_redirects=False)


def parse_jwks(document) -> dict[str, jwt.PyJWK]:
    """The usable signing keys of a JWKS document; anything else in it is skipped."""
    keys = {}
    entries = document.get("keys") if isinstance(document, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str) or entry.get("use", "sig") != "sig":
            continue
        if "d" in entry:  # a private key published by mistake is not one to trust
            continue
        if entry.get("alg") == "Ed25519":  # RFC 9864's name for what PyJWT calls EdDSA
            entry = {**entry, "alg": "EdDSA"}
        try:
            key = jwt.PyJWK(entry)
        except (jwt.PyJWTError, TypeError, ValueError):  # PyJWT raises TypeError for an alg that is a list
            continue
        if key.algorithm_name in JWT_ALGORITHMS:
            keys[entry["kid"]] = key
    return keys


async def fetch_jwks() -> None:
    jwks_cache["fetched_at"] = time.monotonic()
    try:
        response = await jwks_client.get(JWKS_URL)
        response.raise_for_status()
        keys = parse_jwks(response.json())
    except (httpx.HTTPError, ValueError, RecursionError) as exc:
        log.warning("JWKS fetch failed (%s); keeping the %d keys known", type(exc).__name__, len(jwks_cache["keys"]))
        return
    jwks_cache["keys"] = keys
    log.info("JWKS fetched: %d keys", len(keys))


async def refresh_jwks_forever() -> None:
    """Refetch the JWKS every JWKS_REFRESH_SECONDS, so that a key removed from Better Auth
    stops being trusted; a task of its own, so no request ever waits on Better Auth for a
    key it knows."""
    while True:
        await asyncio.sleep(JWKS_REFRESH_SECONDS)
        async with jwks_lock:
            await fetch_jwks()


async def verification_key(kid) -> jwt.PyJWK | None:
    """The key for a token's kid: the service's own, or Better Auth's from JWKS_URL only.

    A token's own `jku`, `x5u` or `jwk` header is never followed: the issuer is configured,
    not claimed. An unknown kid refetches the JWKS at once (a key Better Auth has just
    rotated in), at most once per JWKS_REFETCH_SECONDS.
    """
    if kid in OWN_KEYS or not JWKS_URL:
        return OWN_KEYS.get(kid)
    if kid in jwks_cache["keys"]:
        return jwks_cache["keys"][kid]
    async with jwks_lock:
        if kid not in jwks_cache["keys"] and time.monotonic() - jwks_cache["fetched_at"] >= JWKS_REFETCH_SECONDS:
            await fetch_jwks()
    return jwks_cache["keys"].get(kid)


# RFC 9864 names EdDSA over Ed25519 `Ed25519`; PyJWT knows the old name only.
jwt.register_algorithm("Ed25519", OKPAlgorithm())


def signature_check(key: jwt.PyJWK, header_alg) -> tuple[object, list[str]]:
    """The key and algorithms to check a signature with: the key's own algorithm, or for an
    Ed25519 key allowed as EdDSA, also its RFC 9864 name."""
    if header_alg == "Ed25519" and key.algorithm_name == "EdDSA" and isinstance(key.key, Ed25519PublicKey):
        return key.key, ["Ed25519"]
    return key, JWT_ALGORITHMS


MAX_SUBJECT_CHARS = 255


def clean_text(value, max_chars: int) -> bool:
    """A claim the database can store as it is: a string of UTF-8 text without NUL."""
    if not isinstance(value, str) or not 1 <= len(value) <= max_chars or "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate, which JSON can spell and UTF-8 cannot
        return False
    return True


async def linked_user_id(issuer: str, subject: str, email) -> int:
    """The backend account of Better Auth's user (issuer, subject), made on its first token.

    The token's email is kept for display only, lower-cased, and followed when it changes;
    it never finds, links or logs in an account.
    """
    email = email.lower() if clean_text(email, 254) else None
    user = await run("get_linked_user", issuer=issuer, subject=subject)
    if user is None or (email is not None and email != user["email"]):
        user = await run("link_user", issuer=issuer, subject=subject, email=email, now=utc_now())
    return user["id"]


# Tokens verified already, by their exact text and the audience they were checked for (a
# token good for the API is not thereby good at /mcp), with the account they speak for: a frontend
# sends one token with every request of its lifetime, and checking its signature (and
# finding its account) again costs more than the request's query. An entry holds only while
# the token has not expired and its kid still names the very key that verified it, so a key
# Better Auth drops or replaces ends its tokens here as it would uncached.
verified_tokens: dict[tuple[str, str], tuple[str | None, jwt.PyJWK, int, float]] = {}
VERIFIED_TOKENS_MAX = 10_000


async def token_user_id(token: str, audience: str) -> int:
    """The backend user id a bearer token speaks for at this audience (JWT_AUDIENCE for the API,
    MCP_RESOURCE for /mcp: `aud` must be it or hold it); jwt.InvalidTokenError for anything wrong.

    The one check of a token, for every route that takes one.

    The key that verified the token decides whose name `sub` is. The service's own key signs
    its login tokens, whose `sub` is a backend user id. A key from JWKS_URL is Better Auth's,
    whose `sub` is Better Auth's own user id, whatever its form: it names the account linked
    to (issuer, sub), never the backend user that happens to have that number.
    """
    if len(token) > MAX_TOKEN_CHARS:
        raise jwt.InvalidTokenError("token too long")
    if (token, audience) in verified_tokens:
        kid, key, user_id, expires_at = verified_tokens[token, audience]
        if time.time() < expires_at and await verification_key(kid) is key:
            return user_id
        verified_tokens.pop((token, audience), None)
    header = jwt.get_unverified_header(token)
    kid = header.get("kid")
    key = await verification_key(kid)
    if key is None:
        raise jwt.InvalidTokenError("unknown kid")
    checked_key, algorithms = signature_check(key, header.get("alg"))
    claims = jwt.decode(
        token,
        checked_key,
        algorithms=algorithms,
        issuer=JWT_ISSUER,
        audience=audience,
        leeway=CLOCK_LEEWAY_SECONDS,
        options={"require": ["exp", "iss", "aud", "sub"]},
    )
    # PyJWT accepts "exp": "99999999999" and an empty sub; neither is a token we issue or Better Auth does.
    for claim in ("exp", "nbf", "iat"):
        if claim in claims and type(claims[claim]) not in (int, float):
            raise jwt.InvalidTokenError(f"{claim} is not a number")
    subject = claims["sub"]
    if not clean_text(subject, MAX_SUBJECT_CHARS):
        raise jwt.InvalidTokenError("sub is not a subject")
    if key is OWN_KEYS.get(kid):
        if not re.fullmatch(r"[1-9][0-9]{0,18}", subject) or int(subject) > MAX_ID:
            raise jwt.InvalidTokenError("sub is not a user id")
        user_id = int(subject)
    else:
        user_id = await linked_user_id(claims["iss"], subject, claims.get("email"))
    if len(verified_tokens) >= VERIFIED_TOKENS_MAX:
        verified_tokens.pop(next(iter(verified_tokens)))  # the oldest entry
    verified_tokens[token, audience] = (kid, key, user_id, claims["exp"] + CLOCK_LEEWAY_SECONDS)
    return user_id


def bearer_challenge(*params: str) -> dict:
    """The WWW-Authenticate header of a 401 (RFC 6750), with these auth-params."""
    return {"WWW-Authenticate": " ".join(["Bearer", ", ".join(params)]).strip()}


# At /mcp, the 401 also says where the resource's metadata is (RFC 9728 section 5.1), so that
# an MCP client can find the authorization server to get a token from.
API_CHALLENGE: tuple[str, ...] = ()
MCP_CHALLENGE = (f'resource_metadata="{MCP_RESOURCE_METADATA}"',)


async def unauthenticated(scope, audience: str, challenge: tuple[str, ...]) -> Response | None:
    """401 unless the request carries a bearer token good for this audience (no token, or one
    that is there but not good here: `error="invalid_token"`). None when it does; the caller's
    id is then in scope["user_id"]."""
    authorization = Headers(scope=scope).get("authorization")
    if authorization is None:
        return problem(401, "Send an access token: Authorization: Bearer <token>.", bearer_challenge(*challenge))
    scheme, _, token = authorization.strip().partition(" ")
    try:
        if scheme.lower() != "bearer":
            raise jwt.InvalidTokenError("not a bearer token")
        scope["user_id"] = await token_user_id(token.strip(), audience)
    except jwt.InvalidTokenError:
        return problem(401, "The access token is invalid or has expired.", bearer_challenge(*challenge, 'error="invalid_token"'))
    scope["token_expires_at"] = verified_tokens[token.strip(), audience][3] - CLOCK_LEEWAY_SECONDS  # an event stream ends then
    return None


async def refusal(scope) -> Response | None:
    """Why a request may not reach its API route: no token (401), a bad one (401), or a path that
    names another user (403). None when it may; the caller's id is then in scope["user_id"]."""
    return await unauthenticated(scope, JWT_AUDIENCE, API_CHALLENGE) or path_refusal(scope)


def path_refusal(scope) -> Response | None:
    """A path that names another user than the caller: 403 (404 for an id no user can have)."""
    path_user_id = scope["path_params"].get("user_id")
    if path_user_id is not None and not 0 < path_user_id <= MAX_ID:
        return problem(404, "No such user.")
    if path_user_id is not None and path_user_id != scope["user_id"]:
        return problem(403, "The path names another user than the access token.")
    return None


def signed_in(app):
    """The authentication middleware, in front of every route that needs a caller (see routes).

    Routes without it never read the Authorization header: a frontend that sends its expired
    token with every request can still log in, and a health check never fetches a JWKS.
    """

    async def authenticate(scope, receive, send):
        response = await refusal(scope)
        await (response or app)(scope, receive, send)

    return authenticate


async def ticket_refusal(scope, ticket: str) -> Response | None:
    """A ticket from POST .../events/tickets instead of a token: one use, its user only, for as
    long as the token that asked for it lives."""
    row = await run("redeem_ticket", ticket_hash=hashlib.sha256(ticket.encode()).hexdigest(), now=utc_now())
    if row is None:
        return problem(401, "The ticket is invalid, used or expired; ask for a new one.", bearer_challenge('error="invalid_token"'))
    scope["user_id"], scope["token_expires_at"] = row["user_id"], row["token_expires_at"]
    return path_refusal(scope)


def signed_in_or_ticket(app):
    """The authentication middleware of the event stream: a bearer token as on every route, or,
    since a browser's EventSource cannot send one, `?ticket=` in its URL (and no header)."""

    async def authenticate(scope, receive, send):
        ticket = dict(parse_qsl(scope["query_string"].decode("latin-1"))).get("ticket")
        has_header = any(name == b"authorization" for name, _ in scope["headers"])
        response = await (refusal(scope) if ticket is None or has_header else ticket_refusal(scope, ticket))
        await (response or app)(scope, receive, send)

    return authenticate


def mcp_guard(app):
    """The authentication middleware of /mcp, as an OAuth resource server: a browser page from
    an origin outside CORS_ORIGINS is refused (403), then a token must be one for MCP_RESOURCE
    (401 naming the resource's metadata). The MCP server below it reads the caller from
    scope["user_id"], as the API's handlers do."""

    async def guard(scope, receive, send):
        origin = Headers(scope=scope).get("origin")
        if origin is not None and "*" not in CORS_ORIGINS and origin not in CORS_ORIGINS:
            response = problem(403, "This origin may not call /mcp: it is not one of CORS_ORIGINS.")
        else:
            response = await unauthenticated(scope, MCP_RESOURCE, MCP_CHALLENGE)
        await (response or app)(scope, receive, send)

    return guard


# Fixed windows per (limit, client or email), each opened by its first hit. On PostgreSQL
# the counts are rows of rate_limits, shared by every replica; a SQLite file belongs to one
# process, which counts here: per limit, (window end, hits) by client, and a queue of the
# windows in the order they opened (which is the order they close), so expiry costs O(1) a
# hit, and no limit ever holds more than RATE_ENTRIES_MAX clients (the oldest go first).
RATE_ENTRIES_MAX = 100_000
rate_counts: dict[str, dict[str, tuple[float, int]]] = {limit: {} for limit in RATE_LIMITS}
rate_windows: dict[str, deque[tuple[float, str]]] = {limit: deque() for limit in RATE_LIMITS}


async def hits_so_far(limit: str, client: str) -> tuple[int, int]:
    """Count one hit against a limit: (hits in the client's window so far, seconds until it ends)."""
    _, period = RATE_LIMITS[limit]
    if IS_POSTGRES:
        row = await run("count_hit", limit_name=limit, client=client, period=period)
        return row["hits"], math.ceil(row["seconds_left"])
    now = time.time()
    counts, windows = rate_counts[limit], rate_windows[limit]
    while windows and (windows[0][0] <= now or len(counts) >= RATE_ENTRIES_MAX):
        expires_at, expired = windows.popleft()
        if counts.get(expired, (None,))[0] == expires_at:  # not a window opened again since
            del counts[expired]
    expires_at, hits = counts.get(client, (now + period, 0))
    if hits == 0:
        windows.append((expires_at, client))
    counts[client] = (expires_at, hits + 1)
    return hits + 1, math.ceil(expires_at - now)


async def delete_expired_rate_limits_forever() -> None:
    """PostgreSQL: remove windows that have closed, a bounded batch at a time, off the request path."""
    while True:
        await asyncio.sleep(10)
        with contextlib.suppress(*DATABASE_UNAVAILABLE):
            while (await run("delete_expired_rate_limits"))["deleted"] == 1000:
                await asyncio.sleep(0.1)


def client_key(request: Request) -> str:
    """Who a rate limit counts: the client's address, an IPv6 client by its /64 (one
    subscriber's whole prefix). uvicorn has already put X-Forwarded-For in its place when
    the peer is a TRUSTED_PROXIES entry."""
    host = request.client.host if request.client else "unknown"
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(host)
        if address.version == 6 and address.ipv4_mapped:
            return str(address.ipv4_mapped)
        if address.version == 6:
            return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return host


async def enforce_rate_limit(limit: str, client: str) -> None:
    hits, seconds = await hits_so_far(limit, client)
    if hits > RATE_LIMITS[limit][0]:
        raise ProblemError(429, f"Too many attempts; try again in {seconds} s.", {"Retry-After": str(seconds)})


# ---------------------------------------------------------------------------------------
# Body schemas: strict (no coercion: "yes" is not a boolean) and closed (unknown fields are 400).
# ---------------------------------------------------------------------------------------

STRICT = ConfigDict(extra="forbid", strict=True)
EMAIL_PATTERN = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)


# The OpenAPI document states what these validators enforce, as JSON Schema patterns: no NUL,
# and a title of 1 to 255 characters once str.strip() has taken the blanks around it (spelled
# out, because \s means other characters in the ECMA regexes a frontend's validator runs).
BLANKS = "\\u0009-\\u000d\\u001c-\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
BLANK, NOT_BLANK, NOT_NUL = f"[{BLANKS}]", f"[^\\u0000{BLANKS}]", "[^\\u0000]"
NO_NUL_PATTERN = f"^{NOT_NUL}*$"
TITLE_PATTERN = f"^{BLANK}*{NOT_BLANK}({NOT_NUL}{{0,253}}{NOT_BLANK})?{BLANK}*$"


def no_nul(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL, and C bcrypt implementations stop reading at it.
    if value is not None and "\x00" in value:
        raise ValueError("must not contain the NUL character")
    return value


def valid_title(value: str) -> str:
    value = no_nul(value).strip()
    if not 1 <= len(value) <= 255:
        raise ValueError("must be 1 to 255 characters once the blanks around it are trimmed")
    return value


def valid_email(value: str) -> str:
    value = value.strip().lower()
    if len(value) > 254 or not EMAIL_PATTERN.fullmatch(value) or len(value.partition("@")[0]) > 64:
        raise ValueError("must be a valid email address of at most 254 characters")
    return value


def valid_password(value: str) -> str:
    if not 8 <= len(value.encode()) <= MAX_PASSWORD_BYTES:
        raise ValueError(f"must be 8 to {MAX_PASSWORD_BYTES} bytes long in UTF-8")
    return no_nul(value)


Email = Annotated[str, AfterValidator(valid_email), Field(max_length=254, json_schema_extra={"format": "email"})]
# JSON Schema counts characters, not bytes: 8 to 72 bytes of UTF-8 take 2 to 72 characters.
Password = Annotated[
    str, AfterValidator(valid_password), Field(min_length=2, max_length=MAX_PASSWORD_BYTES, json_schema_extra={"pattern": NO_NUL_PATTERN})
]
Title = Annotated[str, AfterValidator(valid_title), Field(json_schema_extra={"pattern": TITLE_PATTERN})]
Description = Annotated[str, Field(max_length=10_000, json_schema_extra={"pattern": NO_NUL_PATTERN}), AfterValidator(no_nul)] | None


class Signup(BaseModel):
    model_config = STRICT
    email: Email
    password: Password


class Login(BaseModel):
    # Any strings: a malformed email or password is a wrong credential (401), not a 400.
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=lambda schema: no_defaults(schema))
    email: Annotated[str, Field(max_length=320)]
    password: Annotated[str, Field(max_length=1024)]
    # RFC 8707's resource indicator: MCP_RESOURCE asks for a token for /mcp instead of the API.
    # The document says it in words, not as a const: it is a setting, and types generated from one
    # deployment's document must not bake its URL in.
    resource: Annotated[str, Field(
        max_length=2048,
        description="Omitted: a token for the API. MCP_RESOURCE, the `resource` of /.well-known/oauth-protected-resource/mcp: a token for /mcp. Anything else: 400.",
        json_schema_extra={"format": "uri"},
    )] = None


RFC_3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?([Zz]|[+-][0-9]{2}:[0-9]{2})")


def utc_timestamp(value: str) -> str:
    """An RFC 3339 date-time with its offset, as UTC text with microseconds (how timestamps
    are stored and answered). A date alone, no offset, +0100, or more than microseconds: no."""
    try:
        if not RFC_3339.fullmatch(value):
            raise ValueError
        return utc_text(datetime.fromisoformat(value.upper()))
    except (ValueError, OverflowError):
        raise ValueError("must be an RFC 3339 date-time with an offset, like 2026-12-24T18:00:00+01:00") from None


def valid_tag(value: str) -> str:
    value = no_nul(value).strip().lower()
    if not 1 <= len(value) <= 32 or "," in value:
        raise ValueError("must be 1 to 32 characters once trimmed, without commas")
    return value


def valid_tags(values: list[str]) -> list[str]:
    tags = sorted(set(values))
    if len(tags) > 20:
        raise ValueError("must hold at most 20 distinct tags")
    return tags


def no_defaults(schema: dict) -> None:
    """Say what an omitted field becomes in words, not as a JSON Schema `default`: generated
    clients (openapi-typescript) read a request default as "always present", and would make
    every caller send every field."""
    for field in schema["properties"].values():
        if "default" in field:
            default = field.pop("default")
            if default is not None:
                field["description"] = f"Omitted: {json.dumps(default)}."


def changes_schema(schema: dict) -> None:
    """Omitted means unchanged, not null; and one field at least."""
    no_defaults(schema)
    schema["minProperties"] = 1


Priority = Literal["low", "medium", "high"]
DueAt = Annotated[str, AfterValidator(utc_timestamp), Field(json_schema_extra={"format": "date-time"})] | None
# A tag as JSON Schema can say it: no comma or NUL, and 1 to 32 characters between the blanks.
TAG_PATTERN = f"^{BLANK}*[^,\\u0000{BLANKS}]([^,\\u0000]{{0,30}}[^,\\u0000{BLANKS}])?{BLANK}*$"
Tag = Annotated[str, AfterValidator(valid_tag), Field(json_schema_extra={"pattern": TAG_PATTERN})]
Tags = Annotated[list[Tag], AfterValidator(valid_tags), Field(json_schema_extra={"maxItems": 20})]


# Recurrence (v3): the RFC 5545 RRULE parts the contract allows, each value checked before
# dateutil reads the rule (its rrulestr accepts far more than this subset).
RULE_PARTS = {
    "FREQ": r"DAILY|WEEKLY|MONTHLY|YEARLY",
    "INTERVAL": r"[1-9][0-9]{0,3}",
    "COUNT": r"[1-9][0-9]{0,3}",
    "UNTIL": r"[0-9]{8}(T[0-9]{6}Z)?",
    "BYDAY": r"([+-]?[1-5]?(MO|TU|WE|TH|FR|SA|SU))(,[+-]?[1-5]?(MO|TU|WE|TH|FR|SA|SU))*",
    "BYMONTHDAY": r"-?([1-9]|[12][0-9]|3[01])(,-?([1-9]|[12][0-9]|3[01]))*",
    "BYMONTH": r"([1-9]|1[0-2])(,([1-9]|1[0-2]))*",
}
TIME_ZONES = available_timezones()
RULE_HORIZON = timedelta(days=3653)  # ten years: a rule with no date within them is refused
# What JSON Schema can say of a rule: its parts, each with a valid value. That FREQ is there,
# that no part repeats, and that COUNT and UNTIL are not both there, valid_rule checks.
RULE_PART = "|".join(f"{name}=({pattern})" for name, pattern in RULE_PARTS.items())
RULE_PATTERN = f"^({RULE_PART})(;({RULE_PART}))*$"


def valid_rule(value: str) -> str:
    parts = dict(part.partition("=")[::2] for part in value.split(";"))
    if len(parts) != value.count(";") + 1 or "FREQ" not in parts:
        raise ValueError("must be an RRULE with FREQ, each part once, like FREQ=WEEKLY;BYDAY=MO,TH")
    for name, part in parts.items():
        if name not in RULE_PARTS:
            raise ValueError(f"may hold only {', '.join(RULE_PARTS)}, not {name[:20]}")
        if not re.fullmatch(RULE_PARTS[name], part):
            raise ValueError(f"has an invalid {name}")
    if "COUNT" in parts and "UNTIL" in parts:
        raise ValueError("may have COUNT or UNTIL, not both")
    # A day no month of the rule has (February 30th) is a rule with no date, which dateutil
    # would look for until the year 9999: refused before it looks.
    months = [int(month) for month in parts["BYMONTH"].split(",")] if "BYMONTH" in parts else range(1, 13)
    days = [abs(int(day)) for day in parts.get("BYMONTHDAY", "1").split(",")]
    if all(day > calendar.monthrange(2024, month)[1] for month in months for day in days):  # 2024: a leap year
        raise ValueError("has no date: no month of it has that day")
    return value


def valid_time_zone(value: str) -> str:
    if value not in TIME_ZONES:
        raise ValueError("must be an IANA time zone name, like Europe/Berlin")
    return value


def occurrences(rule: str, start: datetime, time_zone: str, without_count: bool = False, horizon: timedelta | None = None):
    """The rule's dates from `start`, stepped in the task's zone (09:00 stays 09:00 across
    daylight saving), none later than `start + horizon` when that is given. An UNTIL date
    alone means the end of that day there."""
    zone = ZoneInfo(time_zone)
    parts = dict(part.partition("=")[::2] for part in rule.split(";"))
    if without_count or horizon is not None:
        parts.pop("COUNT", None)
    until = parts.get("UNTIL")
    if until is not None and "T" not in until:
        day_end = datetime.strptime(until, "%Y%m%d").replace(hour=23, minute=59, second=59, tzinfo=zone)
        parts["UNTIL"] = day_end.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    if horizon is not None:  # the same text form, so the earlier of the two is the smaller string
        parts["UNTIL"] = min(parts.get("UNTIL", "99991231T235959Z"), (start + horizon).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ"))
    return rrulestr("RRULE:" + ";".join(f"{name}={part}" for name, part in parts.items()), dtstart=start.astimezone(zone))


def unique_reminders(values: list) -> list:
    if len({json.dumps(value.model_dump(), sort_keys=True) for value in values}) != len(values):
        raise ValueError("must be distinct")
    return values


class Recurrence(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=no_defaults)
    rule: Annotated[str, Field(max_length=200, json_schema_extra={"pattern": RULE_PATTERN}), AfterValidator(valid_rule)]
    from_: Literal["due", "completion"] = Field("due", alias="from")


class MinutesBefore(BaseModel):
    model_config = STRICT
    minutes_before: Annotated[int, Field(ge=0, le=40_320)]


class RemindAt(BaseModel):
    model_config = STRICT
    at: Annotated[str, AfterValidator(utc_timestamp), Field(json_schema_extra={"format": "date-time"})]


TimeZone = Annotated[str, Field(json_schema_extra={"enum": sorted(TIME_ZONES)}), AfterValidator(valid_time_zone)]
Reminders = Annotated[list[MinutesBefore | RemindAt], Field(max_length=5, json_schema_extra={"uniqueItems": True}), AfterValidator(unique_reminders)]


def check_schedule(due_at: str | None, recurrence: dict | None, time_zone: str, reminders: list) -> None:
    """What a task's fields say together about its dates (400 otherwise): a rule and a
    reminder before the due date need a due date, and a rule must have a date."""
    errors = []
    if recurrence is not None and due_at is None:
        errors.append({"field": "due_at", "message": "is required for a recurring task"})
    elif recurrence is not None:
        # Looked for within a horizon: dateutil looks for a date that never comes (February
        # 30th) until the year 9999, most of a second of the event loop.
        start = datetime.fromisoformat(due_at)
        if occurrences(recurrence["rule"], start, time_zone, horizon=RULE_HORIZON).after(start, inc=True) is None:
            errors.append({"field": "recurrence.rule", "message": "has no date in the 10 years from due_at"})
    if due_at is None and any("minutes_before" in reminder for reminder in reminders):
        errors.append({"field": "reminders", "message": "minutes_before needs a due_at"})
    if errors:
        raise ProblemError(400, "The body is not valid.", errors=errors)


class TaskFields(BaseModel):
    """POST and PUT: PUT replaces the whole task, so omitted fields go back to these defaults."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=no_defaults)
    title: Title
    description: Description = None
    completed: bool = False
    priority: Priority = "medium"
    due_at: DueAt = None
    tags: Tags = []
    recurrence: Recurrence | None = None
    time_zone: TimeZone = "UTC"
    reminders: Reminders = []


class TaskChanges(BaseModel):
    # Omitted means unchanged; an explicit null title or completed is a 400, so their
    # types stay non-nullable and only the default is None.
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=changes_schema)
    title: Title = None
    description: Description = None
    completed: bool = None
    priority: Priority = None
    due_at: DueAt = None
    tags: Tags = None
    recurrence: Recurrence | None = None
    time_zone: TimeZone = None
    reminders: Reminders = None


class Completion(BaseModel):
    model_config = STRICT
    completed: bool


# ---------------------------------------------------------------------------------------
# Errors: every one is application/problem+json (RFC 9457) from problem().
# ---------------------------------------------------------------------------------------


def problem(status: int, detail: str, headers: dict | None = None, **extra) -> JSONResponse:
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status, headers=headers, media_type="application/problem+json")


class ProblemError(Exception):
    """Raised by the steps handlers share; the response is the problem it describes."""

    def __init__(self, status: int, detail: str, headers: dict | None = None, **extra):
        self.response = problem(status, detail, headers, **extra)
        self.detail, self.errors = detail, extra.get("errors", [])  # what an MCP tool error says


SERVER_FIELDS = {"id", "user_id", "created_at", "updated_at"}


def field_errors(exc: ValidationError) -> list[dict]:
    errors = []
    for error in exc.errors(include_input=False, include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "body"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "is set by the server" if field in SERVER_FIELDS else "is not a field of this body"
        errors.append({"field": field, "message": message})
    return errors


TASK_NOT_FOUND = "No such task for this user."

# ---------------------------------------------------------------------------------------
# Steps the handlers share, after signed_in's 401 and 403: 400, then 404, then 412.
# ---------------------------------------------------------------------------------------


def path_task_id(request: Request) -> int:
    task_id = request.path_params["task_id"]
    if not 0 < task_id <= MAX_ID:
        raise ProblemError(404, TASK_NOT_FOUND)
    return task_id


async def parse_body(request: Request, schema: type[BaseModel]):
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != "application/json":
        raise ProblemError(
            400,
            "The body must be JSON, sent with Content-Type: application/json.",
            errors=[{"field": "body", "message": "must be sent with Content-Type: application/json"}],
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ProblemError(413, f"The body must be at most {MAX_BODY_BYTES} bytes.")
    try:
        return schema.model_validate_json(bytes(body))
    except ValidationError as exc:
        raise ProblemError(400, "The body is not valid.", errors=field_errors(exc)) from None


def stored(fields: dict) -> dict:
    """A body's fields as the columns keep them: priority as its rank, tags as JSON text."""
    if fields.get("priority") is not None:
        fields["priority"] = PRIORITIES.index(fields["priority"])
    for name in ("tags", "reminders"):
        if fields.get(name) is not None:
            fields[name] = json.dumps(fields[name])
    if fields.get("recurrence") is not None:
        fields["recurrence"] = json.dumps({"rule": fields["recurrence"]["rule"], "from": fields["recurrence"]["from_"]})
    return fields


def if_match(request: Request) -> str | None:
    """The ETags If-Match accepts, as the SQL takes them (',12-3,12-7,'); None: no condition.

    Strong comparison (RFC 9110): a weak W/"3" matches nothing, and neither does a list of
    only such tags (',' alone). `*` is any version of a task that exists.
    """
    header = request.headers.get("if-match")
    if header is None or header.strip() == "*":
        return None
    tags = (tag.strip() for tag in header.split(","))
    return ",".join(["", *(tag[1:-1] for tag in tags if re.fullmatch(r'"[0-9]{1,19}-[0-9]{1,19}"', tag)), ""])


def not_modified(request: Request, current: str | None) -> bool:
    """If-None-Match names the current ETag (weak comparison, RFC 9110), or is `*`."""
    header = request.headers.get("if-none-match")
    if header is None or current is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in tags or current.removeprefix("W/") in tags


async def unwritten(user_id: int, task_id: int) -> ProblemError:
    """Why a write changed no row: there is no such task (404), or If-Match named another version (412)."""
    task = await run("get_task", user_id=user_id, task_id=task_id)
    if task is None:
        return ProblemError(404, TASK_NOT_FOUND)
    return ProblemError(412, "The task has changed since the ETag in If-Match; read it again.", {"ETag": etag(task)})


IDEMPOTENCY_HOURS = 24
IDEMPOTENCY_KEY_PATTERN = re.compile(r'[\x21\x23-\x7e]{1,255}')  # visible ASCII but the quote


def idempotency_key(request: Request) -> str | None:
    """The Idempotency-Key header (IETF httpapi draft), bare or as the draft's quoted string."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not IDEMPOTENCY_KEY_PATTERN.fullmatch(key):
        message = "must be 1 to 255 visible ASCII characters"
        raise ProblemError(400, f"Idempotency-Key {message}.", errors=[{"field": "Idempotency-Key", "message": message}])
    return key


def task_response(task, status: int = 200, headers: dict | None = None) -> Response:
    """A task's answer: the JSON the database wrote for it, and its ETag."""
    return Response(task["body"], status, {"ETag": etag(task), **(headers or {})}, media_type="application/json")


LIST_PARAMETERS = ("completed", "priority", "tag", "q", "due_after", "due_before", "overdue", "sort", "limit", "offset")


def bad_parameter(name: str, message: str) -> ProblemError:
    return ProblemError(400, f"The query parameter {name} {message}.", errors=[{"field": name, "message": message}])


def true_or_false(query: dict, name: str) -> bool | None:
    if query.get(name) not in (None, "true", "false"):
        raise bad_parameter(name, "must be true or false")
    return None if name not in query else query[name] == "true"


def list_query(items: list[tuple[str, str]]) -> tuple[str, dict | None, dict]:
    """The sort key, the filters (None: no filter) and the page of a task list, as the list's SQL takes them.

    Every parameter is checked here, so that what reaches SQL is a value of a known type,
    and the sort is a key of SORT_ORDERS. `tag` alone may repeat: a task must carry them all.
    """
    names = [name for name, _ in items]
    for name in names:
        if name not in LIST_PARAMETERS:
            raise bad_parameter(name, "is not a parameter of this list")
        if name != "tag" and names.count(name) > 1:
            raise bad_parameter(name, "may be given once")
    query = dict(items)
    priorities = query.get("priority")
    if priorities is not None and not set(priorities.split(",")) <= set(PRIORITIES):
        raise bad_parameter("priority", "must be low, medium or high, or several of them comma-separated")
    try:
        tags = sorted({valid_tag(value) for name, value in items if name == "tag"})
    except ValueError as exc:
        raise bad_parameter("tag", str(exc)) from None
    search = query.get("q")
    if search is not None and (not 1 <= len(search) <= 200 or "\x00" in search):
        raise bad_parameter("q", "must be 1 to 200 characters")
    due = {}
    for name in ("due_after", "due_before"):
        try:
            due[name] = None if name not in query else utc_timestamp(query[name])
        except ValueError as exc:
            raise bad_parameter(name, str(exc)) from None
    sort = query.get("sort", "-created_at")
    if sort not in SORT_ORDERS:
        raise bad_parameter("sort", f"must be one of {', '.join(SORT_ORDERS)}")
    limit, offset = query.get("limit", "100"), query.get("offset", "0")
    if not re.fullmatch(r"[0-9]{1,3}", limit) or not 1 <= int(limit) <= 500:
        raise bad_parameter("limit", "must be a whole number from 1 to 500")
    if not re.fullmatch(r"[0-9]{1,18}", offset):
        raise bad_parameter("offset", "must be a whole number, 0 or more")
    # q is found as written: its %, _ and \ are escaped out of LIKE's wildcards.
    pattern = None if search is None else "%" + re.sub(r"([\\%_])", r"\\\1", search_fold(search)) + "%"
    filters = {
        "completed": true_or_false(query, "completed"),
        "priorities": None if priorities is None else ",".join(["", *(str(PRIORITIES.index(p)) for p in priorities.split(",")), ""]),
        "tags": json.dumps(tags) if tags else None,
        "pattern": pattern,
        **due,
        "overdue": true_or_false(query, "overdue"),
    }
    if all(value is None for value in filters.values()):
        filters = None  # the list's own query, which PostgreSQL plans once per connection
    return sort, filters, {"limit": int(limit), "offset": int(offset)}


# Each query string the list was asked with, checked (list_query) and hashed for its ETag
# (query_digest): a frontend sends the same few again and again, and nearly every page load
# none at all. Checked and hashed on every request, they were 6% of the instructions of a
# list request's process (bench/instructions.sh). What is kept is shared by every request
# with that query string: read, never changed.
known_list_queries: dict[bytes, tuple[tuple, str | None]] = {}
KNOWN_LIST_QUERIES_MAX = 1_000


def request_list_query(request: Request) -> tuple[tuple, str | None]:
    """The request's list query, as list_query checks it, and its query_digest: worked out
    at the first request with this query string (one that fails the check is never kept)."""
    query_string = request.scope["query_string"]
    known = known_list_queries.get(query_string)
    if known is None:
        query = list_query(request.query_params.multi_items())
        known = (query, query_digest(query))
        if len(known_list_queries) >= KNOWN_LIST_QUERIES_MAX:
            known_list_queries.pop(next(iter(known_list_queries)))  # the oldest entry
        known_list_queries[query_string] = known
    return known


def next_page(request: Request, offset: int) -> str:
    """The Link to the page after this one: the same filters and sort, the next offset."""
    query = [(name, value) for name, value in request.query_params.multi_items() if name != "offset"]
    return f'<{request.scope["path"]}?{urlencode([*query, ("offset", str(offset))])}>; rel="next"'


async def task_page(user_id: int, sort: str, filters: dict | None, window: dict):
    """One page of the caller's tasks ({body, total}); 404 when the user does not exist."""
    if filters is None:
        page = await run(f"list_all_tasks:{sort}", user_id=user_id, **window)
    else:
        page = await run(f"list_tasks:{sort}", user_id=user_id, now=utc_now(), **filters, **window)
    if page["total"] == 0 and await run("get_user", user_id=user_id) is None:
        raise ProblemError(404, "No such user.")
    return page


def body_fields(body: BaseModel) -> dict:
    """A task body's fields as the columns keep them, its dates checked together (as the API
    answers them: a recurrence's `from` by that name)."""
    if isinstance(body, TaskFields):
        answered = body.model_dump(by_alias=True)
        check_schedule(body.due_at, answered["recurrence"], body.time_zone, answered["reminders"])
    return stored(body.model_dump())


async def new_task(user_id: int, body: TaskFields, key: str | None = None):
    """Insert a task for the caller; with an Idempotency-Key, a retry gets the task it made."""
    fields = body_fields(body)
    request_hash = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest() if key else None
    retry = {"idempotency_key": key, "request_hash": request_hash}
    task = await run("insert_task", user_id=user_id, now=utc_now(), **retry, **fields)
    if task is None and key is not None:
        task = await run("get_task_by_idempotency_key", user_id=user_id, idempotency_key=key)
        if task is not None and task["created_at"] < utc_now(seconds_ago=IDEMPOTENCY_HOURS * 3600):
            await run("forget_idempotency_key", user_id=user_id, idempotency_key=key)
            task = await run("insert_task", user_id=user_id, now=utc_now(), **retry, **fields)
        elif task is not None and task["request_hash"] != request_hash:
            raise ProblemError(422, "This Idempotency-Key was already used with another body.")
    if task is None:
        raise ProblemError(404, "No such user.")
    announce(user_id)
    return task


async def caller_task(user_id: int, task_id: int):
    """The caller's task, or 404."""
    task = await run("get_task", user_id=user_id, task_id=task_id)
    if task is None:
        raise ProblemError(404, TASK_NOT_FOUND)
    return task


async def written(query: str, user_id: int, task_id: int, completes: bool, **params):
    """Run one of the task writes; 404 or 412 when it wrote no row. A write that may complete
    a task runs in a transaction: completing a recurring task makes its next occurrence in it."""
    if not completes:
        task = await run(query, user_id=user_id, task_id=task_id, now=utc_now(), **params)
    else:
        async with transaction():
            task = await run(query, user_id=user_id, task_id=task_id, now=utc_now(), **params)
            if task is not None and task["makes_next"]:
                task = await next_occurrence(user_id, task_id) or task
    if task is None:
        raise await unwritten(user_id, task_id)
    announce(user_id)
    return task


async def replaced_task(user_id: int, task_id: int, body: TaskFields, if_match: str | None = None):
    """The task replaced whole by the body."""
    return await written("replace_task", user_id, task_id, body.completed, if_match=if_match, **body_fields(body))


async def changed_task(user_id: int, task_id: int, body: TaskChanges, if_match: str | None = None):
    """The task with the fields the body names changed, and only those."""
    named = body.model_fields_set
    if not named:
        raise ProblemError(400, "Name at least one field to change.", errors=[{"field": "body", "message": "must not be empty"}])
    fields = body_fields(body)
    if named & {"due_at", "recurrence", "time_zone", "reminders"}:
        # The dates are checked as they will be together: the named fields over the task's own.
        current = json.loads((await caller_task(user_id, task_id))["body"])
        merged = {**current, **{name: value for name, value in body.model_dump(by_alias=True).items() if name in named}}
        check_schedule(merged["due_at"], merged["recurrence"], merged["time_zone"], merged["reminders"])
    return await written(
        "update_task",
        user_id,
        task_id,
        body.completed is True,
        if_match=if_match,
        set_description="description" in named,
        set_due_at="due_at" in named,
        set_recurrence="recurrence" in named,
        **fields,
    )


async def completed_task(user_id: int, task_id: int, completed: bool, if_match: str | None = None):
    """The task marked done or not done."""
    return await written("set_task_completed", user_id, task_id, completed, completed=completed, if_match=if_match)


async def deleted_task(user_id: int, task_id: int, if_match: str | None = None) -> None:
    """Delete the caller's task; 404 or 412 when no row went."""
    if await run("delete_task", user_id=user_id, task_id=task_id, if_match=if_match) is None:
        raise await unwritten(user_id, task_id)
    announce(user_id)


# ---------------------------------------------------------------------------------------
# Handlers: one per route.
# ---------------------------------------------------------------------------------------


async def signup(request: Request) -> Response:
    """Create an account; only the password's bcrypt hash is stored."""
    if not bcrypt_queue_room(SIGNUP_NEXT):  # at once, before any other work
        raise queue_full()
    await enforce_rate_limit("signup", client_key(request))
    body = await parse_body(request, Signup)
    password_hash = await in_bcrypt_slot(request, SIGNUP_NEXT, hash_password, body.password)
    user = await run("insert_user", email=body.email, password_hash=password_hash, now=utc_now())
    if user is None:
        raise ProblemError(409, "An account with this email already exists.")
    return JSONResponse(user_json(user), 201, headers={"Location": "/api/me"})


async def login(request: Request) -> Response:
    """Exchange email and password for an access token; every wrong credential is the same 401."""
    if not bcrypt_queue_room(LOGIN_FIRST):  # at once, before any other work
        raise queue_full()
    await enforce_rate_limit("login", client_key(request))
    body = await parse_body(request, Login)
    if body.resource not in (None, MCP_RESOURCE):
        message = f"must be {MCP_RESOURCE} (the MCP endpoint), or left out for the API"
        raise ProblemError(400, f"The resource {message}.", errors=[{"field": "resource", "message": message}])
    email = body.email.strip().lower()
    # Only an address signup accepts can exist; anything else (a NUL, which PostgreSQL text
    # cannot even hold) skips the lookup but still pays for the dummy hash.
    user = await run("get_login", email=email) if EMAIL_PATTERN.fullmatch(email) else None
    password_hash = user["password_hash"] if user else DUMMY_PASSWORD_HASH
    if not await in_bcrypt_slot(request, LOGIN_FIRST, password_matches, body.password, password_hash) or user is None:
        # Only failures count against the email: a correct password has paid for its hash, so
        # whoever knows someone's address cannot lock them out. Counted by a hash of the
        # address, which is all the rate_limits table ever holds of it.
        await enforce_rate_limit("login_email", hashlib.sha256(email.encode()).hexdigest())
        raise ProblemError(401, "The email or the password is wrong.")
    return JSONResponse(
        {
            "access_token": issue_token(user["id"], body.resource or JWT_AUDIENCE),
            "token_type": "Bearer",
            "expires_in": ACCESS_TOKEN_TTL,
            "user": {"id": user["id"], "email": user["email"]},
        },
        headers={"Cache-Control": "no-store"},
    )


async def signing_keys(request: Request) -> Response:
    """The public key login tokens are signed with."""
    return JSONResponse({"keys": [SIGNING_JWK]}, headers={"Cache-Control": "public, max-age=300"})


async def me(request: Request) -> Response:
    """The account the access token speaks for."""
    user = await run("get_user", user_id=request.scope["user_id"])
    if user is None:
        raise ProblemError(404, "No such user.")
    return JSONResponse(user_json(user))


async def list_tasks(request: Request) -> Response:
    """The caller's tasks, filtered and sorted as the query asks (newest first by default); 304 when nothing changed."""
    user_id, (query, digest) = request.scope["user_id"], request_list_query(request)
    if "if-none-match" in request.headers:  # answered before any page is built
        current = list_etag((await run("feed_position", user_id=user_id))["position"], digest)
        if not_modified(request, current):
            return Response(status_code=304, headers={"ETag": current})
    sort, filters, window = query
    page = await task_page(user_id, sort, filters, window)
    headers = {"X-Total-Count": str(page["total"])}
    if (tag := list_etag(page["position"], digest)) is not None:
        headers["ETag"] = tag
    if window["offset"] + window["limit"] < page["total"]:
        headers["Link"] = next_page(request, window["offset"] + window["limit"])
    return Response(page["body"], headers=headers, media_type="application/json")


async def create_task(request: Request) -> Response:
    """Add a task for the caller; with an Idempotency-Key, a retry answers the task it made."""
    user_id = request.scope["user_id"]
    body = await parse_body(request, TaskFields)
    task = await new_task(user_id, body, idempotency_key(request))
    return task_response(task, 201, {"Location": f"/api/{user_id}/tasks/{task['id']}"})


async def get_task(request: Request) -> Response:
    """One of the caller's tasks; 304 when If-None-Match names its ETag."""
    task = await caller_task(request.scope["user_id"], path_task_id(request))
    if not_modified(request, etag(task)):
        return Response(status_code=304, headers={"ETag": etag(task)})
    return task_response(task)


async def replace_task(request: Request) -> Response:
    """Replace a task whole: omitted optional fields go back to their defaults."""
    task_id = path_task_id(request)
    body = await parse_body(request, TaskFields)
    return task_response(await replaced_task(request.scope["user_id"], task_id, body, if_match(request)))


async def update_task(request: Request) -> Response:
    """Change the fields the body names, and only those."""
    task_id = path_task_id(request)
    body = await parse_body(request, TaskChanges)
    return task_response(await changed_task(request.scope["user_id"], task_id, body, if_match(request)))


async def set_completed(request: Request) -> Response:
    """Mark a task done or not done."""
    task_id = path_task_id(request)
    body = await parse_body(request, Completion)
    return task_response(await completed_task(request.scope["user_id"], task_id, body.completed, if_match(request)))


async def delete_task(request: Request) -> Response:
    """Delete one of the caller's tasks."""
    task_id = path_task_id(request)
    await deleted_task(request.scope["user_id"], task_id, if_match(request))
    return Response(status_code=204)


CHANGES_PARAMETERS = ("since", "limit")
EVENTS_PARAMETERS = ("since", "ticket")


def only_parameters(request: Request, names: tuple) -> dict:
    """The query string as a dict, each parameter one of `names`, given once."""
    items = request.query_params.multi_items()
    for name, _ in items:
        if name not in names:
            raise bad_parameter(name, "is not a parameter of this route")
        if [item for item, _ in items].count(name) > 1:
            raise bad_parameter(name, "may be given once")
    return dict(items)


async def list_changes(request: Request) -> Response:
    """What changed in the caller's tasks since a cursor (without one: every task), with tombstones for deletions."""
    user_id = request.scope["user_id"]
    query = only_parameters(request, CHANGES_PARAMETERS)
    limit = query.get("limit", "100")
    if not re.fullmatch(r"[0-9]{1,3}", limit) or not 1 <= int(limit) <= FEED_PAGE_MAX:
        raise bad_parameter("limit", f"must be a whole number from 1 to {FEED_PAGE_MAX}")
    since = None
    if "since" in query and (since := cursor_position(user_id, query["since"])) is None:
        raise bad_parameter("since", "is not a cursor this service gave this user")
    rows, position, more = await feed_page(user_id, since, int(limit))
    changes = ",".join(row["body"] for row in rows)
    body = f'{{"changes": [{changes}], "cursor": {json.dumps(cursor_for(user_id, position))}, "has_more": {json.dumps(more)}}}'
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})


async def create_ticket(request: Request) -> Response:
    """A ticket that opens one event stream, for a browser's EventSource (which cannot send a header)."""
    ticket = secrets.token_urlsafe(32)
    await run(
        "insert_ticket",
        ticket_hash=hashlib.sha256(ticket.encode()).hexdigest(),
        user_id=request.scope["user_id"],
        expires_at=utc_now(seconds_ago=-TICKET_SECONDS),
        token_expires_at=request.scope["token_expires_at"],
    )
    return JSONResponse({"ticket": ticket, "expires_in": TICKET_SECONDS}, 201, headers={"Cache-Control": "no-store"})


async def open_events(request: Request):
    """The caller's stream, opened once its query, limits and cursor are checked (events_endpoint serves it)."""
    global open_streams
    user_id = request.scope["user_id"]
    query = only_parameters(request, EVENTS_PARAMETERS)
    resume_from = {"Last-Event-ID": request.headers.get("last-event-id"), "since": query.get("since")}
    for name, cursor in resume_from.items():
        if cursor is not None and not re.fullmatch(CURSOR_TEXT, cursor):
            raise bad_parameter(name, "must be a cursor: 1 to 200 of A-Z a-z 0-9 . _ ~ -")
    cursor = resume_from["Last-Event-ID"] or resume_from["since"]
    if open_streams >= EVENTS_MAX_STREAMS:
        raise ProblemError(503, "Too many event streams are open here; try again shortly.", {"Retry-After": "5"})
    open_streams += 1
    try:
        async with transaction():
            if IS_POSTGRES:  # replicas count the user's streams one after the other, not each its own snapshot
                await run("lock_user_streams", user_id=user_id)
            stream = await run(
                "open_stream",
                user_id=user_id,
                process=PROCESS_ID,
                now=utc_now(),
                stale_before=utc_now(seconds_ago=3 * EVENTS_HEARTBEAT_SECONDS),
                max=EVENTS_MAX_STREAMS_PER_USER,
            )
        if stream is None:
            raise ProblemError(
                429, f"At most {EVENTS_MAX_STREAMS_PER_USER} event streams per user.", {"Retry-After": str(EVENTS_HEARTBEAT_SECONDS)}
            )
        position = (await run("feed_position", user_id=user_id))["position"] if cursor is None else await resumable(user_id, cursor)
    except BaseException:
        open_streams -= 1
        raise
    return event_stream(user_id, stream["id"], position, request.scope["token_expires_at"])


class EventsEndpoint:
    """The caller's changes as server-sent events, live, resumable from Last-Event-ID or since, with reminders.

    An instance, not a function, for the memory of a stream that stays open for hours: a Route
    wraps a function in a Request and two layers of exception handling that live as long as
    its response (2 KB of each open stream), and calls anything else with the raw scope. A
    problem open_events raises still reaches the app's exception handlers."""

    __name__ = "open_events"  # the OpenAPI document's operationId, as a handler's function name is

    async def __call__(self, scope, receive, send):
        stream = await open_events(Request(scope, receive))
        await stream(scope, receive, send)


events_endpoint = EventsEndpoint()


async def list_tags(request: Request) -> Response:
    """The caller's tags in use, each with how many tasks carry it, by name."""
    user_id = request.scope["user_id"]
    rows = await run("list_tags", user_id=user_id)
    if not rows and await run("get_user", user_id=user_id) is None:
        raise ProblemError(404, "No such user.")
    return JSONResponse([{"tag": row["tag"], "count": row["count"]} for row in rows])


async def healthz(request: Request) -> Response:
    """The process is up; touches nothing else."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """The database answers."""
    await run("ping")
    return JSONResponse({"status": "ready"})


async def openapi(request: Request) -> Response:
    """This API, as OpenAPI 3.1."""
    return JSONResponse(OPENAPI_DOCUMENT)


async def mcp_resource_metadata(request: Request) -> Response:
    """/mcp as an OAuth protected resource (RFC 9728): its URL and where to get tokens for it."""
    document = {
        "resource": MCP_RESOURCE,
        "authorization_servers": [MCP_AUTHORIZATION_SERVER],
        "bearer_methods_supported": ["header"],
        "resource_signing_alg_values_supported": JWT_ALGORITHMS,
        "resource_name": "todo-backend",
    }
    return JSONResponse(document, headers={"Cache-Control": "public, max-age=300"})


async def resource_metadata_fallback(request: Request) -> Response:
    """The same metadata at the root well-known path, where MCP clients look when the other is missing."""
    return await mcp_resource_metadata(request)


# ---------------------------------------------------------------------------------------
# Changes and live events (v3): the feed every write leaves (sql/changes.sql), its cursors,
# the list's ETag, and event streams that every replica wakes through LISTEN/NOTIFY.
# ---------------------------------------------------------------------------------------

CURSOR_PATTERN = re.compile(r"([0-9]{1,19})\.([A-Za-z0-9_-]{22})")
CURSOR_TEXT = "^[A-Za-z0-9._~-]{1,200}$"  # what the contract lets a cursor be: a stream refuses anything else
FEED_PAGE_MAX = 500
TICKET_SECONDS = 60
RETRY_MILLISECONDS = 3000  # how soon a browser's EventSource reconnects by itself
PROCESS_ID = secrets.token_hex(8)  # this process's rows of event_streams
feed_secret = b""  # the key cursors are signed with: one for every replica, read from the database at start
streams: dict[int, set["StreamInbox"]] = {}  # user id -> this process's open streams of that user
shutting_down = asyncio.Event()


def cursor_for(user_id: int, position: int) -> str:
    """An opaque cursor: a position in the user's feed, with a MAC that binds it to the user."""
    mac = hmac.new(feed_secret, f"{user_id}.{position}".encode(), hashlib.sha256).digest()[:16]
    return f"{position}.{base64url(mac)}"


def cursor_position(user_id: int, cursor: str) -> int | None:
    """The position a cursor names; None when the service did not issue it for this user."""
    match = CURSOR_PATTERN.fullmatch(cursor)
    if match is None or not hmac.compare_digest(cursor_for(user_id, int(match[1])), cursor):
        return None
    return int(match[1])


async def feed_page(user_id: int, since: int | None, limit: int) -> tuple[list, int, bool]:
    """The changes after position `since` (None: every task that exists now), oldest first:
    (rows of change_seq and body, the position to ask from next, whether more follow at once).
    410 for a position before deletions the feed no longer remembers."""
    head, *rows = await run("list_changes", user_id=user_id, since=since or 0, tombstones=since is not None, limit=limit + 1)
    if since is not None and since < head["pruned_through"]:
        raise ProblemError(410, "This cursor is older than the deletions the feed remembers; sync again without since.")
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1]["change_seq"], True
    return rows, max(head["position"], since or 0), False


async def resumable(user_id: int, cursor: str) -> int | None:
    """The position a stream resumes from; None when it cannot (a cursor not this user's, or
    older than the deletions the feed remembers)."""
    position = cursor_position(user_id, cursor)
    if position is not None:
        try:
            await feed_page(user_id, position, 1)
        except ProblemError:
            return None
    return position


def query_digest(query: tuple) -> str | None:
    """The list query's part of the list's ETag (list_query's answer, hashed). None for
    `overdue`, whose answer changes with the clock as well: that list has no ETag."""
    sort, filters, window = query
    if filters is not None and filters["overdue"] is not None:
        return None
    return hashlib.sha256(repr(query).encode()).hexdigest()[:16]


def list_etag(position: int, digest: str | None) -> str | None:
    """The list's weak ETag: the user's feed position and the query's digest (query_digest)."""
    return None if digest is None else f'W/"{position}-{digest}"'


STREAM_BACKLOG = 1000  # reminders a stream may have yet to send: a reader further behind is dropped


class StreamInbox:
    """What an open stream has yet to do: send the reminders that fired (their tasks read once
    for all the streams here), read the feed when a commit woke it (one read catches up
    with every change before it), or end. A plain future to sleep on, not a queue or a task:
    a thousand open streams each keep one of these."""

    __slots__ = ("reminders", "woken", "behind", "gone", "waking")

    def __init__(self):
        self.reminders = []
        self.woken = True  # the stream's first turn reads the feed
        self.behind = False  # more than STREAM_BACKLOG reminders unsent: the reader is too slow
        self.gone = False  # the client has disconnected
        self.waking = None

    def nudge(self) -> None:
        if self.waking is not None and not self.waking.done():
            self.waking.set_result(None)

    async def sleep(self, seconds: float) -> bool:
        """Wait to be nudged; False when `seconds` passed first."""
        self.waking = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(seconds):
                await self.waking
            return True
        except TimeoutError:
            return False
        finally:
            self.waking = None

    async def watch(self, receive) -> None:
        """Nudge the stream as soon as its client disconnects, between its writes too."""
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        self.nudge()


def end_streams() -> None:
    """SIGTERM: every stream ends at once, instead of holding the graceful shutdown up."""
    if not shutting_down.is_set():
        shutting_down.set()
        for inboxes in streams.values():
            for inbox in inboxes:
                inbox.nudge()


def wake(user_id: int) -> None:
    """Tell this process's streams of the user to read the feed."""
    for inbox in streams.get(user_id, ()):
        inbox.woken = True
        inbox.nudge()


def announce(user_id: int) -> None:
    """A write of the user's tasks has committed. On PostgreSQL the write's trigger has told the
    listener of every replica (NOTIFY); a SQLite file has one process, whose streams are woken here."""
    if not IS_POSTGRES:
        wake(user_id)


def on_notification(connection, pid, channel, payload: str) -> None:
    """A commit's NOTIFY: a user id whose feed moved, or `r user task at late;...`, fired reminders."""
    if payload.startswith("r "):
        notices = [notice.split(" ") for notice in payload[2:].split(";")]
        deliver_reminders([(int(user_id), int(task_id), at, late == "1") for user_id, task_id, at, late in notices])
    else:
        wake(int(payload))


async def listen_forever() -> None:
    """PostgreSQL: one connection of its own LISTENs for every replica's commits (a pooled one
    would be handed back). A notification carries ids, never task data, and streams read the
    stored feed: after the connection is lost (PostgreSQL restarted), it connects again and
    every stream reads the feed, so what was missed meanwhile is caught up."""
    url, options = connect_options(DATABASE_LISTEN_URL)
    while True:
        connection = None
        try:
            connection = await asyncpg.connect(url, ssl=options.get("ssl"), timeout=5)
            await connection.add_listener("task_changes", on_notification)
            for user_id in list(streams):
                wake(user_id)
            while True:  # a connection the server has dropped shows only when it is used
                await asyncio.sleep(2)
                await connection.fetchval("SELECT 1", timeout=5)
        except (*DATABASE_UNAVAILABLE, TimeoutError) as exc:
            log.warning("the listener lost PostgreSQL (%s); connecting again", type(exc).__name__)
        finally:
            if connection is not None:
                connection.terminate()
        await asyncio.sleep(1)


def sse(event: str | None = None, data: str = "{}", event_id: str | None = None) -> bytes:
    lines = ([f"event: {event}"] if event else []) + ([f"id: {event_id}"] if event_id else []) + [f"data: {data}"]
    return ("\n".join(lines) + "\n\n").encode()


async def write_chunk(send, chunk: bytes) -> None:
    """One write of a stream: a client that does not take it within EVENTS_HEARTBEAT_SECONDS is too slow."""
    async with asyncio.timeout(EVENTS_HEARTBEAT_SECONDS):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})


def event_stream(user_id: int, stream_id: int, position: int | None, expires_at: float):
    """The stream of one caller, as an ASGI response: `ready`, then every change after
    `position` (None: a cursor it cannot resume from, so `resync`), reminders, heartbeats,
    and `expired` when the token it was opened with runs out. A write the client does not
    take within EVENTS_HEARTBEAT_SECONDS drops it (it resumes later): nothing piles up here."""

    async def respond(scope, receive, send):
        global open_streams
        inbox = StreamInbox()
        streams.setdefault(user_id, set()).add(inbox)
        watching = asyncio.ensure_future(inbox.watch(receive))
        try:
            headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store"), (b"x-accel-buffering", b"no")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            retry = f"retry: {RETRY_MILLISECONDS}\n".encode()
            if position is None:
                await write_chunk(send, retry + sse("resync"))
                return
            await write_chunk(send, retry + sse("ready", event_id=cursor_for(user_id, position)))
            since = position
            while not (inbox.gone or shutting_down.is_set() or inbox.behind):
                if time.time() >= expires_at:
                    await write_chunk(send, sse("expired"))
                    return
                if inbox.woken:
                    inbox.woken = False  # a commit from here on wakes it again
                    try:
                        rows, since, more = await feed_page(user_id, since, FEED_PAGE_MAX)
                    except ProblemError:  # pruned while the stream was away
                        await write_chunk(send, sse("resync"))
                        return
                    if rows:  # a page in one write: a burst costs the event loop one send, not one per event
                        await write_chunk(send, b"".join(sse("change", row["body"], cursor_for(user_id, row["change_seq"])) for row in rows))
                    inbox.woken |= more
                elif inbox.reminders:
                    pending, inbox.reminders = inbox.reminders, []
                    await write_chunk(send, b"".join([await reminder_event(*reminder) for reminder in pending]))
                elif not await inbox.sleep(max(0.0, min(EVENTS_HEARTBEAT_SECONDS, expires_at - time.time()))):
                    await write_chunk(send, b": heartbeat\n\n")
                    inbox.woken = True  # and the feed is read, whatever notifications were lost
        except (TimeoutError, *DATABASE_UNAVAILABLE):  # a reader too slow, or the database gone: it resumes later
            pass
        finally:
            streams[user_id].discard(inbox)
            if not streams[user_id]:
                del streams[user_id]
            open_streams -= 1
            watching.cancel()
            with contextlib.suppress(*DATABASE_UNAVAILABLE):
                await run("close_stream", stream_id=stream_id)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})

    return respond


open_streams = 0  # this process's, against EVENTS_MAX_STREAMS


async def refresh_streams() -> None:
    """Keep this process's streams counted against their users' limits on every replica."""
    if streams:
        await run("refresh_streams", process=PROCESS_ID, now=utc_now())


async def prune_feed() -> None:
    """Forget tombstones past CHANGES_RETENTION_DAYS (their feeds remember how far), a bounded
    batch at a time, and tickets, streams and reminders that are done with."""
    cutoff = utc_now(seconds_ago=CHANGES_RETENTION_DAYS * 86_400)
    await run("raise_pruned_through", cutoff=cutoff)
    while len(await run("prune_tombstones", cutoff=cutoff)) == 1000:
        await asyncio.sleep(0.1)
    await run("delete_expired_tickets", now=utc_now())
    await run("delete_stale_streams", stale_before=utc_now(seconds_ago=3 * EVENTS_HEARTBEAT_SECONDS))
    await run("delete_fired_reminders")


# ---------------------------------------------------------------------------------------
# Recurrence and reminders (v3): the next occurrence a completion makes, reminders fired by
# whichever replica claims them (sql/reminders.sql), and their signed webhook.
# ---------------------------------------------------------------------------------------


def next_due(recurrence: dict, time_zone: str, due_at: str, series_start: str, occurrence: int, done_at: datetime) -> str | None:
    """The next occurrence's due date, or None when the rule has no date left.

    From "due": the rule started at the series' first due date, its first date later than
    both this due date and the completion (missed dates are skipped). From "completion": the
    rule started at the completion, its first date after it; COUNT counts the occurrences.
    """
    rule = recurrence["rule"]
    if recurrence["from"] == "completion":
        count = re.search(r"(?:^|;)COUNT=([0-9]+)", rule)
        if count and occurrence >= int(count[1]):
            return None
        moment = occurrences(rule, done_at, time_zone, without_count=True).after(done_at)
    else:
        after = max(datetime.fromisoformat(due_at), done_at)
        moment = occurrences(rule, datetime.fromisoformat(series_start), time_zone).after(after)
    return None if moment is None else utc_text(moment)


async def next_occurrence(user_id: int, task_id: int):
    """In the transaction of a completion: make the task's next occurrence, and answer the
    completed task naming it (None when the rule has no date left)."""
    task = await run("get_recurrence", user_id=user_id, task_id=task_id)
    recurrence = json.loads(task["recurrence"])
    due_at = next_due(recurrence, task["time_zone"], task["due_at"], task["series_start"], task["occurrence"], datetime.now(UTC))
    if due_at is None:
        return None
    made = await run("insert_next_occurrence", user_id=user_id, task_id=task_id, due_at=due_at, now=utc_now())
    return await run("set_next_id", user_id=user_id, task_id=task_id, next_id=made["id"])


LATE_SECONDS = 5  # a reminder fired later than this after its time says so
REMINDER_BATCH = 500  # reminders claimed in one statement; the claims go on while batches come back full


def is_late(reminder) -> bool:
    return (datetime.fromisoformat(reminder["fired_at"]) - datetime.fromisoformat(reminder["fire_at"])).total_seconds() > LATE_SECONDS


def deliver_reminders(notices: list[tuple[int, int, str, bool]]) -> None:
    """Fired reminders (user, task, at, late), to this process's streams of their users: their
    tasks are read in one query, however many reminders and streams, and each stream sends its own."""
    notices = [notice for notice in notices if notice[0] in streams]
    if not notices:
        return
    tasks = asyncio.ensure_future(reminded_tasks([[user_id, task_id] for user_id, task_id, _, _ in notices]))
    tasks.add_done_callback(lambda done: done.cancelled() or done.exception())  # a stream that awaits it sees a failure
    for notice in notices:
        for inbox in streams[notice[0]]:
            if len(inbox.reminders) < STREAM_BACKLOG:
                inbox.reminders.append((tasks, *notice))
            else:
                inbox.behind = True
            inbox.nudge()


async def reminded_tasks(pairs: list[list[int]]) -> dict[int, str]:
    """The bodies of the tasks of [user id, task id] pairs, by task id."""
    return {row["id"]: row["body"] for row in await run("get_reminded_tasks", pairs=json.dumps(pairs))}


async def reminder_event(tasks: asyncio.Future, user_id: int, task_id: int, at: str, late: bool) -> bytes:
    body = (await tasks).get(task_id)
    if body is None:  # deleted since it fired
        return b": a reminder of a task deleted since\n\n"
    return sse("reminder", f'{{"task": {body}, "at": {json.dumps(at)}, "late": {json.dumps(late)}}}')


async def fire_due_reminders() -> None:
    """Claim the reminders due now (each replica its own, SKIP LOCKED) and deliver them to the
    streams of every replica; drop, with a log line, those later than REMINDER_LATE_SECONDS."""
    # One a running replica claims within LATE_SECONDS is on time: it is never dropped, even
    # when REMINDER_LATE_SECONDS is shorter than a turn of this chore.
    late_cutoff = utc_now(seconds_ago=max(REMINDER_LATE_SECONDS, LATE_SECONDS))
    for dropped in await run("drop_late_reminders", late_cutoff=late_cutoff):
        log.warning("reminder dropped: later than REMINDER_LATE_SECONDS",
                    extra={"fields": {"reminder_id": dropped["id"], "task_id": dropped["task_id"], "at": dropped["fire_at"]}})
    webhook = bool(REMINDER_WEBHOOK_URL)
    while True:
        now = utc_now()
        fired = await run("claim_due_reminders", now=now, webhook=webhook, first_attempt_at=now if webhook else None, batch=REMINDER_BATCH)
        notices = [(row["user_id"], row["task_id"], row["fire_at"], is_late(row)) for row in fired]
        if not IS_POSTGRES:
            deliver_reminders(notices)
        elif notices:  # a hundred to a notification: under its 8,000 bytes, and few for every listener to read
            notices_text = [f"{user} {task} {at} {int(late)}" for user, task, at, late in notices]
            await run("notify_reminders", payloads=["r " + ";".join(batch) for batch in itertools.batched(notices_text, 100)])
        if len(fired) < REMINDER_BATCH:
            return


webhook_client = httpx.AsyncClient(timeout=5.0, follow_redirects=False)
WEBHOOK_LEASE_SECONDS = 30  # longer than an attempt can take
WEBHOOK_BATCH = 50  # attempts claimed, and POSTed at once, in one turn


def webhook_body(reminder) -> str:
    """The same text on every attempt: what it says is what was true when the reminder fired."""
    data = {"user_id": reminder["user_id"], "task": json.loads(reminder["task_body"]), "at": reminder["fire_at"], "late": is_late(reminder)}
    return json.dumps({"type": "task.reminder", "timestamp": reminder["fired_at"], "data": data})


async def deliver_webhook(signer: standardwebhooks.Webhook, reminder) -> None:
    """POST one fired reminder, signed (Standard Webhooks), with the same webhook-id on every
    try; a non-2xx answer or a time-out is tried again after a growing pause, until
    REMINDER_WEBHOOK_RETRY_SECONDS after it fired."""
    body, message_id, now = webhook_body(reminder), f"msg_reminder_{reminder['id']}", datetime.now(UTC)
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signer.sign(message_id, now, body),
    }
    try:
        delivered = (await webhook_client.post(REMINDER_WEBHOOK_URL, content=body, headers=headers)).is_success
    except httpx.HTTPError:
        delivered = False
    give_up_at = datetime.fromisoformat(reminder["fired_at"]) + timedelta(seconds=REMINDER_WEBHOOK_RETRY_SECONDS)
    if delivered or now >= give_up_at:
        if not delivered:
            log.warning("reminder webhook given up", extra={"fields": {"reminder_id": reminder["id"], "attempts": reminder["attempts"]}})
        await run("finish_delivery", reminder_id=reminder["id"])
    else:
        # The pause counts from this attempt's start, so a time-out delays the next no further;
        # the last attempt is at the end of the retries' time, never past it.
        pause = timedelta(seconds=min(5 * 2 ** (reminder["attempts"] - 1), 3600))
        await run("retry_delivery", reminder_id=reminder["id"], next_attempt_at=utc_text(min(now + pause, give_up_at)))


async def deliver_webhooks() -> None:
    """Every webhook attempt that is due, WEBHOOK_BATCH at a time (a burst of reminders is not
    held to one batch a second)."""
    signer = standardwebhooks.Webhook(REMINDER_WEBHOOK_SECRET)
    while True:
        due = await run("claim_deliveries", now=utc_now(), lease_until=utc_now(seconds_ago=-WEBHOOK_LEASE_SECONDS), batch=WEBHOOK_BATCH)
        await asyncio.gather(*(deliver_webhook(signer, reminder) for reminder in due))
        if len(due) < WEBHOOK_BATCH:
            return


async def repeat(chore, seconds: float, at_once: bool = False) -> None:
    """Run a background chore every so many seconds; a database outage skips a turn, and any
    other failure is logged and skips a turn too."""
    if not at_once:
        await asyncio.sleep(seconds)
    while True:
        try:
            await chore()
        except DATABASE_UNAVAILABLE:
            pass
        except Exception:
            log.exception("%s failed", chore.__name__)
        await asyncio.sleep(seconds)


# ---------------------------------------------------------------------------------------
# Assistants (v3): the MCP server (the official SDK, Streamable HTTP at /mcp behind mcp_guard) and
# its tools, each a thin call into the steps above for the caller mcp_guard found, so that
# their validation, ownership, problem texts and writes are the API's own.
# ---------------------------------------------------------------------------------------


class TaskResult(TypedDict):
    """A task as the tools answer it: the API's task JSON. The SDK drops from the structured
    result every field not declared here, so a field the task JSON gains is added here too."""

    id: int
    user_id: int
    title: str
    description: str | None
    completed: bool
    priority: Priority
    due_at: str | None
    tags: list[str]
    recurrence: dict | None
    time_zone: str
    reminders: list[dict]
    series_id: int | None
    next_id: int | None
    created_at: str
    updated_at: str


class TaskList(TypedDict):
    tasks: list[TaskResult]
    total: int  # every match, before the limit


class DeletedTask(TypedDict):
    id: int
    deleted: Literal[True]


# Creating an MCPServer calls logging.basicConfig with a Rich handler (multi-line, not JSON):
# the root logger is put back as it was; the SDK's loggers ("mcp") write JSON lines above.
root_handlers, root_level = list(logging.root.handlers), logging.root.level
mcp_server = MCPServer(
    "todo-backend",
    instructions="The signed-in user's tasks: add, list, complete, update and delete them.",
    subscriptions=False,  # subscriptions/listen would hold a stream open through shutdown
)
logging.root.handlers[:], logging.root.level = root_handlers, root_level
# Stateless, and JSON answers instead of event streams: every POST gets its answer and ends,
# so nothing holds up a graceful shutdown, and any replica can answer any request. The SDK's
# app is not used, only its session manager, which lifespan() runs: its DNS-rebinding guard
# (421 for a Host it was not told about) is off, because mcp_guard checks the Origin against
# CORS_ORIGINS and every request needs a bearer token; its auth settings are unused, because
# mcp_guard is the resource server.
mcp_server.streamable_http_app(
    stateless_http=True,
    json_response=True,
    max_request_body_size=MAX_BODY_BYTES,
    transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
)


class McpEndpoint:
    """Model Context Protocol for assistants: JSON-RPC over Streamable HTTP, on the token's user's tasks.

    An instance, not a function: a Route takes a plain function for a request handler, and
    hands an ASGI app (as the SDK's session manager is) the raw scope only this way."""

    __name__ = "mcp"  # the OpenAPI document's operationId, as a handler's function name is

    async def __call__(self, scope, receive, send):
        await mcp_server.session_manager.handle_request(scope, receive, send)


mcp_endpoint = McpEndpoint()


def tool_caller(ctx: Context) -> int:
    """The user mcp_guard verified the request's token for."""
    return ctx.request_context.request.scope["user_id"]


def tool_arguments(ctx: Context, tool: str, names: tuple[str, ...]) -> dict:
    """The call's arguments as the client sent them: an omitted one is absent, a null one None
    (the SDK's parameters cannot tell these apart, and update_task must)."""
    arguments = dict((ctx.request_context.params or {}).get("arguments") or {})
    for name in arguments:
        if name not in names:
            raise ProblemError(400, "The arguments are not valid.", errors=[{"field": name, "message": f"is not an argument of {tool}"}])
    return arguments


def validated(schema: type[BaseModel], arguments: dict):
    """The arguments through the API's own body model, with its messages."""
    try:
        return schema.model_validate(arguments)
    except ValidationError as exc:
        raise ProblemError(400, "The arguments are not valid.", errors=field_errors(exc)) from None


def tool_error(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def mcp_tool(name: str):
    """Register a tool under its contract name (the function keeps its own, so that it never
    shadows a handler). A problem the steps raise becomes a tool error with the problem's text."""

    def register(function):
        @functools.wraps(function)
        async def tool(*args, **kwargs):
            try:
                return await function(*args, **kwargs)
            except ProblemError as exc:
                fields = "; ".join(f"{error['field']}: {error['message']}" for error in exc.errors)
                return tool_error(f"{exc.detail} {fields}".strip())
            except DATABASE_UNAVAILABLE as exc:
                log.warning("database unavailable: %s", type(exc).__name__)
                return tool_error("The database is unavailable; try again shortly.")

        mcp_server.tool(name=name)(tool)
        return function

    return register


TaskId = Annotated[int, Field(strict=True, ge=1, le=MAX_ID, description="The task's id")]
TOOL_TASK_FIELDS = ("title", "description", "priority", "due_at", "tags")
DESCRIBED = {
    "title": "1 to 255 characters",
    "description": "At most 10,000 characters, or null",
    "priority": "low, medium or high",
    "due_at": "RFC 3339 date-time with an offset (2026-12-24T18:00:00+01:00), or null",
    "tags": "Up to 20 tags of 1 to 32 characters, no commas; kept lower-cased",
}


def described(kind, name: str):
    return Annotated[kind, Field(description=DESCRIBED[name])]


def task_result(task) -> TaskResult:
    return json.loads(task["body"])


@mcp_tool("add_task")
async def add_task_tool(
    ctx: Context,
    title: described(str, "title"),
    description: described(str | None, "description") = None,
    priority: described(Priority, "priority") = "medium",
    due_at: described(str | None, "due_at") = None,
    tags: described(list[str], "tags") = (),
) -> TaskResult:
    """Add a task for the user; it answers the task made."""
    body = validated(TaskFields, tool_arguments(ctx, "add_task", TOOL_TASK_FIELDS))
    return task_result(await new_task(tool_caller(ctx), body))


@mcp_tool("list_tasks")
async def list_tasks_tool(
    ctx: Context,
    status: Annotated[Literal["all", "pending", "completed"], Field(description="pending: not completed")] = "all",
    q: Annotated[str | None, Field(description="1 to 200 characters found, ignoring case, in the title or description")] = None,
    tag: Annotated[str | None, Field(description="Only tasks carrying this tag")] = None,
    limit: Annotated[int, Field(strict=True, ge=1, le=100, description="At most this many tasks, newest first")] = 50,
) -> TaskList:
    """The user's tasks, newest first, and how many match in all."""
    query = [("limit", str(limit))]
    if status != "all":
        query.append(("completed", "true" if status == "completed" else "false"))
    query += [(name, value) for name, value in (("q", q), ("tag", tag)) if value is not None]
    page = await task_page(tool_caller(ctx), *list_query(query))
    return {"tasks": json.loads(page["body"]), "total": page["total"]}


@mcp_tool("complete_task")
async def complete_task_tool(ctx: Context, task_id: TaskId) -> TaskResult:
    """Mark one of the user's tasks done; a recurring one makes its next occurrence."""
    return task_result(await completed_task(tool_caller(ctx), task_id, True))


@mcp_tool("update_task")
async def update_task_tool(
    ctx: Context,
    task_id: TaskId,
    title: described(str | None, "title") = None,
    description: described(str | None, "description") = None,
    priority: described(Priority | None, "priority") = None,
    due_at: described(str | None, "due_at") = None,
    tags: described(list[str] | None, "tags") = None,
) -> TaskResult:
    """Change the fields given, and only those (null clears description or due_at)."""
    arguments = tool_arguments(ctx, "update_task", ("task_id", *TOOL_TASK_FIELDS))
    arguments.pop("task_id")
    body = validated(TaskChanges, arguments)
    return task_result(await changed_task(tool_caller(ctx), task_id, body))


@mcp_tool("delete_task")
async def delete_task_tool(ctx: Context, task_id: TaskId) -> DeletedTask:
    """Delete one of the user's tasks."""
    await deleted_task(tool_caller(ctx), task_id)
    return {"id": task_id, "deleted": True}


# ---------------------------------------------------------------------------------------
# Exception handlers, middleware (the request log, the body deadline) and the HTTP protocol's
# read deadlines. Middleware answers with responses; endpoints raise.
# ---------------------------------------------------------------------------------------

async def problem_response(request: Request, exc: ProblemError) -> Response:
    return exc.response


async def database_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("database unavailable: %s", type(exc).__name__)
    return problem(503, "The database is unavailable; try again shortly.", {"Retry-After": "5"})


async def http_error(request: Request, exc: HTTPException) -> Response:
    detail = {404: "No such route.", 405: "This route does not take this method."}.get(exc.status_code, exc.detail)
    headers = {"Allow": allowed_methods(request.scope)} if exc.status_code == 405 else exc.headers
    return problem(exc.status_code, detail, headers)


def allowed_methods(scope) -> str:
    """Every method the path takes (RFC 9110): Starlette's 405 names only those of one route."""
    methods = set()
    for route in routes:
        match, _ = route.matches(scope)
        if match != Match.NONE:
            methods |= route.methods
    return ", ".join(sorted(methods))


async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
    """The client hung up before its answer: its doing, logged as 499 (nginx's number for it)."""
    return Response(status_code=499)


class BodyTimeout(Exception):
    """The body did not arrive within BODY_TIMEOUT_SECONDS."""


async def body_timeout(request: Request, exc: BodyTimeout) -> Response:
    return problem(408, f"The body did not arrive within {BODY_TIMEOUT_SECONDS} s.", {"Connection": "close"})


async def server_error(request: Request, exc: Exception) -> Response:
    return problem(500, "Something went wrong on our side; it has been logged.")


REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Any other method is logged as OTHER: a client may send a 12,000-character one.
KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}


def body_deadline(app):
    """A body must arrive within BODY_TIMEOUT_SECONDS of its headers: a client that trickles
    it, or stops, is answered 408 and cut off instead of holding its connection."""

    async def middleware(scope, receive, send):
        if scope["type"] != "http" or not any(name in (b"content-length", b"transfer-encoding") for name, _ in scope["headers"]):
            return await app(scope, receive, send)  # no body to wait for
        deadline = asyncio.get_running_loop().time() + BODY_TIMEOUT_SECONDS
        body_done = False

        async def receive_in_time():
            nonlocal body_done
            if body_done:  # what is left to receive is the disconnect, whenever it comes
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout() from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await app(scope, receive_in_time, send)

    return middleware


class ReadDeadlines(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with deadlines on reading each request, and a cap on
    connections that holds while they send nothing.

    uvicorn has no read deadline (its keep-alive timeout stops at the first byte), so a client
    could send half a request, or a body it never finishes, and hold its connection and
    descriptor for as long as it liked. The line and headers must arrive within
    HEADER_TIMEOUT_SECONDS (else 408 and closed). A body the route reads is cut off by
    body_deadline, which can still answer 408; one it never reads, still trickling in after
    the answer, is cut off here a second later. A class because uvicorn takes its protocol as one.

    uvicorn's limit_concurrency answers 503 only to a request, and an idle connection sends
    none: past it, idle connections would use up the descriptors and new clients wait in the
    listen queue for seconds. So the cap is counted here, as each connection is made: past
    MAX_CONNECTIONS the connection idle longest (between requests: no byte of one yet, no
    response in flight) is closed to make room, and when none is, the new one is answered 503
    before anything is read. A response in progress (a stream, for minutes) is never cut.
    """

    # The connections idle between requests, the one idle longest first (a dict as an ordered
    # set, so that finding it is O(1) however many are open). One per process, as its server is.
    idle: dict["ReadDeadlines", None] = {}

    timer = None
    waiting_for = None  # "headers", "body" or None
    deadline = 0.0
    request_begun = False  # a byte of the awaited request has come

    def wait_for(self, part) -> None:
        """Start the deadline for this part of a request (None: no deadline). One timer per
        connection, moved by its timestamp, not a new timer for every request."""
        # A pipelined request may already be in h11's buffer when the last answer ends.
        self.waiting_for, self.request_begun = part, bool(self.conn.trailing_data[0])
        self.idle.pop(self, None)
        if part == "headers" and not self.request_begun:
            self.idle[self] = None  # last: idle the shortest
        if part is not None:
            self.deadline = self.loop.time() + (HEADER_TIMEOUT_SECONDS if part == "headers" else BODY_TIMEOUT_SECONDS + 1)
            if self.timer is not None and self.timer.when() > self.deadline:  # a body's, later than this
                self.timer.cancel()
                self.timer = None
            if self.timer is None:
                self.timer = self.loop.call_at(self.deadline, self.deadline_reached)

    def deadline_reached(self) -> None:
        self.timer = None
        if self.waiting_for is None or self.transport.is_closing():
            return
        if self.loop.time() < self.deadline:  # moved on since the timer was set
            self.timer = self.loop.call_at(self.deadline, self.deadline_reached)
        elif self.waiting_for == "headers":
            self.headers_too_late()
        elif self.conn.their_state is h11.SEND_BODY:
            self.transport.close()  # a body nobody reads, still trickling in after the answer

    def connection_made(self, transport) -> None:
        super().connection_made(transport)  # counted in self.connections from here
        if len(self.connections) > MAX_CONNECTIONS:
            if not self.idle:
                self.close_with_problem(503, "Too many connections at once; try again shortly.", "retry-after: 1")
                return
            # Its descriptor is freed when the loop next turns, before this connection reads.
            oldest = next(iter(self.idle))
            del self.idle[oldest]
            oldest.transport.close()
        self.wait_for("headers")

    def data_received(self, data: bytes) -> None:
        self.request_begun = True
        self.idle.pop(self, None)
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        reading = self.conn.their_state
        if self.waiting_for == "headers" and reading is not h11.IDLE:
            self.wait_for("body" if reading is h11.SEND_BODY else None)
        elif self.waiting_for == "body" and reading is not h11.SEND_BODY:
            # The body is in; if the answer went out before it, the next request is awaited now.
            self.wait_for("headers" if reading is h11.IDLE else None)

    def on_response_complete(self) -> None:
        if self.conn.their_state is not h11.SEND_BODY:
            self.wait_for("headers")  # the next request on this connection
        super().on_response_complete()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown (SIGTERM): event streams end at once, instead of holding
        the shutdown up until its grace runs out."""
        end_streams()
        super().shutdown()

    def connection_lost(self, exc) -> None:
        self.idle.pop(self, None)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        super().connection_lost(exc)

    def headers_too_late(self) -> None:
        """408 for a request begun and not finished; a connection that never began one (a
        browser's pre-connect, an idle keep-alive) is closed without a word."""
        if self.conn.their_state is not h11.IDLE:
            return
        if not self.request_begun:
            self.transport.close()
            return
        self.close_with_problem(408, f"The request line and headers did not arrive within {HEADER_TIMEOUT_SECONDS} s.")

    def close_with_problem(self, status: int, detail: str, *headers: str) -> None:
        """Write a problem straight to the socket and close it: there is no request (or none
        complete) that the app could answer."""
        phrase = HTTPStatus(status).phrase
        body = json.dumps({"type": "about:blank", "title": phrase, "status": status, "detail": detail}).encode()
        lines = [f"HTTP/1.1 {status} {phrase}", "content-type: application/problem+json", f"content-length: {len(body)}", *headers, "connection: close"]
        self.transport.write("".join(f"{line}\r\n" for line in lines).encode() + b"\r\n" + body)
        self.transport.close()


def cors(app):
    """CORS by Starlette's middleware, for the requests that carry an Origin (a browser's
    cross-origin call and its preflight); only those can get a CORS header.

    Every other request (a server-side fetch, curl, a same-origin page) passes by it: its
    answer only says that it varies by Origin, as Starlette's would, so that a shared cache
    never hands it to a page of another origin. Starlette's send wrapper cost 6% of a
    list request's instructions, for that one header.
    """
    with_origin = CORSMiddleware(
        app,
        allow_origins=CORS_ORIGINS,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        # Mcp-Protocol-Version and Mcp-Session-Id: what a browser-based MCP client sends to
        # /mcp; it reads WWW-Authenticate to find the resource's metadata.
        allow_headers=["Authorization", "Content-Type", "If-Match", "If-None-Match", "Last-Event-ID", "Mcp-Protocol-Version", "Mcp-Session-Id", "X-Request-ID"],
        expose_headers=["ETag", "Link", "Location", "Mcp-Session-Id", "Retry-After", "WWW-Authenticate", "X-Request-ID", "X-Total-Count"],
        max_age=600,
    )

    async def middleware(scope, receive, send):
        if scope["type"] != "http" or any(name == b"origin" for name, _ in scope["headers"]):
            return await with_origin(scope, receive, send)

        async def send_varying_by_origin(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"vary", b"Origin")]
            await send(message)

        await app(scope, receive, send_varying_by_origin)

    return middleware


def request_line(method: str, route: str | None, status: int, duration_ms: float, user_id: int | None, request_id: str) -> str:
    """A request's log line, as json_line writes it: written out, since json.dumps of a dict
    was 3% of the instructions of a list request, and of a string alone it is a C call."""
    user = "null" if user_id is None else int(user_id)
    return (
        f'{{"time": "{log_time(time.time())}", "level": "info", "message": "request", "method": {json.dumps(method)}, '
        f'"route": {json.dumps(route)}, "status": {int(status)}, "duration_ms": {float(duration_ms)!r}, '
        f'"user_id": {user}, "request_id": {json.dumps(request_id)}}}\n'
    )


# A request's log line waits for the end of the event loop's turn, and the turn's lines go
# out in one write: under load one system call carries dozens of lines instead of one each.
pending_request_lines: list[str] = []


def write_request_lines() -> None:
    sys.stderr.write("".join(pending_request_lines))  # where the log's handler writes, line-buffered
    pending_request_lines.clear()


def request_log(app):
    """One line per request, and X-Request-ID on every response (the client's, if it sent a sane one).

    The line holds the route's template, never the raw path or query, and no header or body,
    so no token or password can reach it.
    """

    async def middleware(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        request_id = next((value for name, value in scope["headers"] if name == b"x-request-id"), b"").decode("latin-1")
        if not REQUEST_ID_PATTERN.fullmatch(request_id):
            request_id = secrets.token_hex(16)
        started = time.perf_counter()
        status = 500

        async def send_with_request_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await app(scope, receive, send_with_request_id)
        finally:
            if log.isEnabledFor(logging.INFO):
                # Not through a LogRecord and the handlers' locks, which cost more than the line.
                if not pending_request_lines:
                    asyncio.get_running_loop().call_soon(write_request_lines)
                pending_request_lines.append(
                    request_line(
                        scope["method"] if scope["method"] in KNOWN_METHODS else "OTHER",
                        getattr(scope.get("route"), "path_format", None),
                        status,
                        round((time.perf_counter() - started) * 1000, 2),
                        scope.get("user_id"),
                        request_id,
                    )
                )

    return middleware


# ---------------------------------------------------------------------------------------
# The OpenAPI document: request schemas from the body models, the rest written out here.
# ---------------------------------------------------------------------------------------

class JsonRpcRequest(BaseModel):
    """A JSON-RPC 2.0 message of the Model Context Protocol: initialize, tools/list, tools/call, ..."""

    jsonrpc: Literal["2.0"]
    id: int | str | None = None
    method: str
    params: dict | None = None


TIMESTAMP = {"type": "string", "format": "date-time"}
ID = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
RESPONSE_SCHEMAS = {
    "User": {
        "type": "object",
        "required": ["id", "email", "created_at"],
        "properties": {"id": ID, "email": {"type": "string"}, "created_at": TIMESTAMP},
        "additionalProperties": False,
    },
    "Task": {
        "type": "object",
        "required": [
            "id", "user_id", "title", "description", "completed", "priority", "due_at", "tags",
            "recurrence", "time_zone", "reminders", "series_id", "next_id", "created_at", "updated_at",
        ],
        "properties": {
            "id": ID,
            "user_id": ID,
            "title": {"type": "string", "minLength": 1, "maxLength": 255},
            "description": {"type": ["string", "null"], "maxLength": 10_000},
            "completed": {"type": "boolean"},
            "priority": {"enum": list(PRIORITIES)},
            "due_at": {"type": ["string", "null"], "format": "date-time"},
            "tags": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 32}, "maxItems": 20},
            "recurrence": {
                "type": ["object", "null"],
                "required": ["rule", "from"],
                "properties": {"rule": {"type": "string"}, "from": {"enum": ["due", "completion"]}},
                "additionalProperties": False,
            },
            "time_zone": {"type": "string"},
            "reminders": {
                "type": "array",
                "maxItems": 5,
                "items": {
                    "oneOf": [
                        {"type": "object", "required": ["minutes_before"], "properties": {"minutes_before": {"type": "integer"}},
                         "additionalProperties": False},
                        {"type": "object", "required": ["at"], "properties": {"at": TIMESTAMP}, "additionalProperties": False},
                    ]
                },
            },
            "series_id": {"type": ["integer", "null"]},
            "next_id": {"type": ["integer", "null"]},
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
        },
        "additionalProperties": False,
    },
    "AccessToken": {
        "type": "object",
        "required": ["access_token", "token_type", "expires_in", "user"],
        "properties": {
            "access_token": {"type": "string"},
            "token_type": {"const": "Bearer"},
            "expires_in": {"type": "integer"},
            "user": {
                "type": "object",
                "required": ["id", "email"],
                "properties": {"id": ID, "email": {"type": "string"}},
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
    "JWKS": {
        "type": "object",
        "required": ["keys"],
        "properties": {"keys": {"type": "array", "items": {"type": "object", "required": ["kty", "kid"], "not": {"required": ["d"]}}}},
    },
    "Tombstone": {
        "type": "object",
        "required": ["id", "deleted", "deleted_at"],
        "properties": {"id": ID, "deleted": {"const": True}, "deleted_at": TIMESTAMP},
        "additionalProperties": False,
    },
    "Changes": {
        "type": "object",
        "required": ["changes", "cursor", "has_more"],
        "properties": {
            "changes": {"type": "array", "items": {"anyOf": [{"$ref": "#/components/schemas/Task"}, {"$ref": "#/components/schemas/Tombstone"}]}},
            "cursor": {"type": "string", "maxLength": 200, "pattern": "^[A-Za-z0-9._~-]+$"},
            "has_more": {"type": "boolean"},
        },
        "additionalProperties": False,
    },
    "Ticket": {
        "type": "object",
        "required": ["ticket", "expires_in"],
        "properties": {"ticket": {"type": "string"}, "expires_in": {"type": "integer", "maximum": 60}},
        "additionalProperties": False,
    },
    "TagCount": {
        "type": "object",
        "required": ["tag", "count"],
        "properties": {"tag": {"type": "string"}, "count": {"type": "integer", "minimum": 1}},
        "additionalProperties": False,
    },
    "Status": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
    "ProtectedResource": {
        "type": "object",
        "description": "OAuth 2.0 Protected Resource Metadata (RFC 9728)",
        "required": ["resource", "authorization_servers"],
        "properties": {
            "resource": {"type": "string", "format": "uri"},
            "authorization_servers": {"type": "array", "items": {"type": "string"}},
            "bearer_methods_supported": {"type": "array", "items": {"type": "string"}},
            "resource_signing_alg_values_supported": {"type": "array", "items": {"type": "string"}},
            "resource_name": {"type": "string"},
        },
    },
    "JsonRpcResponse": {
        "type": "object",
        "description": "A JSON-RPC 2.0 response: result or error (MCP; the tools are listed by tools/list)",
        "required": ["jsonrpc"],
        "properties": {"jsonrpc": {"const": "2.0"}, "id": {"type": ["integer", "string", "null"]}, "result": {}, "error": {"type": "object"}},
    },
    "Problem": {
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["field", "message"],
                    "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                },
            },
        },
    },
}
# One server-sent event, as a client's parser hands it over; `data` is JSON text.
EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "event": {"enum": ["ready", "change", "reminder", "resync", "expired"]},
        "id": {"type": "string", "maxLength": 200},
        "data": {"type": "string"},
        "retry": {"type": "integer"},
    },
}
ERROR_MEANINGS = {
    400: "The body or query is not valid",
    401: "No access token, or an invalid or expired one",
    403: "The path names another user than the token (at /mcp: an Origin outside CORS_ORIGINS)",
    404: "No such task or user for the caller",
    409: "The email is taken",
    410: "The cursor is older than the deletions the feed remembers: sync again without since",
    412: "If-Match names another version of the task; see ETag",
    413: "The body is over 1 MiB",
    422: "This Idempotency-Key was already used with another body",
    429: "Too many attempts; see Retry-After",
    503: "The database is unavailable, or too many sign-ups and logins wait for a hash; see Retry-After",
}
TASK_ERRORS = (401, 403, 404, 503)
BODY_ERRORS = (400, 413)
WRITE_ERRORS = (*BODY_ERRORS, *TASK_ERRORS, 412)

# For each handler: (body schema, success status, success schema, error statuses, signed in).
OPERATIONS = {
    signup: (Signup, 201, "User", (*BODY_ERRORS, 409, 429, 503), False),
    login: (Login, 200, "AccessToken", (*BODY_ERRORS, 401, 429, 503), False),
    signing_keys: (None, 200, "JWKS", (), False),
    me: (None, 200, "User", (401, 404, 503), True),
    list_tasks: (None, 200, {"type": "array", "items": {"$ref": "#/components/schemas/Task"}}, (400, *TASK_ERRORS), True),
    create_task: (TaskFields, 201, "Task", (*BODY_ERRORS, *TASK_ERRORS, 422), True),
    get_task: (None, 200, "Task", TASK_ERRORS, True),
    replace_task: (TaskFields, 200, "Task", WRITE_ERRORS, True),
    update_task: (TaskChanges, 200, "Task", WRITE_ERRORS, True),
    set_completed: (Completion, 200, "Task", WRITE_ERRORS, True),
    delete_task: (None, 204, None, (*TASK_ERRORS, 412), True),
    list_tags: (None, 200, {"type": "array", "items": {"$ref": "#/components/schemas/TagCount"}}, TASK_ERRORS, True),
    list_changes: (None, 200, "Changes", (400, 410, *TASK_ERRORS), True),
    create_ticket: (None, 201, "Ticket", TASK_ERRORS, True),
    events_endpoint: (None, 200, None, (400, 429, *TASK_ERRORS), True),
    healthz: (None, 200, "Status", (), False),
    readyz: (None, 200, "Status", (503,), False),
    openapi: (None, 200, {"type": "object"}, (), False),
    mcp_resource_metadata: (None, 200, "ProtectedResource", (), False),
    resource_metadata_fallback: (None, 200, "ProtectedResource", (), False),
    # The SDK answers a malformed message itself, as a JSON-RPC error; only these are ours.
    mcp_endpoint: (JsonRpcRequest, 200, "JsonRpcResponse", (401, 403), True),
}
TIMESTAMP_PARAMETER = {"type": "string", "format": "date-time"}
QUERY_PARAMETERS = {
    list_tasks: [
        {"name": "completed", "in": "query", "schema": {"type": "boolean"}},
        {"name": "priority", "in": "query", "description": "One priority, or several comma-separated: high,medium",
         "schema": {"type": "string", "pattern": "^(low|medium|high)(,(low|medium|high))*$"}},
        {"name": "tag", "in": "query", "description": "Repeat for tasks that carry every one of them", "explode": True,
         "schema": {"type": "array", "items": {"type": "string", "pattern": TAG_PATTERN}}},
        {"name": "q", "in": "query", "description": "Found case-insensitively in the title or the description",
         "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NO_NUL_PATTERN}},
        {"name": "due_after", "in": "query", "description": "due_at on or after this moment", "schema": TIMESTAMP_PARAMETER},
        {"name": "due_before", "in": "query", "description": "due_at before this moment", "schema": TIMESTAMP_PARAMETER},
        {"name": "overdue", "in": "query", "description": "true: due before now and not completed", "schema": {"type": "boolean"}},
        {"name": "sort", "in": "query", "description": "- in front for descending; ties by id; no due_at last",
         "schema": {"enum": list(SORT_ORDERS), "default": "-created_at"}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 100}},
        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 10**18 - 1, "default": 0}},
    ],
    create_task: [
        {"name": "Idempotency-Key", "in": "header", "description": "Retried within 24 h with the same body: the same task, nothing created",
         "schema": {"type": "string", "pattern": '^([\\x21\\x23-\\x7e]{1,255}|"[\\x21\\x23-\\x7e]{1,255}")$'}},
    ],
    get_task: [{"name": "If-None-Match", "in": "header", "description": "304 when it names the current ETag", "schema": {"type": "string"}}],
    list_changes: [
        {"name": "since", "in": "query", "description": "A cursor from an earlier answer; omitted: every task that exists now",
         "schema": {"type": "string", "pattern": CURSOR_TEXT}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 100}},
    ],
    events_endpoint: [
        {"name": "since", "in": "query", "description": "A cursor (an event id) to resume after", "schema": {"type": "string", "pattern": CURSOR_TEXT}},
        {"name": "ticket", "in": "query", "description": "Instead of the Authorization header: a ticket from POST …/events/tickets",
         "schema": {"type": "string"}},
        {"name": "Last-Event-ID", "in": "header", "description": "As EventSource sends it when it reconnects", "schema": {"type": "string", "pattern": CURSOR_TEXT}},
    ],
    **{
        write: [{"name": "If-Match", "in": "header", "description": "412 unless it names the current ETag, or *", "schema": {"type": "string"}}]
        for write in (replace_task, update_task, set_completed, delete_task)
    },
}
ETAG_HEADER = {"ETag": {"description": "The task's version, for If-Match and If-None-Match", "schema": {"type": "string"}}}
LOCATION_HEADER = {"Location": {"description": "Where the new resource is", "schema": {"type": "string"}}}
RETRY_AFTER_HEADER = {"Retry-After": {"description": "Seconds to wait before trying again", "schema": {"type": "integer"}}}
LIST_HEADERS = {
    "X-Total-Count": {"description": "Tasks matching the filters, before limit and offset", "schema": {"type": "integer"}},
    "Link": {"description": 'The next page, <…>; rel="next", when more follow', "schema": {"type": "string"}},
}


def openapi_document(routes: list[Route]) -> dict:
    def schema_ref(schema):
        return {"$ref": f"#/components/schemas/{schema}"} if isinstance(schema, str) else schema

    paths: dict = {}
    schemas = dict(RESPONSE_SCHEMAS)
    for route in routes:
        body_schema, status, success, errors, signed_in = OPERATIONS[route.endpoint]
        path = route.path_format
        operation = {"operationId": route.endpoint.__name__, "summary": route.endpoint.__doc__.strip().split("\n\n")[0], "responses": {}}
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": ID} for name in re.findall(r"{(\w+)}", path)
        ]
        parameters += QUERY_PARAMETERS.get(route.endpoint, [])
        if parameters:
            operation["parameters"] = parameters
        if body_schema is not None:
            # Nested models (Recurrence, the reminders) as components of their own: Pydantic's
            # `#/$defs/...` refs resolve nowhere in an OpenAPI document.
            schema = body_schema.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[body_schema.__name__] = schema
            content = {"application/json": {"schema": schema_ref(body_schema.__name__)}}
            operation["requestBody"] = {"required": True, "content": content}
        success_response = {"description": HTTPStatus(status).phrase}
        if success is not None:
            success_response["content"] = {"application/json": {"schema": schema_ref(success)}}
        if success == "Task":
            success_response["headers"] = {**ETAG_HEADER, **(LOCATION_HEADER if status == 201 else {})}
        if route.endpoint is signup:
            success_response["headers"] = LOCATION_HEADER
        if route.endpoint is list_tasks:
            success_response["headers"] = {**LIST_HEADERS, "ETag": {"description": "Weak: changes whenever any task changes",
                                                                    "schema": {"type": "string"}}}
            operation["responses"]["304"] = {"description": "If-None-Match names the list's current ETag"}
        if route.endpoint is events_endpoint:
            success_response["content"] = {"text/event-stream": {"schema": EVENT_SCHEMA}}
        operation["responses"][str(status)] = success_response
        if route.endpoint is get_task:
            operation["responses"]["304"] = {"description": "If-None-Match names the current ETag", "headers": ETAG_HEADER}
        for error in errors:
            content = {"application/problem+json": {"schema": schema_ref("Problem")}}
            operation["responses"][str(error)] = {"description": ERROR_MEANINGS[error], "content": content}
            if error in (429, 503):
                operation["responses"][str(error)]["headers"] = RETRY_AFTER_HEADER
        if signed_in:
            operation["security"] = [{"bearer": []}]
        for method in route.methods - {"HEAD"}:
            paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "todo-backend", "version": "1.0.0"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


# ---------------------------------------------------------------------------------------
# Routes: the whole API.
# ---------------------------------------------------------------------------------------


class IdConvertor(Convertor):
    """Path ids: digits, at most 19 of them (a longer number is no route, 404, never an overflow)."""

    regex = "[0-9]{1,19}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("id", IdConvertor())


# Routes behind the authentication middleware need a caller; the others never read a token.
SIGNED_IN = [Middleware(signed_in)]

routes = [
    Route("/api/auth/signup", signup, methods=["POST"]),
    Route("/api/auth/login", login, methods=["POST"]),
    Route("/api/auth/jwks", signing_keys, methods=["GET"]),
    Route("/api/me", me, methods=["GET"], middleware=SIGNED_IN),
    Route("/api/{user_id:id}/tasks", list_tasks, methods=["GET"], middleware=SIGNED_IN),
    Route("/api/{user_id:id}/tasks", create_task, methods=["POST"], middleware=SIGNED_IN),
    Route("/api/{user_id:id}/tasks/{task_id:id}", get_task, methods=["GET"], middleware=SIGNED_IN),
    Route("/api/{user_id:id}/tasks/{task_id:id}", replace_task, methods=["PUT"], middleware=SIGNED_IN),
    Route("/api/{user_id:id}/tasks/{task_id:id}", update_task, methods=["PATCH"], middleware=SIGNED_IN),
    Route("/api/{user_id:id}/tasks/{task_id:id}", delete_task, methods=["DELETE"], middleware=SIGNED_IN),
    Route("/api/{user_id:id}/tasks/{task_id:id}/complete", set_completed, methods=["PATCH"], middleware=SIGNED_IN),
    Route("/api/{user_id:id}/tags", list_tags, methods=["GET"], middleware=SIGNED_IN),
    Route("/api/{user_id:id}/changes", list_changes, methods=["GET"], middleware=SIGNED_IN),
    Route("/api/{user_id:id}/events/tickets", create_ticket, methods=["POST"], middleware=SIGNED_IN),
    Route("/api/{user_id:id}/events", events_endpoint, methods=["GET"], middleware=[Middleware(signed_in_or_ticket)]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/.well-known/oauth-protected-resource/mcp", mcp_resource_metadata, methods=["GET"]),
    Route("/.well-known/oauth-protected-resource", resource_metadata_fallback, methods=["GET"]),
    # POST only: a GET would open the SDK's event stream, which nothing here sends on (the
    # tools answer in their POST) and which would hold up shutdown; 405 tells a client so.
    Route("/mcp", mcp_endpoint, methods=["POST"], middleware=[Middleware(mcp_guard)]),
]

OPENAPI_DOCUMENT = openapi_document(routes)

# ---------------------------------------------------------------------------------------
# The app.
# ---------------------------------------------------------------------------------------


@asynccontextmanager
async def lifespan(app):
    if not JWT_PRIVATE_KEY:
        log.warning("JWT_PRIVATE_KEY is not set: login tokens are signed with a key made for this process only")
    try:
        if not IS_POSTGRES:
            # Opened here first: when the file cannot be opened, aiosqlite's worker thread
            # outlives the event loop and prints a traceback of its own.
            sqlite3.connect(database.url.database).close()
        await database.connect()  # on PostgreSQL, the pool's first connection
        if not IS_POSTGRES:
            await run("use_write_ahead_log")
    except DATABASE_UNAVAILABLE as exc:
        raise SystemExit(f"todo-backend: DATABASE_URL: cannot reach the database ({type(exc).__name__}: {exc})") from None
    # Past this point the database answers: a failure is a fault to read in its traceback (a
    # table in the way, a migration that does not apply), not a database to wait for.
    await apply_migrations()
    global feed_secret
    feed_secret = (await run("get_feed_secret"))["secret"].encode()
    if JWKS_URL:
        await fetch_jwks()
        if not jwks_cache["keys"]:
            jwks_cache["fetched_at"] = -math.inf  # Better Auth was not up yet: let the first token fetch again
    chores = []
    if JWKS_URL:
        chores.append(asyncio.create_task(refresh_jwks_forever()))
    if IS_POSTGRES:
        chores.append(asyncio.create_task(delete_expired_rate_limits_forever()))
        chores.append(asyncio.create_task(listen_forever()))
    chores.append(asyncio.create_task(repeat(prune_feed, 600, at_once=True)))
    chores.append(asyncio.create_task(repeat(refresh_streams, EVENTS_HEARTBEAT_SECONDS)))
    chores.append(asyncio.create_task(repeat(fire_due_reminders, 1)))
    if REMINDER_WEBHOOK_URL:
        chores.append(asyncio.create_task(repeat(deliver_webhooks, 1)))
    # What exists now lives as long as the process: a full garbage collection that walks it
    # all again pauses every request in flight for tens of milliseconds.
    gc.freeze()
    try:
        async with mcp_server.session_manager.run():  # a mounted app's own lifespan never runs
            yield
    finally:
        end_streams()
        for chore in chores:
            chore.cancel()
        await asyncio.gather(*chores, return_exceptions=True)
        await jwks_client.aclose()
        await webhook_client.aclose()
        # The pool's close waits for every connection to come back: one that a database outage
        # left checked out would hold the exit up until a platform's kill. The process is
        # ending; its sockets close with it.
        try:
            async with asyncio.timeout(3):
                await database.disconnect()
        except TimeoutError:
            log.warning("the database pool did not close within 3 s; exiting without it")


app = Starlette(
    routes=routes,
    middleware=[
        Middleware(request_log),
        Middleware(body_deadline),
        Middleware(cors),
    ],
    exception_handlers={
        ProblemError: problem_response,
        HTTPException: http_error,
        ClientDisconnect: client_gone,
        BodyTimeout: body_timeout,
        **{cause: database_unavailable for cause in DATABASE_UNAVAILABLE},
        Exception: server_error,
    },
    lifespan=lifespan,
)
# A path with a trailing slash is no route (404): Starlette's redirect to the other spelling
# would be built from the Host header, which the client writes.
app.router.redirect_slashes = False


def main() -> None:
    # After its graceful shutdown uvicorn raises the SIGTERM it caught again, under the handler
    # that was there before it: make that a clean exit, so a platform's stop ends with status 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    uvicorn.run(
        app,
        host=HOST,
        port=PORT,
        log_level=LOG_LEVEL,
        log_config=None,
        access_log=False,  # request_log writes the one line per request
        proxy_headers=bool(TRUSTED_PROXIES),
        forwarded_allow_ips=TRUSTED_PROXIES or None,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        http=ReadDeadlines,
        # ReadDeadlines keeps the connections at MAX_CONNECTIONS. uvicorn counts the one asking
        # too and refuses at its limit, so one more: a backstop (requests still running after
        # their connection closed), never a second, lower cap that would 503 the last one.
        limit_concurrency=MAX_CONNECTIONS + 1,
    )


if __name__ == "__main__":
    main()
