#!/usr/bin/env bash
# Per-core comparison: Gyre with one worker and redis-server (one thread), each pinned to the
# same CPU in turn, the load tool pinned to another, in one run. Prints one line per run.
#
#   bash scripts/bench-core.sh                       # ingest 1 connection, 5 s, 3 rounds
#   bash scripts/bench-core.sh --scenario "fanout -n 1000 -c 1 -p 1" --rounds 1
#   SERVER_CPU=0 TOOL_CPU=1 GYRE=target/release/gyre BENCH=target/release/gyre-bench bash scripts/bench-core.sh
#   GYRE_BASE=/tmp/old/gyre bash scripts/bench-core.sh --peers "base gyre redis"   # before/after, same run
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SCENARIO="ingest -k 1"
ROUNDS=3
DURATION=5
PEERS="gyre redis"
while (($#)); do
    case "$1" in
        --scenario) SCENARIO="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --peers) PEERS="$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
SERVER_CPU="${SERVER_CPU:-0}"
TOOL_CPU="${TOOL_CPU:-1}"
GYRE="${GYRE:-target/release/gyre}"
BENCH="${BENCH:-target/release/gyre-bench}"
[ -x "$GYRE" ] && [ -x "$BENCH" ] || cargo build --release --bins
WORK="$(mktemp -d)"
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() {
    PORT="$(free_port)"
    case "$1" in
        gyre|base)
            local bin="$GYRE"
            [ "$1" = base ] && bin="${GYRE_BASE:?GYRE_BASE: the gyre binary to compare with}"
            cat >"$WORK/gyre.json" <<JSON
{
  "http_server": { "address": "127.0.0.1", "port": $PORT },
  "log": { "level": "warn" },
  "workers": 1,
  "http_api": { "key": "bench-api-key" },
  "client": { "token": { "hmac_secret_key": "bench-hmac-secret" } },
  "channel": { "without_namespace": { "allow_subscribe_for_client": true } }
}
JSON
            taskset -c "$SERVER_CPU" "$bin" -c "$WORK/gyre.json" >"$WORK/server.log" 2>&1 &
            TARGET=(--target "http://127.0.0.1:$PORT" --api-key bench-api-key --hmac-secret bench-hmac-secret)
            ;;
        redis)
            taskset -c "$SERVER_CPU" redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
                --maxclients 19500 >"$WORK/server.log" 2>&1 &
            TARGET=(--target "redis://127.0.0.1:$PORT")
            ;;
        nats)
            GOMAXPROCS=1 taskset -c "$SERVER_CPU" nats-server -a 127.0.0.1 -p "$PORT" >"$WORK/server.log" 2>&1 &
            TARGET=(--target "nats://127.0.0.1:$PORT")
            ;;
    esac
    PID=$!
    for _ in $(seq 100); do
        (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "server $1 did not start" >&2
    cat "$WORK/server.log" >&2
    exit 1
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

for round in $(seq "$ROUNDS"); do
    for peer in $PEERS; do
        start "$peer"
        before="$(cpu_ticks "$PID")"
        # shellcheck disable=SC2086
        out="$(taskset -c "$TOOL_CPU" "$BENCH" $SCENARIO --size 100 -d "$DURATION" -t 1 "${TARGET[@]}" \
            --json --server-pid "$PID" 2>"$WORK/bench.log")" || { cat "$WORK/bench.log" >&2; exit 1; }
        after="$(cpu_ticks "$PID")"
        kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
        cpu_s="$(python3 -c "import os; print(round(($after-$before)/os.sysconf('SC_CLK_TCK'),2))")"
        python3 - "$round" "$peer" "$cpu_s" "$DURATION" "$out" <<'PY'
import json, sys
rnd, peer, cpu, duration, raw = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
r = json.loads(raw)
def find(d, *keys):
    for k in keys:
        if isinstance(d, dict) and k in d:
            return d[k]
    return None
res = r.get("results", r)
fields = {k: v for k, v in res.items() if isinstance(v, (int, float))} if isinstance(res, dict) else {}
keep = {k: fields[k] for k in fields if any(s in k for s in ("per_s", "p50", "p99", "lost", "dup", "cpu", "rss"))}
# Work per second of server CPU: the figure that stays comparable when the machine is shared.
per_cpu = ""
rate = fields.get("commands_per_s") or fields.get("delivered_per_s")
if rate and cpu > 0:
    per_cpu = f" per_server_cpu_s={rate * duration / cpu:,.0f}"
print(f"round {rnd} {peer:6s} server_cpu_s={cpu:.2f}{per_cpu} " + " ".join(f"{k}={v}" for k, v in sorted(keep.items())))
PY
    done
done
