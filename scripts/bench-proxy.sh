#!/usr/bin/env bash
# What the proxies cost: the connect rate and the client publish rate of Gyre, twice in one run —
# (a) no proxy: clients connect with HS256 tokens and the namespace allows them to subscribe
# and publish; (b) through the application backend: clients connect without a token (the
# connect proxy), subscribe through the subscribe proxy and publish through the publish proxy,
# all answered by `gyre-bench proxy-backend`. Each run gets a fresh Gyre with one worker pinned
# to one CPU; the load tool (one thread) and the backend share another. The tables give the
# rates, latencies and CPU per operation of (a) and (b) and their ratios (proxy / no proxy);
# the JSON, CSV and logs of every run, the backend's call counts, the tables (summary.md) and
# one HTML page of all runs go to bench/runs/<UTC stamp>-<host>-proxy/.
#
#   bash scripts/bench-proxy.sh                              # 50,000 connects, 10 s of publishes
#   bash scripts/bench-proxy.sh --connects 5000 --duration 3 --skip-build
#   bash scripts/bench-proxy.sh --delay-ms 1                 # a backend taking 1 ms per answer
#   SERVER_CPU=2 TOOL_CPU=3 BACKEND_CPU=4 bash scripts/bench-proxy.sh
#
# gRPC proxies are not measured: this build's Gyre has no gRPC proxy client.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

usage() {
    cat <<'EOF'
Usage: bash scripts/bench-proxy.sh [--connects N] [--concurrency K] [--publishers K]
                                   [--batch B] [--inflight I] [--duration S] [--delay-ms D]
                                   [--backend-threads T] [--out DIR] [--skip-build]
                                   [--max-load L | --no-wait]

  --connects N         connections opened per connect run (default 50000), each closed once
                       answered
  --concurrency K      connections being opened at once (default 64)
  --publishers K       WebSocket clients of the publish runs (default 64)
  --batch B            publish commands per frame (default 10)
  --inflight I         frames in flight per client (default 2)
  --duration S         measured seconds of each publish run (default 10), after 1 s warm-up
  --delay-ms D         milliseconds the backend waits before each answer (default 0)
  --backend-threads T  event loops of the backend (default 1)
  --out DIR            where the run's folder goes (default bench/runs)
  --skip-build         do not build; use target/release (or $GYRE / $BENCH)
  --max-load L         before each run, wait (up to 10 min, polling every 15 s) until the
                       1-minute load average is at most L (default 1.0): other work on the
                       machine takes the pinned CPUs' time
  --no-wait            do not wait for the load to drop
Environment: SERVER_CPU (default 0), TOOL_CPU (default 1) and BACKEND_CPU (default TOOL_CPU),
the CPUs of Gyre, gyre-bench and the backend.
EOF
}

CONNECTS=50000
CONCURRENCY=64
PUBLISHERS=64
BATCH=10
INFLIGHT=2
DURATION=10
DELAY=0
BACKEND_THREADS=1
OUT_BASE="bench/runs"
BUILD=1
MAX_LOAD=1.0
WAIT_LOAD=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --connects) CONNECTS="${2:?--connects needs a count}"; shift 2 ;;
        --concurrency) CONCURRENCY="${2:?--concurrency needs a count}"; shift 2 ;;
        --publishers) PUBLISHERS="${2:?--publishers needs a count}"; shift 2 ;;
        --batch) BATCH="${2:?--batch needs a count}"; shift 2 ;;
        --inflight) INFLIGHT="${2:?--inflight needs a count}"; shift 2 ;;
        --duration) DURATION="${2:?--duration needs seconds}"; shift 2 ;;
        --delay-ms) DELAY="${2:?--delay-ms needs milliseconds}"; shift 2 ;;
        --backend-threads) BACKEND_THREADS="${2:?--backend-threads needs a count}"; shift 2 ;;
        --out) OUT_BASE="${2:?--out needs a folder}"; shift 2 ;;
        --skip-build) BUILD=0; shift ;;
        --max-load) MAX_LOAD="${2:?--max-load needs a value}"; shift 2 ;;
        --no-wait) WAIT_LOAD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-proxy.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
for v in "$CONNECTS" "$CONCURRENCY" "$PUBLISHERS" "$BATCH" "$INFLIGHT" "$BACKEND_THREADS"; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "bench-proxy.sh: $v is not a positive count" >&2; exit 2; }
done
[[ "$DELAY" =~ ^[0-9]+$ ]] || { echo "bench-proxy.sh: --delay-ms must be whole milliseconds" >&2; exit 2; }
[[ "$DURATION" =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "bench-proxy.sh: --duration must be seconds" >&2; exit 2; }
[[ "$MAX_LOAD" =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "bench-proxy.sh: --max-load must be a number" >&2; exit 2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
for tool in taskset timeout python3; do
    command -v "$tool" >/dev/null || { echo "bench-proxy.sh: $tool not found" >&2; exit 2; }
done
SERVER_CPU="${SERVER_CPU:-0}"
TOOL_CPU="${TOOL_CPU:-1}"
BACKEND_CPU="${BACKEND_CPU:-$TOOL_CPU}"

# Binaries: built here unless told otherwise, then copied so a rebuild cannot swap them mid-run.
GYRE_BIN="${GYRE:-target/release/gyre}"
BENCH_BIN="${BENCH:-target/release/gyre-bench}"
if [[ $BUILD == 1 && -z "${GYRE:-}${BENCH:-}" ]]; then
    echo "== cargo build --release --bin gyre --bin gyre-bench" >&2
    timeout 3600 cargo build --release --bin gyre --bin gyre-bench
fi
for b in "$GYRE_BIN" "$BENCH_BIN"; do
    [[ -x "$b" ]] || { echo "bench-proxy.sh: $b is missing (build it, or set GYRE= / BENCH=)" >&2; exit 2; }
done
WORK="$(mktemp -d /tmp/gyre-bench-proxy.XXXXXX)"
cp "$GYRE_BIN" "$WORK/gyre"
cp "$BENCH_BIN" "$WORK/gyre-bench"

BENCH_PID=""
BACKEND_PID=""
stop_backend() {
    [[ -z "$BACKEND_PID" ]] && return 0
    stop_pid "$BACKEND_PID"
    BACKEND_PID=""
}
cleanup() {
    local rc=$?
    if [[ -n "$BENCH_PID" ]] && kill -0 "$BENCH_PID" 2>/dev/null; then
        kill -TERM "$BENCH_PID" 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
    fi
    stop_server
    stop_backend
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

HARD="$(ulimit -Hn)"
WANT_FILES=20000
if [[ $HARD != unlimited && $HARD -lt $WANT_FILES ]]; then WANT_FILES=$HARD; fi
ulimit -n "$WANT_FILES" 2>/dev/null || true

STAMP="$(date -u +%Y-%m-%dT%H%M%SZ)"
HOST="$(hostname 2>/dev/null || echo host)"
OUT="$OUT_BASE/$STAMP-$HOST-proxy"
mkdir -p "$OUT"
{
    echo "date:         $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host:         $HOST"
    echo "cpu:          $(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -1)"
    echo "cpus:         $(nproc); Gyre (1 worker) on CPU $SERVER_CPU, gyre-bench (1 thread) on CPU $TOOL_CPU, backend ($BACKEND_THREADS thread(s)) on CPU $BACKEND_CPU"
    echo "kernel:       $(uname -r)"
    echo "memory:       $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "commit:       $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
    echo "workload:     connect: $CONNECTS connections, $CONCURRENCY at a time, each closed once answered (without and with a subscribe);"
    echo "              client publish: $PUBLISHERS WebSocket clients, $BATCH commands per frame x $INFLIGHT in flight, 100 B, $DURATION s after 1 s warm-up"
    echo "backend:      gyre-bench proxy-backend, $DELAY ms per answer"
    echo "load start:   $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

SECRET="bench-hmac-secret"
CHANNEL="bench-0"
RESULTS=()
FAILED=()

# cpu_s PID: user + system CPU seconds of a process so far (empty when it is gone).
cpu_s() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); split($0, f, " "); printf "%.3f", (f[12] + f[13]) / hz }' \
        "/proc/$1/stat" 2>/dev/null || true
}

# gyre_config PROXY: the config of a fresh Gyre on PORT; PROXY 1 routes connect, subscribe and
# publish to the backend on BACKEND_PORT.
gyre_config() {
    if [[ $1 == 1 ]]; then
        cat <<EOF
{
  "http_server": { "address": "127.0.0.1", "port": $PORT },
  "log": { "level": "warn" },
  "workers": 1,
  "http_api": { "key": "bench-api-key" },
  "client": {
    "token": { "hmac_secret_key": "$SECRET" },
    "proxy": { "connect": { "enabled": true, "endpoint": "http://127.0.0.1:$BACKEND_PORT/connect" } }
  },
  "channel": {
    "proxy": {
      "subscribe": { "endpoint": "http://127.0.0.1:$BACKEND_PORT/subscribe" },
      "publish": { "endpoint": "http://127.0.0.1:$BACKEND_PORT/publish" }
    },
    "without_namespace": { "subscribe_proxy_enabled": true, "publish_proxy_enabled": true }
  }
}
EOF
    else
        cat <<EOF
{
  "http_server": { "address": "127.0.0.1", "port": $PORT },
  "log": { "level": "warn" },
  "workers": 1,
  "http_api": { "key": "bench-api-key" },
  "client": { "token": { "hmac_secret_key": "$SECRET" } },
  "channel": { "without_namespace": { "allow_subscribe_for_client": true, "allow_publish_for_client": true } }
}
EOF
    fi
}

load1() { cut -d' ' -f1 /proc/loadavg; }

# wait_quiet: until the 1-minute load average is at most MAX_LOAD (10 min at most).
wait_quiet() {
    local waited=0
    [[ $WAIT_LOAD == 1 ]] || return 0
    while awk -v l="$(load1)" -v m="$MAX_LOAD" 'BEGIN { exit !(l > m) }'; do
        if (( waited >= 600 )); then
            echo "   load $(load1) still above $MAX_LOAD after 10 min; measuring anyway" >&2
            return 0
        fi
        echo "   load average $(load1) > $MAX_LOAD; waiting (${waited}s of 600s)" >&2
        sleep 15
        waited=$((waited + 15))
    done
}

# run_one NAME PROXY ARGS...: a fresh pinned Gyre (and, with PROXY 1, a fresh pinned backend),
# one pinned gyre-bench run with ARGS.
run_one() {
    local name="$1" proxy="$2" base="$OUT/$1" rc=0 t0 t1 b0 b1
    shift 2
    echo "== $name" >&2
    wait_quiet
    if [[ $proxy == 1 ]]; then
        BACKEND_PORT="$(free_port)"
        taskset -c "$BACKEND_CPU" "$WORK/gyre-bench" proxy-backend --listen "127.0.0.1:$BACKEND_PORT" \
            --threads "$BACKEND_THREADS" --delay-ms "$DELAY" >"$base.backend.json" 2>"$base.backend.log" &
        BACKEND_PID=$!
        if ! wait_port "$BACKEND_PID" "$BACKEND_PORT"; then
            FAILED+=("$name: the backend did not start (see $(basename "$base").backend.log)")
            stop_backend
            return 0
        fi
    fi
    PORT="$(free_port)"
    gyre_config "$proxy" >"$WORK/gyre.json"
    taskset -c "$SERVER_CPU" "$WORK/gyre" -c "$WORK/gyre.json" >"$base.server.log" 2>&1 &
    SERVER_PID=$!
    if ! await_server "gyre" "$base.server.log"; then
        FAILED+=("$name: the server did not start")
        stop_backend
        return 0
    fi
    local args="$* --target http://127.0.0.1:$PORT --server-pid $SERVER_PID -q"
    echo "$name: taskset -c $TOOL_CPU gyre-bench $args" >>"$OUT/commands.txt"
    echo "$name $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/loads.txt"
    [[ -n "$BACKEND_PID" ]] && b0="$(cpu_s "$BACKEND_PID")"
    t0="$(date +%s.%N)"
    # shellcheck disable=SC2086
    timeout -k 10 "$(awk -v d="$DURATION" 'BEGIN { printf "%d", d + 300 }')" taskset -c "$TOOL_CPU" \
        "$WORK/gyre-bench" $args --label "$name" --json "$base.json" --csv "$base.csv" >"$base.log" 2>&1 &
    BENCH_PID=$!
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=""
    t1="$(date +%s.%N)"
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "   Gyre exited during the run (see $base.server.log)" >&2
        [[ $rc == 0 ]] && rc=99
    fi
    stop_server
    if [[ -n "$BACKEND_PID" ]]; then
        b1="$(cpu_s "$BACKEND_PID")"
        stop_backend
        # The backend's CPU over the whole gyre-bench run (connects and warm-up included).
        python3 - "$base.backend.json" "$b0" "$b1" "$t0" "$t1" <<'PY' || true
import json, sys
path, b0, b1, t0, t1 = sys.argv[1:]
lines = [l for l in open(path).read().splitlines() if l.strip().startswith("{")]
j = json.loads(lines[-1]) if lines else {}
if b0 and b1:
    j["cpu_s"] = round(float(b1) - float(b0), 3)
    j["wall_s"] = round(float(t1) - float(t0), 3)
json.dump(j, open(path, "w"))
PY
    fi
    if [[ $rc == 0 && -s "$base.json" ]]; then
        RESULTS+=("$base.json")
        [[ -s "$base.server.log" ]] || rm -f "$base.server.log"
    else
        echo "   gyre-bench exit code $rc; last lines of $base.log:" >&2
        tail -5 "$base.log" | sed 's/^/   /' >&2
        FAILED+=("$name: gyre-bench exit code $rc (see $(basename "$base").log)")
        rm -f "$base.json" "$base.csv"
    fi
    # Let the sockets of the run settle before the next server starts.
    sleep 2
}

CONNECT="connect -n $CONNECTS --concurrency $CONCURRENCY -t 1 --source-ips 4"
PUBLISH="ingest --client-publish -k $PUBLISHERS --batch $BATCH --inflight $INFLIGHT --size 100 -d $DURATION --warmup 1 -t 1"
run_one connect-token 0 $CONNECT --hmac-secret "$SECRET"
run_one connect-proxy 1 $CONNECT
run_one subscribe-token 0 $CONNECT --hmac-secret "$SECRET" --subscribe "$CHANNEL"
run_one subscribe-proxy 1 $CONNECT --subscribe "$CHANNEL"
run_one publish-token 0 $PUBLISH --hmac-secret "$SECRET"
run_one publish-proxy 1 $PUBLISH

python3 - "$OUT" >"$OUT/summary.md" <<'PY'
import json, os, sys

out = sys.argv[1]
def load(name):
    try:
        return json.load(open(os.path.join(out, name + ".json")))
    except (OSError, ValueError):
        return None
def backend(name):
    try:
        return json.load(open(os.path.join(out, name + ".backend.json")))
    except (OSError, ValueError):
        return None

print(f"# {os.path.basename(out)}\n\n```")
print(open(os.path.join(out, "machine.txt")).read().rstrip())
print("```\n")
print("| workload | no proxy /s | proxy /s | proxy / no proxy | p50 ms (no proxy / proxy) | p99 ms (no proxy / proxy) "
      "| server CPU µs per op (no proxy / proxy) | server CPU % (no proxy / proxy) | gyre-bench CPU % (no proxy / proxy) "
      "| backend calls | backend CPU µs per call | backend CPU % | load CPU %, tool + backend (proxy) |")
print("|---|---:|---:|---:|---|---|---|---|---|---:|---:|---:|---:|")
def fmt(v, f=",.0f"):
    return "–" if v is None else format(v, f)
for title, a, b, key, ops in [
    ("connect (closed once answered)", "connect-token", "connect-proxy", "connects_per_s", "ok"),
    ("connect + subscribe", "subscribe-token", "subscribe-proxy", "connects_per_s", "ok"),
    ("client publish", "publish-token", "publish-proxy", "commands_per_s", "commands"),
]:
    ra, rb, be = load(a), load(b), backend(b)
    def get(r, k):
        return None if r is None else r.get(k)
    def lat(r, q):
        return None if r is None else r["latency_us"][q] / 1000
    def per_op(r):
        if r is None or not r.get("server") or not r.get(ops):
            return None
        return r["server"]["cpu_s"] * 1e6 / r[ops]
    def cpu(r, side):
        return None if r is None or not r.get(side) else r[side]["cpu_pct"]
    va, vb = get(ra, key), get(rb, key)
    ratio = "–" if not va or vb is None else f"{vb / va:.2f}"
    calls = be.get("total") if be else None
    be_us = be["cpu_s"] * 1e6 / calls if be and calls and "cpu_s" in be else None
    be_pct = be["cpu_s"] / be["wall_s"] * 100 if be and be.get("wall_s") else None
    print(f"| {title} | {fmt(va)} | {fmt(vb)} | {ratio} | {fmt(lat(ra, 'p50'), '.2f')} / {fmt(lat(rb, 'p50'), '.2f')} "
          f"| {fmt(lat(ra, 'p99'), '.2f')} / {fmt(lat(rb, 'p99'), '.2f')} | {fmt(per_op(ra), '.1f')} / {fmt(per_op(rb), '.1f')} "
          f"| {fmt(cpu(ra, 'server'), '.0f')} / {fmt(cpu(rb, 'server'), '.0f')} | {fmt(cpu(ra, 'client'), '.0f')} / {fmt(cpu(rb, 'client'), '.0f')} "
          f"| {fmt(calls)} | {fmt(be_us, '.1f')} | {fmt(be_pct, '.0f')} "
          f"| {fmt(None if be_pct is None or cpu(rb, 'client') is None else be_pct + cpu(rb, 'client'), '.0f')} |")
print()
try:
    loads = [l.split() for l in open(os.path.join(out, "loads.txt")) if l.strip()]
    print("* load average (1 / 5 / 15 min) as each run started: "
          + "; ".join(f"{l[0]} {' / '.join(l[1:])}" for l in loads))
except OSError:
    pass
for name in ["connect-proxy", "subscribe-proxy", "publish-proxy"]:
    be = backend(name)
    if be and be.get("calls"):
        calls = ", ".join(f"{k} {v:,}" for k, v in be["calls"].items() if v)
        print(f"* {name}: backend calls {calls}; bad requests {be.get('bad_requests', 0)}")
for name in ["connect-token", "connect-proxy", "subscribe-token", "subscribe-proxy"]:
    r = load(name)
    if r and r.get("failed"):
        print(f"* {name}: {r['failed']:,} connects failed: {r.get('failures')}")
for name in ["publish-token", "publish-proxy"]:
    r = load(name)
    if r and r.get("publish_errors"):
        print(f"* {name}: {r['publish_errors']:,} publish errors")
PY
if [[ ${#FAILED[@]} -gt 0 ]]; then
    { echo; for s in "${FAILED[@]}"; do echo "* failed: $s"; done; } >>"$OUT/summary.md"
fi
if [[ ${#RESULTS[@]} -gt 0 ]]; then
    "$WORK/gyre-bench" report --out "$OUT/report.html" "${RESULTS[@]}" 2>>"$OUT/commands.txt" ||
        echo "bench-proxy.sh: the HTML report could not be written" >&2
fi
cat "$OUT/summary.md" >&2
echo "== ${#RESULTS[@]} runs, ${#FAILED[@]} failed; results in $OUT" >&2
[[ ${#FAILED[@]} == 0 ]]
