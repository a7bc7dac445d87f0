"""The container image, without a container engine: the Dockerfile's steps replayed here.

No Docker runs on this machine, so the build stage's commands are read from the Dockerfile
and run as written (`uv sync --locked --no-install-project --no-dev`, the COPY lines, then
`uv sync --locked --no-dev`) into an empty directory, against a copy of Python 3.12 that a
non-root user can reach (as /usr/local is in the image). The runtime stage's ENV, CMD and
HEALTHCHECK are then run from that environment as `nobody`. Also: graceful shutdown on SIGTERM.
"""

import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, free_port, running_service

NOBODY = 65534  # the stand-in for the image's own unprivileged user, when the tests run as root
SERVICE_UID = NOBODY if os.geteuid() == 0 else os.geteuid()
APP = "/app"  # the image's WORKDIR; replayed inside a temporary directory
DEV_ONLY = {"pytest", "hypothesis", "schemathesis", "openapi-spec-validator"}


# ---------------------------------------------------------------------------------------
# Reading the Dockerfile and the .dockerignore
# ---------------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    arguments = {}
    stages: list[list[tuple[str, str]]] = []
    for line in "\n".join(lines).replace("\\\n", " ").splitlines():
        instruction, _, rest = line.strip().partition(" ")
        instruction, rest = instruction.upper(), " ".join(rest.split())
        if not instruction:
            continue
        if instruction == "ARG" and not stages:
            name, _, default = rest.partition("=")
            arguments[name] = default
            continue
        if instruction == "FROM":
            rest = re.sub(r"\$\{(\w+)\}", lambda match: arguments[match[1]], rest)
            stages.append([])
        stages[-1].append((instruction, rest))
    return stages


def arguments_of(stage, instruction: str) -> list[str]:
    return [rest for name, rest in stage if name == instruction]


def image_environment(stage, app: Path) -> dict:
    """The stage's ENV lines, with /app moved to where the replay put it."""
    env = {}
    for rest in arguments_of(stage, "ENV"):
        for assignment in shlex.split(rest):
            name, _, value = assignment.partition("=")
            value = value.replace("$PATH", "/usr/local/bin:/usr/bin:/bin")
            env[name] = re.sub(rf"{APP}(?=/|:|$)", str(app), value)
    return env


def exec_form(rest: str) -> list[str]:
    command = json.loads(rest)
    assert isinstance(command, list) and all(isinstance(part, str) for part in command), rest
    return command


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` out of the build context (its rules: a match on the path or
    on a folder above it excludes it; the last matching pattern wins; `!` re-includes)."""

    def regex(pattern: str) -> re.Pattern:
        parts = re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/"))
        glob = {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
        return re.compile("".join(glob.get(part, re.escape(part)) for part in parts))

    names = path.split("/")
    prefixes = ["/".join(names[:count]) for count in range(1, len(names) + 1)]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if any(regex(pattern.lstrip("!")).fullmatch(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


# ---------------------------------------------------------------------------------------
# The Dockerfile and .dockerignore say what the image relies on
# ---------------------------------------------------------------------------------------

BUILD, RUNTIME = 0, -1


@pytest.mark.parametrize(
    ("stage", "instruction", "pattern"),
    [
        (BUILD, "FROM", r"^python:3\.12-slim\S* AS \w+$"),
        (RUNTIME, "FROM", r"^python:3\.12-slim\S*$"),
        (BUILD, "COPY", r"^--from=ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})? /uv "),
        (BUILD, "ENV", r"(^| )UV_COMPILE_BYTECODE=1( |$)"),
        (BUILD, "ENV", r"(^| )UV_LINK_MODE=copy( |$)"),
        (BUILD, "ENV", r"(^| )UV_PYTHON_DOWNLOADS=(0|never)( |$)"),
        (BUILD, "RUN", r"--mount=type=cache,target=/root/\.cache/uv .*--mount=type=bind,source=uv\.lock,target=uv\.lock .*uv sync --locked --no-install-project --no-dev$"),
        (BUILD, "RUN", r"--mount=type=cache,target=/root/\.cache/uv uv sync --locked --no-dev$"),
        (RUNTIME, "ENV", r"(^| )HOST=0\.0\.0\.0( |$)"),
        (RUNTIME, "ENV", r'(^| )PATH="?/app/\.venv/bin:\$PATH"?( |$)'),
        (RUNTIME, "USER", r"^(?!(root|0)(:|$))[a-z_][a-z0-9_-]*$"),
        (RUNTIME, "HEALTHCHECK", r'CMD \[.*/healthz'),
        (RUNTIME, "CMD", r'^\["python", "todo_service\.py"\]$'),
    ],
    ids=[
        "build-on-python-3.12-slim",
        "run-on-python-3.12-slim",
        "pinned-uv",
        "compile-bytecode",
        "link-mode-copy",
        "no-python-downloads",
        "dependencies-from-the-lock-first",
        "then-the-project-locked-no-dev",
        "listen-on-all-interfaces",
        "the-environment-on-path",
        "non-root-user",
        "healthcheck-on-healthz",
        "exec-form-cmd",
    ],
)
def test_the_dockerfile_says(stage, instruction, pattern):
    stages = dockerfile_stages()
    assert len(stages) >= 2, "a multi-stage build"
    found = arguments_of(stages[stage], instruction)
    if instruction in ("USER", "CMD", "FROM"):
        found = found[-1:]  # only the last one counts
    assert any(re.search(pattern, rest) for rest in found), f"{instruction} {pattern!r} not in {found}"


def test_both_stages_are_the_same_python_image_so_the_environment_moves_between_them():
    stages = dockerfile_stages()
    images = [arguments_of(stage, "FROM")[0].split()[0] for stage in (stages[BUILD], stages[RUNTIME])]
    assert images[0] == images[1]


def test_the_runtime_stage_has_no_uv_and_copies_only_the_built_app():
    runtime = dockerfile_stages()[RUNTIME]
    assert arguments_of(runtime, "COPY") == [f"--from={arguments_of(dockerfile_stages()[BUILD], 'FROM')[0].split()[-1]} /app /app"]


def test_the_database_directory_belongs_to_the_images_user():
    runtime = dockerfile_stages()[RUNTIME]
    [user] = arguments_of(runtime, "USER")
    database_url = image_environment(runtime, Path(APP))["DATABASE_URL"]
    directory = str(Path(database_url.removeprefix("sqlite:///")).parent)
    assert any(re.search(rf"install -d -o {user} -g {user} (-m 0?7[0-7]0 )?{re.escape(directory)}( |$)", run) for run in arguments_of(runtime, "RUN"))


@pytest.mark.parametrize("path", [".venv/bin/python", ".env", ".env.production", "tests/test_auth.py", "todo.db", "data/todo.db", ".git/config"])
def test_the_dockerignore_keeps_out(path):
    assert dockerignored(path, dockerignore_patterns())


def test_the_dockerignore_lets_in_every_file_the_dockerfile_copies():
    sources = []
    for rest in arguments_of(dockerfile_stages()[BUILD], "COPY"):
        if not rest.startswith("--"):
            sources += rest.split()[:-1]
    sources += [f"sql/{path.relative_to(ROOT / 'sql')}" for path in (ROOT / "sql").rglob("*.sql")]
    assert "todo_service.py" in sources and "uv.lock" in sources
    assert [source for source in sources if dockerignored(source, dockerignore_patterns())] == []


# ---------------------------------------------------------------------------------------
# The replayed image: a fresh `uv sync --locked --no-dev`, run as nobody
# ---------------------------------------------------------------------------------------


def runtime_python(directory: Path) -> Path:
    """This Python 3.12, copied where a non-root user can run it (pyenv's lives in /root, 0700)."""
    unneeded = {"test", "site-packages", "idlelib", "tkinter", "turtledemo", "ensurepip", "include", "share", "pkgconfig"}

    def ignore(folder, names):
        return [name for name in names if name in unneeded or name.startswith("config-3")]

    shutil.copytree(sys.base_prefix, directory, ignore=ignore, symlinks=True)
    return directory / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"


def replay_build_stage(stage, app: Path, python: Path) -> None:
    """COPY and `uv sync` as the build stage says, in order, with its ENV and bind mounts."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("UV_", "VIRTUAL_ENV"))}
    env.update(image_environment(stage, app), UV_PYTHON=str(python), UV_PROJECT_ENVIRONMENT=str(app / ".venv"))
    for instruction, rest in stage:
        words = shlex.split(rest)
        if instruction == "COPY" and not words[0].startswith("--"):
            *sources, target = words
            for source in sources:
                destination = app / target / (Path(source).name if target.endswith("/") else "")
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, destination)
                else:
                    shutil.copy2(ROOT / source, destination)
        elif instruction == "RUN" and "uv sync" in rest:
            mounts = [dict(item.split("=", 1) for item in word.removeprefix("--mount=").split(",")) for word in words if word.startswith("--mount=")]
            bound = [app / mount["target"] for mount in mounts if mount["type"] == "bind"]
            for mount in mounts:
                if mount["type"] == "bind":
                    shutil.copy2(ROOT / mount["source"], app / mount["target"])
            command = [word for word in words if not word.startswith("--mount=")]
            result = subprocess.run(command, cwd=app, env=env, capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, f"{rest}\n{result.stdout}\n{result.stderr}"
            for path in bound:  # bind mounts are gone after their RUN
                path.unlink()


@pytest.fixture(scope="module")
def image():
    """The app directory as the image holds it, with its runtime environment (ENV, CMD, user)."""
    stages = dockerfile_stages()
    root = Path(tempfile.mkdtemp(prefix="todo-image-"))
    root.chmod(0o755)  # nobody must reach the app (mkdtemp makes it 0700)
    try:
        python = runtime_python(root / "python")
        app = root / "app"
        app.mkdir()
        started = time.monotonic()
        replay_build_stage(stages[BUILD], app, python)
        print(f"fresh uv sync took {time.monotonic() - started:.1f} s")
        env = image_environment(stages[RUNTIME], app)
        data = Path(env["DATABASE_URL"].removeprefix("sqlite:///")).parent
        assert data.is_relative_to(app), f"the image's database should live under {APP}, not {data}"
        data.mkdir(parents=True)
        if os.geteuid() == 0:
            os.chown(data, NOBODY, NOBODY)  # the Dockerfile's `install -d -o todo ... /app/data`
        env.update(
            LANG="C.UTF-8",
            HOME="/nonexistent",
            LD_LIBRARY_PATH=str(python.parent.parent / "lib"),  # the copy's libpython (/usr/local/lib in the image)
            HOST="127.0.0.1",  # as `docker run -e`: this machine is shared, keep the port on loopback
            PORT=str(free_port()),
        )
        as_service_user = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"] if os.geteuid() == 0 else []
        yield {
            "app": app,
            "env": env,
            "cmd": as_service_user + exec_form(arguments_of(stages[RUNTIME], "CMD")[-1]),
            "healthcheck": as_service_user + exec_form(arguments_of(stages[RUNTIME], "HEALTHCHECK")[-1].partition("CMD ")[2]),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def image_service(image):
    with running_service(image["env"], image["app"] / "service.log", command=image["cmd"]) as service:
        yield service


def installed_distributions(python: Path, env: dict) -> set[str]:
    script = "import importlib.metadata as m, json; print(json.dumps([d.metadata['Name'] for d in m.distributions()]))"
    output = subprocess.run([python, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    return {re.sub(r"[-_.]+", "-", name).lower() for name in json.loads(output)}


def locked_runtime_packages() -> set[str]:
    result = subprocess.run(
        ["uv", "export", "--locked", "--no-dev", "--no-hashes", "--no-header", "--no-annotate", "--no-emit-project"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    return {re.split(r"[=<>~!; \[]", line, maxsplit=1)[0].lower() for line in result.stdout.splitlines() if line and not line.startswith(("#", " "))}


def test_the_fresh_environment_holds_only_runtime_packages(image):
    installed = installed_distributions(image["app"] / ".venv" / "bin" / "python", image["env"])
    assert {"starlette", "uvicorn", "bcrypt", "pyjwt", "databases", "asyncpg"} <= installed
    assert installed & DEV_ONLY == set()
    assert installed - locked_runtime_packages() == set()


def test_the_image_command_runs_as_a_non_root_user(image_service):
    status = Path(f"/proc/{image_service.process.pid}/status").read_text()
    [uids] = re.findall(r"^Uid:\s+(.*)$", status, flags=re.MULTILINE)
    assert set(uids.split()) == {str(SERVICE_UID)} and SERVICE_UID != 0


def test_the_image_command_answers_healthz_and_a_signup_with_its_database_in_the_data_directory(image, image_service):
    assert httpx.get(f"{image_service.url}/healthz").json() == {"status": "ok"}
    response = httpx.post(f"{image_service.url}/api/auth/signup", json={"email": "image@example.com", "password": "image-password"})
    assert response.status_code == 201, response.text
    database = Path(image["env"]["DATABASE_URL"].removeprefix("sqlite:///"))
    assert database.stat().st_uid == SERVICE_UID


def test_the_healthcheck_command_passes_while_the_service_answers(image, image_service):
    result = subprocess.run(image["healthcheck"], env=image["env"], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr


def test_the_healthcheck_command_fails_when_nothing_answers(image):
    env = {**image["env"], "PORT": str(free_port())}
    result = subprocess.run(image["healthcheck"], env=env, capture_output=True, text=True, timeout=10)
    assert result.returncode != 0


# ---------------------------------------------------------------------------------------
# Graceful shutdown
# ---------------------------------------------------------------------------------------


def listening(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=0.5).close()
        return True
    except OSError:
        return False


def test_sigterm_lets_an_in_flight_request_finish_then_exits_0(start_service):
    with start_service() as service:
        body = json.dumps({"email": "in.flight@example.com", "password": "in-flight-password"}).encode()
        host, port = service.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.putrequest("POST", "/api/auth/signup")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders()
        connection.send(body[:10])  # the handler has started and waits for the rest of its body
        time.sleep(0.2)
        service.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while listening(service.url) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not listening(service.url), "the service should stop taking connections on SIGTERM"
        assert service.process.poll() is None, "the service must wait for the request in flight"
        connection.send(body[10:])
        response = connection.getresponse()
        assert response.status == 201
        assert json.loads(response.read())["email"] == "in.flight@example.com"
        assert service.process.wait(timeout=30) == 0
