"""The least any Python service can do for GET /api/{user_id}/tasks, to measure the service against.

A bare Starlette route: decode the bearer token with PyJWT and the Ed25519 public key on
every request, run the service's own list query (read from sql/tasks.sql) once on a
connection from an asyncpg pool, json-encode the rows. No cache, no middleware, nothing
else. Started with the service's uvicorn settings, so both get the same event loop and
HTTP parser (uvloop and httptools when installed, else asyncio and h11).

Environment: DATABASE_URL, HOST, PORT, LOG_LEVEL, JWT_PRIVATE_KEY (PEM; its public half
verifies), JWT_ISSUER and JWT_AUDIENCE (default todo-backend), DATABASE_POOL_SIZE (10).
"""

import json
import os
import re
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import asyncpg
import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SQL_FILE = Path(__file__).resolve().parent.parent / "sql" / "tasks.sql"
PUBLIC_KEY = serialization.load_pem_private_key(os.environ["JWT_PRIVATE_KEY"].encode(), password=None).public_key()
ISSUER = os.environ.get("JWT_ISSUER", "todo-backend")
AUDIENCE = os.environ.get("JWT_AUDIENCE", "todo-backend")
POOL_SIZE = int(os.environ.get("DATABASE_POOL_SIZE", "10"))


def list_query() -> str:
    """sql/tasks.sql's list_tasks, comments dropped and :names numbered as asyncpg wants them."""
    block = re.split(r"^-- name: ", SQL_FILE.read_text(), flags=re.MULTILINE)
    body = next(b for b in block if b.startswith("list_tasks ")).partition("\n")[2]
    text = "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("--")).strip()
    names = list(dict.fromkeys(re.findall(r"(?<![:\w]):(\w+)", text)))
    assert names == ["user_id", "completed", "limit", "offset"], names
    return re.sub(r"(?<![:\w]):(\w+)", lambda m: f"${names.index(m[1]) + 1}", text)


LIST_TASKS = list_query()
pool: asyncpg.Pool


def encode(value):
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


async def list_tasks(request: Request) -> Response:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    try:
        claims = jwt.decode(
            token, PUBLIC_KEY, algorithms=["EdDSA"], issuer=ISSUER, audience=AUDIENCE,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
    except jwt.InvalidTokenError:
        return Response(status_code=401)
    user_id = request.path_params["user_id"]
    if scheme.lower() != "bearer" or claims["sub"] != str(user_id):
        return Response(status_code=403)
    async with pool.acquire() as connection:
        rows = await connection.fetch(LIST_TASKS, user_id, None, 100, 0)
    body = json.dumps([dict(row) for row in rows], default=encode, ensure_ascii=False, separators=(",", ":"))
    return Response(body, media_type="application/json")


@asynccontextmanager
async def lifespan(app):
    global pool
    pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=1, max_size=POOL_SIZE)
    try:
        yield
    finally:
        await pool.close()


app = Starlette(routes=[Route("/api/{user_id:int}/tasks", list_tasks, methods=["GET"])], lifespan=lifespan)

if __name__ == "__main__":
    # The service's settings in todo_service.main() with TRUSTED_PROXIES unset.
    uvicorn.run(
        app,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8001")),
        log_level=os.environ.get("LOG_LEVEL", "warning"),
        access_log=False,
        proxy_headers=False,
        forwarded_allow_ips=None,
        timeout_graceful_shutdown=20,
    )
