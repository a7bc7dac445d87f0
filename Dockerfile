# syntax=docker/dockerfile:1
# todo-backend as one image (after astral-sh/uv-docker-example's multistage example):
#   docker build -t todo-backend .
#   docker run --rm -p 8000:8000 -e DATABASE_URL=postgresql://… -e JWT_PRIVATE_KEY=… todo-backend
# The build stage turns uv.lock into /app/.venv (runtime dependencies only); the runtime stage
# copies /app onto the same Python image, without uv, and runs it as a non-root user.
# tests/test_deploy.py replays these steps on a machine without Docker.

ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=0
WORKDIR /app

# Dependencies first, from the lock alone: this layer is rebuilt only when they change.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    --mount=type=bind,source=.python-version,target=.python-version \
    uv sync --locked --no-install-project --no-dev

# Then the code, and only the code: .dockerignore keeps the rest out of the context as well.
COPY pyproject.toml uv.lock .python-version todo_service.py ./
COPY sql ./sql
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev

# The same image as the build stage: the virtual environment points at its /usr/local Python.
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 todo \
    && useradd --system --uid 10001 --gid todo --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin todo \
    && install -d -o todo -g todo -m 0750 /app/data
# The code stays root's and read-only to the service; only /app/data (SQLite) is writable.
COPY --from=build /app /app
ENV PATH="/app/.venv/bin:$PATH" \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATABASE_URL=sqlite:////app/data/todo.db
WORKDIR /app
USER todo
EXPOSE 8000

# /healthz touches nothing but the process; slim has no curl, so the image's own Python asks.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + (os.environ.get('PORT') or '8000') + '/healthz', timeout=4)"]

# Exec form: the service is PID 1 and gets the platform's SIGTERM itself, finishes in-flight
# requests and exits 0. It runs uvicorn with X-Forwarded-For believed only from TRUSTED_PROXIES.
CMD ["python", "todo_service.py"]
