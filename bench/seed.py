"""Seed the benchmark database fast, and write the rows bench/routes.lua rotates over.

The users share one bcrypt hash made once here (hashing 1,000 passwords would take minutes
and measure nothing); the tasks come from one INSERT ... SELECT over generate_series, with
the v2 fields spread so that every filter finds something: priority low/medium/high in
turn, a due date on four tasks of five, and tags from a small set (`?priority=high&tag=work`
matches one task in six). One more user, the heavy one, has HEAVY_TASKS tasks made the
same way. Then each user gets an access token signed with JWT_PRIVATE_KEY under the kid the
service derives from it (the RFC 7638 thumbprint), with the backend user id as `sub`: a
token of the service's own, as its login would issue.

    python bench/seed.py DATABASE_URL ROWS_FILE HEAVY_ROWS_FILE [--users 1000] [--tasks 20] [--heavy-tasks 10000]

Every user's password is PASSWORD (bench/abuse.py logs in as bench-user-1@example.com).
Environment: JWT_PRIVATE_KEY (PEM), JWT_ISSUER and JWT_AUDIENCE (default todo-backend).
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import random
import time

import asyncpg
import bcrypt
import jwt
from cryptography.hazmat.primitives import serialization

TOKEN_LIFETIME_SECONDS = 3600  # outlives any run of the benchmark
PASSWORD = "bench password 42"
HEAVY_EMAIL = "bench-heavy@example.com"

INSERT_USERS = """
INSERT INTO users (email, password_hash)
SELECT 'bench-user-' || n || '@example.com', $1
FROM generate_series(1, $2::int) AS n
"""

INSERT_HEAVY_USER = """
INSERT INTO users (email, password_hash) VALUES ($1, $2) RETURNING id
"""

# Task n of a user of `count` tasks: created n minutes after the first (distinct times, so
# the default order, created_at DESC, is not decided by the id alone), priority n % 3 (0 low,
# 1 medium, 2 high, as the service stores it), due n * 7 hours after 2026-12-01 except every
# fifth, tags sorted and lower-case as the service keeps them. `users` limits the owners.
TASK_VALUES = """
SELECT users.id, 'Seeded task ' || n, 'Task ' || n || ' of user ' || users.id, n % 4 = 0,
       (n % 3)::smallint,
       CASE WHEN n % 5 = 0 THEN NULL ELSE timestamptz '2026-12-01 00:00:00+00' + n * interval '7 hours' END,
       (CASE n % 4 WHEN 0 THEN '["work"]' WHEN 1 THEN '["home","shopping"]' WHEN 2 THEN '["urgent","work"]' ELSE '[]' END)::jsonb,
       timestamptz '2026-11-01 00:00:00+00' + n * interval '1 minute',
       timestamptz '2026-11-01 00:00:00+00' + n * interval '1 minute'
FROM users CROSS JOIN generate_series(1, $1::int) AS n
"""
INSERT_TASKS = f"""
INSERT INTO tasks (user_id, title, description, completed, priority, due_at, tags, created_at, updated_at)
{TASK_VALUES}
WHERE users.email LIKE $2
ORDER BY users.id, n
"""

# One task per user for get, PATCH and complete: the user's oldest.
ROWS = """
SELECT users.id AS user_id, min(tasks.id) AS task_id
FROM users JOIN tasks ON tasks.user_id = users.id
WHERE users.email LIKE $1
GROUP BY users.id
ORDER BY users.id
"""


def base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def kid_of(private_key) -> str:
    """The service's kid for this key: the SHA-256 thumbprint of its public JWK (RFC 7638)."""
    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    members = {"crv": "Ed25519", "kty": "OKP", "x": base64url(raw)}
    return base64url(hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest())


async def seed(database_url: str, rows_file: str, heavy_rows_file: str, users: int, tasks: int, heavy_tasks: int) -> None:
    private_key = serialization.load_pem_private_key(os.environ["JWT_PRIVATE_KEY"].encode(), password=None)
    kid = kid_of(private_key)
    issuer = os.environ.get("JWT_ISSUER", "todo-backend")
    audience = os.environ.get("JWT_AUDIENCE", "todo-backend")
    password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(12)).decode()

    started = time.perf_counter()
    connection = await asyncpg.connect(database_url)
    try:
        async with connection.transaction():
            await connection.execute(INSERT_USERS, password_hash, users)
            await connection.execute(INSERT_TASKS, tasks, "bench-user-%")
            await connection.execute(INSERT_HEAVY_USER, HEAVY_EMAIL, password_hash)
            await connection.execute(INSERT_TASKS, heavy_tasks, HEAVY_EMAIL)
        await connection.execute("VACUUM ANALYZE users")
        await connection.execute("VACUUM ANALYZE tasks")
        rows = await connection.fetch(ROWS, "bench-user-%")
        heavy_rows = await connection.fetch(ROWS, HEAVY_EMAIL)
    finally:
        await connection.close()

    now = int(time.time())

    def line(row) -> str:
        claims = {"sub": str(row["user_id"]), "iss": issuer, "aud": audience, "iat": now, "exp": now + TOKEN_LIFETIME_SECONDS}
        token = jwt.encode(claims, private_key, algorithm="EdDSA", headers={"kid": kid})
        return f"{row['user_id']} {token} {row['task_id']}\n"

    lines = [line(row) for row in rows]
    random.Random(42).shuffle(lines)  # consecutive requests go to different users
    with open(rows_file, "w") as out:
        out.writelines(lines)
    with open(heavy_rows_file, "w") as out:
        out.writelines(line(row) for row in heavy_rows)
    print(
        f"seeded {len(rows)} users x {tasks} tasks and one user x {heavy_tasks} tasks, "
        f"with {len(lines) + len(heavy_rows)} tokens, in {time.perf_counter() - started:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database_url")
    parser.add_argument("rows_file")
    parser.add_argument("heavy_rows_file")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--heavy-tasks", type=int, default=10_000)
    args = parser.parse_args()
    asyncio.run(seed(args.database_url, args.rows_file, args.heavy_rows_file, args.users, args.tasks, args.heavy_tasks))


if __name__ == "__main__":
    main()
