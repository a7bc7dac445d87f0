#!/usr/bin/env bash
# Instructions per list request, the service against bench/baseline.py's database-json mode:
#
#   bash bench/instructions.sh        # about 2 minutes; PostgreSQL on 127.0.0.1:5432, installs valgrind if missing
#
# Throughput on a shared machine moves by 10% from run to run; an instruction count does not.
# Each side runs under valgrind's callgrind (instrumented only while measured) on a scratch
# database of 200 users x 20 tasks, answers 200 list requests over 8 keep-alive connections
# to warm up, then BENCH_REQUESTS more while counted. Prints the instructions of the process
# per request (its own, not the kernel's nor PostgreSQL's) and their ratio. The same code
# gives the same count to within a fraction of a percent: compare two versions of the
# service with BENCH_SERVICE_DIR (a directory holding a todo_service.py and its sql/, and
# the bench/baseline.py that answers its page, used when it has one: an older version's
# page lacks fields that this one's baseline reads).
#
# What a process does by the clock (uvicorn's ticks; version 3 also looks for due reminders
# every second) is counted with the requests too, and under valgrind they take tens of times
# longer than outside, so that work weighs far more per request here. Each side is also
# counted idle for BENCH_IDLE_SECONDS, and that idle work's share of a request is printed
# beside its count (instructions per idle second x the seconds the requests took / requests):
# subtract it to compare versions whose idle work differs.
#
#   BENCH_REQUESTS=400   BENCH_PORT=18600   BENCH_DATABASE=todo_instructions   BENCH_SERVICE_DIR=<repo>
#   BENCH_IDLE_SECONDS=10
set -euo pipefail
shopt -s inherit_errexit  # a failing client inside count's $(...) fails the run, not a count

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SERVICE_DIR=$(cd "${BENCH_SERVICE_DIR:-$ROOT}" && pwd)
REQUESTS=${BENCH_REQUESTS:-400}
IDLE_SECONDS=${BENCH_IDLE_SECONDS:-10}
BASELINE_SCRIPT=$ROOT/bench/baseline.py
[[ -f "$SERVICE_DIR/bench/baseline.py" ]] && BASELINE_SCRIPT=$SERVICE_DIR/bench/baseline.py
PORT=${BENCH_PORT:-18600}
DATABASE=${BENCH_DATABASE:-todo_instructions}
DATABASE_URL=postgresql://postgres@127.0.0.1:5432/$DATABASE
OUT=$(mktemp -d /tmp/todo-instructions.XXXXXX)
export UV_PYTHON_DOWNLOADS=never PATH="$HOME/.local/bin:$PATH"

if ! command -v valgrind >/dev/null; then
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind >/dev/null
fi
if ! command -v uv >/dev/null; then
    python3 -m pip install --quiet --user uv
fi
PY=$(cd "$ROOT" && uv run --locked python -c 'import sys; print(sys.executable)')
pg_isready -h 127.0.0.1 -p 5432 -q || pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done

PID=""
cleanup() {
    [[ -n "$PID" ]] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $DATABASE WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

JWT_PRIVATE_KEY=$("$PY" -c '
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
print(Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode())')

# vgdb, through which callgrind_control switches the counting on, finds the process by its
# user and by $HOST, which the service reads as its address: both sides get the same.
run_env=(
    env -i PATH="$PATH" HOME="$HOME" LANG=C.UTF-8 USER=root LOGNAME=root PYTHONHASHSEED=0
    DATABASE_URL="$DATABASE_URL" HOST=127.0.0.1 PORT="$PORT" LOG_LEVEL=info
    JWT_PRIVATE_KEY="$JWT_PRIVATE_KEY" JWT_ISSUER=todo-backend JWT_AUDIENCE=todo-backend
)
control() { HOST=127.0.0.1 USER=root LOGNAME=root callgrind_control "$@" "$PID" >/dev/null 2>&1; }

count() { # name, script, [BASELINE_MODE=...]: instructions per request of that process
    local name=$1 script=$2
    (cd "$OUT" && exec "${run_env[@]}" "${@:3}" valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$OUT/$name.callgrind" "$PY" "$script") >"$OUT/$name.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 300); do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/api/$FIRST_USER/tasks" -H "Authorization: Bearer $FIRST_TOKEN" || true)" == 200 ]] && break
        kill -0 "$PID" 2>/dev/null || { echo "bench: $name exited; see $OUT/$name.log" >&2; exit 1; }
        sleep 0.5
    done
    "$PY" "$OUT/client.py" "$PORT" 200 "$OUT/rows.txt"
    control -i on
    local started=$EPOCHREALTIME
    "$PY" "$OUT/client.py" "$PORT" "$REQUESTS" "$OUT/rows.txt"
    control -i off
    local took
    took=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN {print b - a}')
    control -d  # part 1: the requests
    control -i on
    sleep "$IDLE_SECONDS"
    control -i off
    control -d  # part 2: idle
    kill -TERM "$PID"
    wait "$PID" 2>/dev/null || true
    PID=""
    local busy idle
    busy=$(awk '/^totals:/ {print $2}' "$OUT/$name.callgrind.1")
    idle=$(awk '/^totals:/ {print $2}' "$OUT/$name.callgrind.2")
    awk -v n="$REQUESTS" -v busy="$busy" -v idle="$idle" -v s="$IDLE_SECONDS" -v took="$took" \
        'BEGIN {printf "%d %d %.1f\n", busy / n, idle / s * took / n, took}'
}

cat >"$OUT/client.py" <<'EOF'
import asyncio
import sys

import httpx

port, count, rows_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rows = [line.split() for line in open(rows_file)]


async def lane(client, start):
    for i in range(count // 8):
        user, token, _ = rows[(start + i) % len(rows)]
        response = await client.get(f"/api/{user}/tasks", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text


async def main():
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=httpx.Limits(max_connections=8)) as client:
        await asyncio.gather(*(lane(client, k * 25) for k in range(8)))


asyncio.run(main())
EOF

psql -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -qc "DROP DATABASE IF EXISTS $DATABASE WITH (FORCE)" -c "CREATE DATABASE $DATABASE" >/dev/null
# The service makes the schema at its first start (not counted), then the rows are seeded.
(cd "$OUT" && exec "${run_env[@]}" "$PY" "$SERVICE_DIR/todo_service.py") >"$OUT/schema.log" 2>&1 &
PID=$!
for _ in $(seq 1 60); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.5; done
kill -TERM "$PID"
wait "$PID" 2>/dev/null || true
PID=""
JWT_PRIVATE_KEY="$JWT_PRIVATE_KEY" "$PY" "$ROOT/bench/seed.py" "$DATABASE_URL" "$OUT/rows.txt" "$OUT/heavy-rows.txt" \
    --users 200 --tasks 20 --heavy-tasks 20 >/dev/null
read -r FIRST_USER FIRST_TOKEN _ <"$OUT/rows.txt"

counted=$(count service "$SERVICE_DIR/todo_service.py")
read -r SERVICE SERVICE_IDLE SERVICE_TOOK <<<"$counted"
counted=$(count database-json "$BASELINE_SCRIPT" BASELINE_MODE=database-json)
read -r BASELINE BASELINE_IDLE BASELINE_TOOK <<<"$counted"
echo "instructions per list request (callgrind, $REQUESTS requests, 8 connections; $SERVICE_DIR):"
echo "  the service     $SERVICE (idle work ~$SERVICE_IDLE of it: ${SERVICE_TOOK} s of requests)"
echo "  database-json   $BASELINE (idle work ~$BASELINE_IDLE of it: ${BASELINE_TOOK} s of requests)"
awk -v s="$SERVICE" -v b="$BASELINE" 'BEGIN {printf "  ratio           %.2fx\n", s / b}'
