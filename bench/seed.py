"""Seed the benchmark database fast, and write the rows bench/routes.lua rotates over.

The users share one bcrypt hash made once here (hashing 1,000 passwords would take minutes
and measure nothing); the tasks come from one INSERT ... SELECT over generate_series. Then
each user gets an access token signed with JWT_PRIVATE_KEY under the kid the service
derives from it (the RFC 7638 thumbprint), so the service accepts it as one of its own.

    python bench/seed.py DATABASE_URL ROWS_FILE [--users 1000] [--tasks 20]

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

INSERT_USERS = """
INSERT INTO users (email, password_hash)
SELECT 'bench-user-' || n || '@example.com', $1
FROM generate_series(1, $2::int) AS n
"""

INSERT_TASKS = """
INSERT INTO tasks (user_id, title, description, completed)
SELECT users.id, 'Seeded task ' || n, 'Task ' || n || ' of user ' || users.id, n % 4 = 0
FROM users CROSS JOIN generate_series(1, $1::int) AS n
ORDER BY users.id, n
"""

# One task per user for get, PATCH and complete: the user's oldest.
ROWS = """
SELECT users.id AS user_id, min(tasks.id) AS task_id
FROM users JOIN tasks ON tasks.user_id = users.id
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


async def seed(database_url: str, rows_file: str, users: int, tasks: int) -> None:
    private_key = serialization.load_pem_private_key(os.environ["JWT_PRIVATE_KEY"].encode(), password=None)
    kid = kid_of(private_key)
    issuer = os.environ.get("JWT_ISSUER", "todo-backend")
    audience = os.environ.get("JWT_AUDIENCE", "todo-backend")
    password_hash = bcrypt.hashpw(b"bench password 42", bcrypt.gensalt(12)).decode()

    started = time.perf_counter()
    connection = await asyncpg.connect(database_url)
    try:
        async with connection.transaction():
            await connection.execute(INSERT_USERS, password_hash, users)
            await connection.execute(INSERT_TASKS, tasks)
        await connection.execute("ANALYZE users")
        await connection.execute("ANALYZE tasks")
        rows = await connection.fetch(ROWS)
    finally:
        await connection.close()

    now = int(time.time())
    lines = []
    for row in rows:
        claims = {"sub": str(row["user_id"]), "iss": issuer, "aud": audience, "iat": now, "exp": now + TOKEN_LIFETIME_SECONDS}
        token = jwt.encode(claims, private_key, algorithm="EdDSA", headers={"kid": kid})
        lines.append(f"{row['user_id']} {token} {row['task_id']}\n")
    random.Random(42).shuffle(lines)  # consecutive requests go to different users
    with open(rows_file, "w") as out:
        out.writelines(lines)
    print(f"seeded {len(rows)} users x {tasks} tasks and {len(lines)} tokens in {time.perf_counter() - started:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database_url")
    parser.add_argument("rows_file")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(seed(args.database_url, args.rows_file, args.users, args.tasks))


if __name__ == "__main__":
    main()
