#!/usr/bin/env bash
# The benchmark, in one command: bash bench/run.sh
#
# Installs wrk if missing (Debian's package), makes sure PostgreSQL is up, creates a fresh
# database, starts the service on it with the project's locked dependencies, seeds 1,000
# users with 20 tasks each, and drives each route with wrk at 32 connections, rotating over
# one valid token per user: list, get one, create, PATCH, complete, signup. The list request
# also goes to bench/baseline.py (a bare Starlette + PyJWT + asyncpg route with the same
# uvicorn settings), in alternating rounds so that a noisy neighbour hits both alike; the
# table takes each side's median round. Then list latency while signups run at full speed.
# The service runs at its default LOG_LEVEL (info): it writes its line per request, as in
# production. Prints the table (bench/report.py) and exits 1 if any request failed.
#
# Load goes to 127.0.0.1 only; every process started here is stopped on exit, even on
# failure. Settings (environment, all optional):
#   BENCH_DURATION=10 BENCH_WARMUP=2      seconds measured, and of warm-up, per route
#   BENCH_ROUNDS=3                        alternating list rounds, service and baseline
#   BENCH_SIGNUP_DURATION=30              seconds measured for signup alone (each takes seconds)
#   BENCH_CONNECTIONS=32                  wrk connections per route
#   BENCH_WRK_THREADS=1                   one wrk thread leaves the cores to the service
#   BENCH_USERS=1000 BENCH_TASKS=20       seeded users and tasks per user
#   BENCH_PORT=18000 BENCH_BASELINE_PORT=18001
#   BENCH_DATABASE=todo_bench             dropped and created anew (on 127.0.0.1:5432, user postgres)
#   BENCH_OUT=/tmp/todo-bench.XXXX        where wrk's output and results.json go
#   BENCH_SERVICE_DIR=<repo>              a directory holding a todo_service.py and its sql/,
#   BENCH_PYTHON=<uv's interpreter>       and the Python to run it and the baseline with:
#                                         for measuring a variant of the service
#   BENCH_KEEP_DATABASE=1                 keep the database after the run
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
SERVICE_DIR=$(cd "${BENCH_SERVICE_DIR:-$ROOT}" && pwd)
DURATION=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-3}
SIGNUP_DURATION=${BENCH_SIGNUP_DURATION:-30}
WARMUP=${BENCH_WARMUP:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
WRK_THREADS=${BENCH_WRK_THREADS:-1}
USERS=${BENCH_USERS:-1000}
TASKS=${BENCH_TASKS:-20}
PORT=${BENCH_PORT:-18000}
BASELINE_PORT=${BENCH_BASELINE_PORT:-18001}
DATABASE=${BENCH_DATABASE:-todo_bench}
OUT=${BENCH_OUT:-$(mktemp -d /tmp/todo-bench.XXXXXX)}
mkdir -p "$OUT"
ROWS=$OUT/rows.txt
RUN_ID=$(date +%s)-$$
DATABASE_URL=postgresql://postgres@127.0.0.1:5432/$DATABASE
export UV_PYTHON_DOWNLOADS=never PATH="$HOME/.local/bin:$PATH"

say() { printf '== %s\n' "$*"; }

# --- Every process started here is stopped on exit ---------------------------------------
PIDS=()
cleanup() {
    local status=$?
    trap - EXIT
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ -z "${BENCH_KEEP_DATABASE:-}" && -n "${DATABASE_CREATED:-}" ]]; then
        psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $DATABASE WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- What it needs ------------------------------------------------------------------------
if ! command -v wrk >/dev/null; then
    say "installing wrk (Debian package)"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null
fi
if ! command -v uv >/dev/null; then
    python3 -m pip install --quiet --user uv
fi
if [[ -n "${BENCH_PYTHON:-}" ]]; then
    PY=$BENCH_PYTHON
else
    # The project's locked dependencies, as `uv run` gives them; the interpreter is then
    # started directly so that its pid is the service's own (for RSS and for stopping it).
    PY=$(cd "$ROOT" && uv run --locked python -c 'import sys; print(sys.executable)')
fi

if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    say "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
fi
for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
pg_isready -h 127.0.0.1 -p 5432 -q

for port in "$PORT" "$BASELINE_PORT"; do
    if [[ -n "$(ss -ltnH "sport = :$port")" ]]; then
        echo "bench: port $port is taken; set BENCH_PORT / BENCH_BASELINE_PORT" >&2
        exit 1
    fi
done

psql -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -qc "DROP DATABASE IF EXISTS $DATABASE WITH (FORCE)" -c "CREATE DATABASE $DATABASE" >/dev/null
DATABASE_CREATED=1

# A signing key made for this run: the service signs and verifies with it under its own
# kid, and bench/seed.py mints the users' tokens with it.
JWT_PRIVATE_KEY=$("$PY" -c '
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
print(Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode())')

# A clean environment: no .env (the service reads one from its working directory, so it
# starts in $OUT) and no setting leaking in from the caller's shell.
service_env=(
    env -i PATH="$PATH" HOME="$HOME" LANG=C.UTF-8
    DATABASE_URL="$DATABASE_URL" HOST=127.0.0.1 LOG_LEVEL=info
    JWT_PRIVATE_KEY="$JWT_PRIVATE_KEY" JWT_ISSUER=todo-backend JWT_AUDIENCE=todo-backend
    RATE_LIMIT_SIGNUP=999999999/second RATE_LIMIT_LOGIN=999999999/second RATE_LIMIT_LOGIN_EMAIL=999999999/second
)

wait_for() { # url, pid, what
    for _ in $(seq 1 60); do
        kill -0 "$2" 2>/dev/null || { echo "bench: $3 exited during startup; see $OUT/$3.log" >&2; exit 1; }
        [[ "$(curl -s -o /dev/null -w '%{http_code}' "${@:4}" "$1" || true)" == 200 ]] && return 0
        sleep 0.5
    done
    echo "bench: $3 did not answer 200 at $1; see $OUT/$3.log" >&2
    exit 1
}

# --- The service --------------------------------------------------------------------------
say "service: $SERVICE_DIR/todo_service.py on 127.0.0.1:$PORT, LOG_LEVEL=info (a log line per request, to $OUT/service.log)"
(cd "$OUT" && exec "${service_env[@]}" PORT="$PORT" "$PY" "$SERVICE_DIR/todo_service.py") >"$OUT/service.log" 2>&1 &
SERVICE_PID=$!
PIDS+=("$SERVICE_PID")
wait_for "http://127.0.0.1:$PORT/readyz" "$SERVICE_PID" service

say "seeding $USERS users x $TASKS tasks"
JWT_PRIVATE_KEY="$JWT_PRIVATE_KEY" JWT_ISSUER=todo-backend JWT_AUDIENCE=todo-backend \
    "$PY" "$BENCH/seed.py" "$DATABASE_URL" "$ROWS" --users "$USERS" --tasks "$TASKS"
read -r FIRST_USER FIRST_TOKEN _ <"$ROWS"
wait_for "http://127.0.0.1:$PORT/api/$FIRST_USER/tasks" "$SERVICE_PID" service -H "Authorization: Bearer $FIRST_TOKEN"

# --- Load ---------------------------------------------------------------------------------
wrk_run() { # phase, port, route, seconds
    wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$4s" --timeout 30s -s "$BENCH/routes.lua" \
        "http://127.0.0.1:$2" -- "$3" "$ROWS" "b$RUN_ID-$1" >"$OUT/$1.txt" 2>&1
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
settle() { # pid: wait (at most 60 s) until it uses under 10% of a core, so no phase inherits
    # the last one's work (wrk stops, but a signup's bcrypt hash already started runs on)
    local before after
    before=$(cpu_ticks "$1")
    for _ in $(seq 1 120); do
        sleep 0.5
        after=$(cpu_ticks "$1")
        (( after - before < 5 )) && return 0
        before=$after
    done
    echo "bench: warning: pid $1 still busy after 60 s" >&2
}
pg_ticks() { # CPU used so far by the PostgreSQL backends serving the benchmark's database
    local total=0 pid
    for pid in $(psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT pid FROM pg_stat_activity WHERE datname = '$DATABASE'"); do
        [[ -r /proc/$pid/stat ]] && total=$((total + $(cpu_ticks "$pid")))
    done
    echo "$total"
}
measure() { # phase, port, route, pid[, seconds]: warm up, then measure with the CPU it costs
    local seconds=${5:-$DURATION} service_before pg_before
    say "$1: $WARMUP s warm-up, $seconds s measured"
    wrk_run "$1-warmup" "$2" "$3" "$WARMUP"
    settle "$4"
    service_before=$(cpu_ticks "$4") pg_before=$(pg_ticks)
    wrk_run "$1" "$2" "$3" "$seconds"
    echo "service_ticks=$(( $(cpu_ticks "$4") - service_before )) pg_ticks=$(( $(pg_ticks) - pg_before )) clk_tck=$(getconf CLK_TCK)" >"$OUT/$1.cpu"
    settle "$4"
}
sql() { psql -h 127.0.0.1 -U postgres -d "$DATABASE" -v ON_ERROR_STOP=1 -qc "$1" >/dev/null; }

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
say "baseline: bench/baseline.py on 127.0.0.1:$BASELINE_PORT, same interpreter and uvicorn settings"
(cd "$OUT" && exec "${service_env[@]}" PORT="$BASELINE_PORT" "$PY" "$BENCH/baseline.py") >"$OUT/baseline.log" 2>&1 &
BASELINE_PID=$!
PIDS+=("$BASELINE_PID")
wait_for "http://127.0.0.1:$BASELINE_PORT/api/$FIRST_USER/tasks" "$BASELINE_PID" baseline -H "Authorization: Bearer $FIRST_TOKEN"
for round in $(seq 1 "$ROUNDS"); do
    measure "list-$round" "$PORT" list "$SERVICE_PID"
    measure "baseline-list-$round" "$BASELINE_PORT" list "$BASELINE_PID"
done
BASELINE_VMHWM=$(awk '/^VmHWM:/ {print $2}' "/proc/$BASELINE_PID/status")
kill -TERM "$BASELINE_PID"
wait "$BASELINE_PID" 2>/dev/null || true

measure get "$PORT" get "$SERVICE_PID"
measure patch "$PORT" patch "$SERVICE_PID"
measure complete "$PORT" complete "$SERVICE_PID"
measure create "$PORT" create "$SERVICE_PID"
sql "DELETE FROM tasks WHERE title = 'bench created'"  # back to 20 tasks a user for the list probes
sql "VACUUM ANALYZE tasks"
measure signup "$PORT" signup "$SERVICE_PID" "$SIGNUP_DURATION"  # longer: a signup takes seconds at 32 connections

say "list p99 idle, then while signups run at full speed ($DURATION s each)"
wrk_run list-idle "$PORT" list "$DURATION"
settle "$SERVICE_PID"
wrk_run signup-under-list "$PORT" signup $((WARMUP + DURATION + 2)) &
SIGNUP_LOAD_PID=$!
PIDS+=("$SIGNUP_LOAD_PID")
sleep "$WARMUP"  # signups reach full speed first
wrk_run list-under-signup "$PORT" list "$DURATION"
wait "$SIGNUP_LOAD_PID"
settle "$SERVICE_PID"

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
SERVICE_VMHWM=$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVICE_PID/status")
SERVICE_VMRSS=$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVICE_PID/status")

# --- The table ----------------------------------------------------------------------------
cat >"$OUT/meta.txt" <<EOF
cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
nproc=$(nproc)
memory=$(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
kernel=Linux $(uname -r)
load_before=$LOAD_BEFORE
load_after=$LOAD_AFTER
python=$("$PY" -V 2>&1)
postgres=PostgreSQL $(psql -h 127.0.0.1 -U postgres -d postgres -tAc 'SHOW server_version' | cut -d' ' -f1)
wrk=$(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)
uvicorn=$("$PY" -c '
import importlib.util as u, importlib.metadata as m
print("uvicorn", m.version("uvicorn") + ",", "uvloop" if u.find_spec("uvloop") else "asyncio loop,", "httptools" if u.find_spec("httptools") else "h11")')
service=$SERVICE_DIR/todo_service.py sha256 $(sha256sum "$SERVICE_DIR/todo_service.py" | cut -c1-12)
log_level=info
rounds=$ROUNDS
connections=$CONNECTIONS
wrk_threads=$WRK_THREADS
duration=$DURATION
signup_duration=$SIGNUP_DURATION
warmup=$WARMUP
users=$USERS
tasks=$TASKS
service_vmhwm_kb=$SERVICE_VMHWM
service_vmrss_kb=$SERVICE_VMRSS
baseline_vmhwm_kb=$BASELINE_VMHWM
EOF
say "results in $OUT (wrk output per phase, service.log, results.json)"
python3 "$BENCH/report.py" "$OUT"
