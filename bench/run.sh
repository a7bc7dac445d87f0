#!/usr/bin/env bash
# The benchmark, in one command: bash bench/run.sh   (about 12 minutes with the defaults, 3 of them bench/v3.py)
#
# Installs wrk if missing (Debian's package), makes sure PostgreSQL is up, creates a fresh
# database, starts the service on it with the project's locked dependencies, seeds 1,000
# users with 20 tasks each and one user with 10,000, and drives the routes with wrk at 32
# connections, rotating over one token per user (signed with the service's JWT_PRIVATE_KEY,
# sub the backend user id: tokens of the service's own). Over HTTP only: it never imports
# the service.
#
#   1. The list, in alternating rounds against bench/baseline.py's four modes (bare,
#      token-cached, database-json, ceiling: each a bare Starlette app on the service's
#      uvicorn settings), so that a noisy neighbour hits all alike; the table keeps each
#      side's median round. First the pages are compared: every baseline answers the
#      service's default page (the ceiling: its shape), or the run stops.
#   2. get one, replace (PUT), PATCH, complete, create, delete (each request a task of its
#      own, made for it beforehand), tags, the list filtered and sorted
#      (?priority=high&tag=work&sort=due_at); the 10,000-task user's first page (the default,
#      100 tasks; 20 tasks; and filtered and sorted, 20 tasks), in alternating rounds with a
#      20-task user's page; signup (bcrypt) at BENCH_SIGNUP_CONNECTIONS, few enough that the
#      bcrypt queue never refuses one.
#   3. Abuse (issue 13): list p99 idle, then while bench/abuse.py floods signup and login
#      (40 signup clients and 5 clients x 30 wrong logins, each its own address through
#      X-Forwarded-For, which the service believes from TRUSTED_PROXIES=127.0.0.1; each
#      lane keeps one request in flight and waits out a 503's Retry-After) while a real
#      user logs in several times. Rate limits are set too high to refuse anything: what is
#      measured is the bcrypt queue.
#   4. The service's RSS after each phase and at its peak, and the errors of each phase.
#   5. Version 3 (bench/v3.py, about 3 minutes; runnable alone): once the table above is out
#      and this service stopped, two service processes on a database of their own: the list
#      answered 304 against 200, commit-to-event latency over 1,000 open event streams, RSS
#      per open stream, and 10,000 reminders due at one instant. BENCH_V3=0 leaves it out;
#      its own settings are BENCH_V3_* (see bench/v3.py --help).
#
# The service runs at its default LOG_LEVEL (info): it writes its line per request, as in
# production. Prints the table (bench/report.py) and exits 1 if any request had an answer
# it should not have (a non-2xx where 2xx was expected, a socket error; in the abuse phase
# anything but 201, 401, 200 or a 503 with Retry-After).
#
# Load goes to 127.0.0.1 only; every process started here is stopped on exit, even on
# failure. Settings (environment, all optional):
#   BENCH_DURATION=10 BENCH_WARMUP=2      seconds measured, and of warm-up, per route
#   BENCH_ROUNDS=3                        alternating list rounds: the service and each baseline
#   BENCH_SIGNUP_DURATION=20              seconds measured for signup alone (each takes ~0.25 s of a core)
#   BENCH_SIGNUP_CONNECTIONS=2            signups at once in that phase: one hashing, one queued (the
#                                         service sizes its bcrypt queue from one hash timed at start,
#                                         and on a busy machine it holds as few as 1 or 2)
#   BENCH_CONNECTIONS=32                  wrk connections per route
#   BENCH_WRK_THREADS=1                   one wrk thread leaves the cores to the service
#   BENCH_USERS=1000 BENCH_TASKS=20       seeded users and tasks per user
#   BENCH_HEAVY_TASKS=10000               tasks of the one heavy user
#   BENCH_DOOMED_WARMUP=10 BENCH_DOOMED_MEASURED=40   tasks a user made for delete to delete, in
#                                         its warm-up and its measured seconds (raise them for longer phases)
#   BENCH_ABUSE_SIGNUPS=40 BENCH_ABUSE_LOGIN_CLIENTS=5 BENCH_ABUSE_LOGINS_PER_CLIENT=30   the flood
#   BENCH_ABUSE_REAL_LOGINS=5 BENCH_ABUSE_LOGIN_CAP=20   the real user's logins during it, each
#                                         retried after 503s for at most this many seconds
#   BENCH_PORT=18000 BENCH_BASELINE_PORT=18001   the baselines take this port and the next three
#   BENCH_DATABASE=todo_bench             dropped and created anew (on 127.0.0.1:5432, user postgres)
#   BENCH_OUT=/tmp/todo-bench.XXXX        where wrk's output, the logs and results.json go
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
SIGNUP_DURATION=${BENCH_SIGNUP_DURATION:-20}
SIGNUP_CONNECTIONS=${BENCH_SIGNUP_CONNECTIONS:-2}
WARMUP=${BENCH_WARMUP:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
WRK_THREADS=${BENCH_WRK_THREADS:-1}
USERS=${BENCH_USERS:-1000}
TASKS=${BENCH_TASKS:-20}
HEAVY_TASKS=${BENCH_HEAVY_TASKS:-10000}
DOOMED_WARMUP=${BENCH_DOOMED_WARMUP:-10}
DOOMED_MEASURED=${BENCH_DOOMED_MEASURED:-40}
ABUSE_SIGNUPS=${BENCH_ABUSE_SIGNUPS:-40}
ABUSE_LOGIN_CLIENTS=${BENCH_ABUSE_LOGIN_CLIENTS:-5}
ABUSE_LOGINS_PER_CLIENT=${BENCH_ABUSE_LOGINS_PER_CLIENT:-30}
ABUSE_REAL_LOGINS=${BENCH_ABUSE_REAL_LOGINS:-5}
ABUSE_LOGIN_CAP=${BENCH_ABUSE_LOGIN_CAP:-20}
PORT=${BENCH_PORT:-18000}
BASELINE_PORT=${BENCH_BASELINE_PORT:-18001}
BASELINE_MODES=(bare token-cached database-json ceiling)
DATABASE=${BENCH_DATABASE:-todo_bench}
OUT=${BENCH_OUT:-$(mktemp -d /tmp/todo-bench.XXXXXX)}
mkdir -p "$OUT"
ROWS=$OUT/rows.txt
HEAVY_ROWS=$OUT/heavy-rows.txt
RUN_ID=$(date +%s)-$$
DATABASE_URL=postgresql://postgres@127.0.0.1:5432/$DATABASE
FILTERED='?priority=high&tag=work&sort=due_at'
export UV_PYTHON_DOWNLOADS=never PATH="$HOME/.local/bin:$PATH"
STARTED_AT=$SECONDS

say() { printf '== [%3d s] %s\n' "$((SECONDS - STARTED_AT))" "$*"; }

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

for port in "$PORT" $(seq "$BASELINE_PORT" $((BASELINE_PORT + ${#BASELINE_MODES[@]} - 1))); do
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
# starts in $OUT) and no setting leaking in from the caller's shell. X-Forwarded-For is
# believed from 127.0.0.1, for the abuse phase's client addresses (the baselines get the
# same uvicorn setting); the rate limits refuse nothing.
service_env=(
    env -i PATH="$PATH" HOME="$HOME" LANG=C.UTF-8
    DATABASE_URL="$DATABASE_URL" HOST=127.0.0.1 LOG_LEVEL=info TRUSTED_PROXIES=127.0.0.1
    JWT_PRIVATE_KEY="$JWT_PRIVATE_KEY" JWT_ISSUER=todo-backend JWT_AUDIENCE=todo-backend
    RATE_LIMIT_SIGNUP=999999999/second RATE_LIMIT_LOGIN=999999999/second RATE_LIMIT_LOGIN_EMAIL=999999999/second
)

wait_for() { # url, pid, what[, curl options]
    for _ in $(seq 1 60); do
        kill -0 "$2" 2>/dev/null || { echo "bench: $3 exited during startup; see $OUT/$3.log:" >&2; tail -n 20 "$OUT/$3.log" >&2; exit 1; }
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

say "seeding $USERS users x $TASKS tasks, and one user x $HEAVY_TASKS tasks"
JWT_PRIVATE_KEY="$JWT_PRIVATE_KEY" JWT_ISSUER=todo-backend JWT_AUDIENCE=todo-backend \
    "$PY" "$BENCH/seed.py" "$DATABASE_URL" "$ROWS" "$HEAVY_ROWS" --users "$USERS" --tasks "$TASKS" --heavy-tasks "$HEAVY_TASKS"
read -r FIRST_USER FIRST_TOKEN _ <"$ROWS"
REAL_USER=$(psql -h 127.0.0.1 -U postgres -d "$DATABASE" -tAc "SELECT id FROM users WHERE email = 'bench-user-1@example.com'")
wait_for "http://127.0.0.1:$PORT/api/$FIRST_USER/tasks" "$SERVICE_PID" service -H "Authorization: Bearer $FIRST_TOKEN"

# --- The baselines ------------------------------------------------------------------------
BASELINE_PIDS=()
for i in "${!BASELINE_MODES[@]}"; do
    mode=${BASELINE_MODES[$i]}
    (cd "$OUT" && exec "${service_env[@]}" BASELINE_MODE="$mode" PORT=$((BASELINE_PORT + i)) "$PY" "$BENCH/baseline.py") >"$OUT/baseline-$mode.log" 2>&1 &
    BASELINE_PIDS+=($!)
    PIDS+=($!)
done
say "baselines: bench/baseline.py ${BASELINE_MODES[*]} on 127.0.0.1:$BASELINE_PORT-$((BASELINE_PORT + ${#BASELINE_MODES[@]} - 1)), same interpreter and uvicorn settings"
for i in "${!BASELINE_MODES[@]}"; do
    wait_for "http://127.0.0.1:$((BASELINE_PORT + i))/api/$FIRST_USER/tasks" "${BASELINE_PIDS[$i]}" "baseline-${BASELINE_MODES[$i]}" -H "Authorization: Bearer $FIRST_TOKEN"
done
# The same page from every side (the ceiling: its shape), and the tokens are the service's own.
"$PY" "$BENCH/check_pages.py" "$PORT" "$FIRST_USER" "$FIRST_TOKEN" \
    $(for i in "${!BASELINE_MODES[@]}"; do echo "${BASELINE_MODES[$i]}=$((BASELINE_PORT + i))"; done) | tee "$OUT/check_pages.txt"

# --- Load ---------------------------------------------------------------------------------
wrk_run() { # phase, port, route, seconds[, connections[, rows file[, query]]]
    wrk -t"$WRK_THREADS" -c"${5:-$CONNECTIONS}" -d"$4s" --timeout 30s -s "$BENCH/routes.lua" \
        "http://127.0.0.1:$2" -- "$3" "${6:-$ROWS}" "b$RUN_ID-$1" "${7:-}" >"$OUT/$1.txt" 2>&1
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
pg_snapshot() { # "pid ticks" of each PostgreSQL backend serving the benchmark's database
    local pid
    for pid in $(psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT pid FROM pg_stat_activity WHERE datname = '$DATABASE'"); do
        [[ -r /proc/$pid/stat ]] && echo "$pid $(cpu_ticks "$pid")"
    done
    return 0
}
pg_ticks_since() { # snapshot file: CPU the backends used since it, counting only what each
    # backend still there used (a pooled connection closed meanwhile takes its ticks with it)
    pg_snapshot | awk 'FILENAME == ARGV[1] {before[$1] = $2; next} {total += $2 - ($1 in before ? before[$1] : 0)} END {print total + 0}' "$1" -
}
memory() { # pid: its RSS now and at its peak so far, in kB
    awk '/^VmRSS:/ {rss = $2} /^VmHWM:/ {hwm = $2} END {printf "rss_kb=%d hwm_kb=%d", rss, hwm}' "/proc/$1/status"
}
measure() { # phase, port, route, pid[, seconds[, connections[, rows file[, query[, warm-up rows file]]]]]:
    # warm up, then measure, with the CPU it costs and the memory after it
    local seconds=${5:-$DURATION} service_before
    say "$1: $WARMUP s warm-up, $seconds s measured"
    wrk_run "$1-warmup" "$2" "$3" "$WARMUP" "${6:-}" "${9:-${7:-}}" "${8:-}"
    settle "$4"
    pg_snapshot >"$OUT/$1.pg-before"
    service_before=$(cpu_ticks "$4")
    wrk_run "$1" "$2" "$3" "$seconds" "${6:-}" "${7:-}" "${8:-}"
    echo "service_ticks=$(( $(cpu_ticks "$4") - service_before )) pg_ticks=$(pg_ticks_since "$OUT/$1.pg-before") clk_tck=$(getconf CLK_TCK) $(memory "$4")" >"$OUT/$1.cpu"
    settle "$4"
}
sql() { psql -h 127.0.0.1 -U postgres -d "$DATABASE" -v ON_ERROR_STOP=1 -qc "$1" >/dev/null; }

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# 1. The list against the baselines, in alternating rounds.
for round in $(seq 1 "$ROUNDS"); do
    measure "list-$round" "$PORT" list "$SERVICE_PID"
    for i in "${!BASELINE_MODES[@]}"; do
        measure "baseline-${BASELINE_MODES[$i]}-$round" $((BASELINE_PORT + i)) list "${BASELINE_PIDS[$i]}"
    done
done
BASELINE_MEMORY=""
for i in "${!BASELINE_MODES[@]}"; do
    BASELINE_MEMORY+="${BASELINE_MODES[$i]}:$(awk '/^VmHWM:/ {print $2}' "/proc/${BASELINE_PIDS[$i]}/status") "
    kill -TERM "${BASELINE_PIDS[$i]}"
    wait "${BASELINE_PIDS[$i]}" 2>/dev/null || true
done

# 2. Every other route; then the heavy user; then signup.
measure get "$PORT" get "$SERVICE_PID"
measure replace "$PORT" replace "$SERVICE_PID"
measure patch "$PORT" patch "$SERVICE_PID"
measure complete "$PORT" complete "$SERVICE_PID"
measure create "$PORT" create "$SERVICE_PID"
# delete: every request deletes a task of its own, made here for it: DOOMED_WARMUP a user for
# the warm-up and DOOMED_MEASURED for the measured seconds, more than the phase can delete
# (a task deleted twice would answer 404 and fail the run). Consecutive lines go to different users.
sql "INSERT INTO tasks (user_id, title) SELECT id, 'bench doomed' FROM users CROSS JOIN generate_series(1, $((DOOMED_WARMUP + DOOMED_MEASURED))) WHERE email LIKE 'bench-user-%'"
psql -h 127.0.0.1 -U postgres -d "$DATABASE" -tA -F ' ' -c "
    SELECT user_id, id FROM tasks WHERE title = 'bench doomed'
    ORDER BY row_number() OVER (PARTITION BY user_id ORDER BY id), user_id" |
    awk -v rows="$ROWS" -v warmup="$OUT/delete-warmup-rows.txt" -v measured="$OUT/delete-rows.txt" -v per_user="$DOOMED_WARMUP" '
        BEGIN { while ((getline line < rows) > 0) { split(line, field, " "); token[field[1]] = field[2]; users++ } }
        { print $1, token[$1], $2 > (NR <= users * per_user ? warmup : measured) }'
measure delete "$PORT" delete "$SERVICE_PID" "$DURATION" "" "$OUT/delete-rows.txt" "$WRK_THREADS" "$OUT/delete-warmup-rows.txt"
sql "DELETE FROM tasks WHERE title IN ('bench created', 'bench doomed')"  # back to 20 tasks a user for the list probes
sql "VACUUM ANALYZE tasks"
measure tags "$PORT" tags "$SERVICE_PID"
measure list-filtered "$PORT" list "$SERVICE_PID" "$DURATION" "" "" "$FILTERED"
# The 10,000-task user's pages, in alternating rounds with a 20-task user's (list-beside-heavy),
# so that each p99 is compared with one measured under the same conditions.
for round in $(seq 1 "$ROUNDS"); do
    measure "list-beside-heavy-$round" "$PORT" list "$SERVICE_PID"
    measure "list-heavy-default-$round" "$PORT" list "$SERVICE_PID" "$DURATION" "" "$HEAVY_ROWS"
    measure "list-heavy-$round" "$PORT" list "$SERVICE_PID" "$DURATION" "" "$HEAVY_ROWS" "?limit=20"
    measure "list-heavy-filtered-$round" "$PORT" list "$SERVICE_PID" "$DURATION" "" "$HEAVY_ROWS" "$FILTERED&limit=20"
done
measure signup "$PORT" signup "$SERVICE_PID" "$SIGNUP_DURATION" "$SIGNUP_CONNECTIONS"

# 3. Abuse: the list idle, then while the flood runs and a real user logs in.
say "abuse: list $DURATION s idle, then $DURATION s while $ABUSE_SIGNUPS signup clients and $ABUSE_LOGIN_CLIENTS x $ABUSE_LOGINS_PER_CLIENT wrong logins flood the bcrypt queue"
wrk_run list-idle "$PORT" list "$DURATION"
echo "$(memory "$SERVICE_PID")" >"$OUT/list-idle.cpu"
settle "$SERVICE_PID"
rm -f "$OUT/abuse.ready" "$OUT/abuse.stop"
"$PY" "$BENCH/abuse.py" --port "$PORT" --out "$OUT/abuse.json" --ready "$OUT/abuse.ready" --stop "$OUT/abuse.stop" \
    --prefix "b$RUN_ID-abuse" --user-id "$REAL_USER" --signups "$ABUSE_SIGNUPS" \
    --login-clients "$ABUSE_LOGIN_CLIENTS" --logins-per-client "$ABUSE_LOGINS_PER_CLIENT" \
    --logins "$ABUSE_REAL_LOGINS" --window "$DURATION" --login-cap "$ABUSE_LOGIN_CAP" >"$OUT/abuse.log" 2>&1 &
ABUSE_PID=$!
PIDS+=("$ABUSE_PID")
for _ in $(seq 1 120); do
    [[ -e "$OUT/abuse.ready" ]] && break
    kill -0 "$ABUSE_PID" 2>/dev/null || { echo "bench: bench/abuse.py exited early:" >&2; cat "$OUT/abuse.log" >&2; exit 1; }
    sleep 0.5
done
[[ -e "$OUT/abuse.ready" ]] || { echo "bench: bench/abuse.py never started its flood" >&2; exit 1; }
wrk_run list-under-abuse "$PORT" list "$DURATION"
echo "$(memory "$SERVICE_PID")" >"$OUT/list-under-abuse.cpu"
touch "$OUT/abuse.stop"
wait "$ABUSE_PID" || { echo "bench: bench/abuse.py failed:" >&2; cat "$OUT/abuse.log" >&2; exit 1; }
cat "$OUT/abuse.log"
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
print("uvicorn", m.version("uvicorn") + ",", "uvloop" if u.find_spec("uvloop") else "asyncio loop,", "h11 (the service: h11 with a header deadline)")')
service=$SERVICE_DIR/todo_service.py sha256 $(sha256sum "$SERVICE_DIR/todo_service.py" | cut -c1-12)
log_level=info
rounds=$ROUNDS
connections=$CONNECTIONS
signup_connections=$SIGNUP_CONNECTIONS
wrk_threads=$WRK_THREADS
duration=$DURATION
signup_duration=$SIGNUP_DURATION
warmup=$WARMUP
users=$USERS
tasks=$TASKS
heavy_tasks=$HEAVY_TASKS
filtered=$FILTERED
service_vmhwm_kb=$SERVICE_VMHWM
service_vmrss_kb=$SERVICE_VMRSS
baseline_vmhwm_kb=$BASELINE_MEMORY
elapsed_s=$((SECONDS - STARTED_AT))
EOF
say "results in $OUT (wrk output per phase, service.log, abuse.json, results.json)"
REPORT_STATUS=0
"$PY" "$BENCH/report.py" "$OUT" || REPORT_STATUS=$?

# 5. Version 3, on processes and a database of its own: this service makes way for them.
if [[ "${BENCH_V3:-1}" != 0 ]]; then
    kill -TERM "$SERVICE_PID"
    wait "$SERVICE_PID" 2>/dev/null || true
    say "version 3: bench/v3.py (two service processes on database ${BENCH_V3_DATABASE:-todo_bench_v3}), output in $OUT/v3"
    "$PY" "$BENCH/v3.py" --out "$OUT/v3" --python "$PY" --service-dir "$SERVICE_DIR" \
        --users "$USERS" --tasks "$TASKS" --connections "$CONNECTIONS" || REPORT_STATUS=1
fi
exit "$REPORT_STATUS"
