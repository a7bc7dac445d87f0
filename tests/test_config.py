"""Configuration: a zero-config start, .env files, and one clear line for a bad setting or an unreachable database."""

import json
import os
import re
import subprocess
import sys

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import ROOT, database_for, execute_sql, free_port, private_key_pem, public_jwk, running_service

SETTINGS = sorted(set(re.findall(r'setting\("([A-Z_]+)"', (ROOT / "todo_service.py").read_text())))


def clean_environment(**variables) -> dict:
    """The machine's environment without any of the service's settings, plus these."""
    env = {name: value for name, value in os.environ.items() if name not in SETTINGS}
    return {**env, **variables}


def test_the_service_starts_with_no_configuration_on_a_sqlite_file(tmp_path):
    env = clean_environment(PORT=str(free_port()))
    with running_service(env, tmp_path / "service.log") as service:
        response = httpx.post(f"{service.url}/api/auth/signup", json={"email": "zero@example.com", "password": "zero-config"})
        assert response.status_code == 201
    assert (tmp_path / "todo.db").exists()
    assert "JWT_PRIVATE_KEY is not set" in service.log()


def test_the_service_reads_a_dotenv_file_beside_where_it_runs(tmp_path):
    (tmp_path / ".env").write_text(f"DATABASE_URL=sqlite:///{tmp_path}/from-dotenv.db\n")
    env = clean_environment(PORT=str(free_port()))
    with running_service(env, tmp_path / "service.log"):
        pass
    assert (tmp_path / "from-dotenv.db").exists()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("DATABASE_URL", "mysql://localhost/todo"),
        ("DATABASE_URL", "postgresql://localhost/todo?sslmode=required&foo=bar"),
        ("JWKS_URL", "http://auth.example.com/api/auth/jwks"),
        ("JWKS_URL", "ftp://example.com/jwks"),
        ("JWT_ALGORITHMS", "HS256"),
        ("JWT_ALGORITHMS", "none"),
        ("JWT_ALGORITHMS", "RS256"),
        ("JWT_PRIVATE_KEY", "not a key"),
        ("ACCESS_TOKEN_TTL", "0"),
        ("CORS_ORIGINS", "localhost:3000"),
        ("RATE_LIMIT_LOGIN", "fast"),
        ("RATE_LIMIT_SIGNUP", "0/minute"),
        ("LOG_LEVEL", "loud"),
        ("DATABASE_POOL_SIZE", "0"),
        ("MCP_RESOURCE", "ftp://api.example.com/mcp"),
        ("MCP_RESOURCE", "https://api.example.com/mcp#tools"),
        ("MCP_AUTHORIZATION_SERVER", "auth.example.com"),
    ],
    ids=lambda value: value if len(value) < 30 else value[:30],
)
def test_an_invalid_setting_stops_start_up_with_one_line_naming_it(tmp_path, variable, value):
    env = clean_environment(**{variable: value})
    result = subprocess.run(
        [sys.executable, str(ROOT / "todo_service.py")], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"todo-backend: invalid configuration: {variable}")
    assert "Traceback" not in result.stderr


def test_an_mcp_resource_equal_to_the_api_audience_stops_start_up(tmp_path):
    """Else an API token would pass at /mcp and an MCP token on the API."""
    env = clean_environment(JWT_AUDIENCE="https://api.example.com/mcp", MCP_RESOURCE="https://api.example.com/mcp")
    result = subprocess.run([sys.executable, str(ROOT / "todo_service.py")], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert result.stderr.strip().startswith("todo-backend: invalid configuration: MCP_RESOURCE must differ from JWT_AUDIENCE")


def test_jwks_url_without_issuer_and_audience_stops_start_up(tmp_path):
    env = clean_environment(JWKS_URL="https://auth.example.com/api/auth/jwks")
    result = subprocess.run([sys.executable, str(ROOT / "todo_service.py")], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert result.stderr.strip() == "todo-backend: invalid configuration: JWT_ISSUER and JWT_AUDIENCE are required when JWKS_URL is set"


def failed_start_up(env: dict, directory) -> list[dict]:
    """The JSON lines of a start-up that must fail."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "todo_service.py")], env=env, cwd=directory, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0, result.stderr
    return [json.loads(line) for line in result.stderr.splitlines()]


def test_a_database_that_cannot_be_reached_stops_start_up_with_one_line_and_no_traceback(backend, tmp_path):
    nowhere = {"sqlite": f"sqlite:///{tmp_path}/no such folder/todo.db", "postgresql": f"postgresql://postgres@127.0.0.1:{free_port()}/todo"}
    url = nowhere[backend]
    lines = failed_start_up(clean_environment(DATABASE_URL=url, PORT=str(free_port())), tmp_path)
    errors = [line["message"] for line in lines if line["level"] == "error"]
    assert errors[0].startswith("todo-backend: DATABASE_URL: cannot reach the database (")
    assert not [line for line in lines if "Traceback" in line["message"]]


def test_a_start_up_that_fails_on_anything_else_logs_its_traceback_once(backend, tmp_path):
    with database_for(backend, tmp_path) as url:
        execute_sql(url, "CREATE TABLE users (name TEXT)")  # in the way of the first schema file
        lines = failed_start_up(clean_environment(DATABASE_URL=url, PORT=str(free_port())), tmp_path)
    tracebacks = [line for line in lines if "Traceback" in line["message"]]
    assert len(tracebacks) == 1
    assert tracebacks[0]["level"] == "error"
    assert "in apply_migrations" in tracebacks[0]["message"]
    assert "already exists" in tracebacks[0]["message"].splitlines()[-1]
    assert "cannot reach the database" not in json.dumps(lines)


def test_an_ed25519_private_key_from_the_environment_signs_the_login_tokens(tmp_path):
    key = Ed25519PrivateKey.generate()
    env = clean_environment(PORT=str(free_port()), JWT_PRIVATE_KEY=private_key_pem(key))
    with running_service(env, tmp_path / "service.log") as service:
        [published] = httpx.get(f"{service.url}/api/auth/jwks").json()["keys"]
    assert published["x"] == public_jwk(key, "")["x"]
    assert "JWT_PRIVATE_KEY is not set" not in service.log()


@pytest.mark.parametrize("document", [".env.example", "README.md"])
def test_every_setting_is_documented(document):
    text = (ROOT / document).read_text()
    missing = [name for name in SETTINGS if name not in text]
    assert missing == []
