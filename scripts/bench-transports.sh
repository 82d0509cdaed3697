#!/usr/bin/env bash
# What each client transport costs beside WebSocket, in one run: fan-out of 1 channel to N
# subscribers, twice per transport — at full speed, then paced at a rate every transport
# sustains — each run against a fresh Gyre with one worker pinned to one CPU while the load
# tool (one thread: the publisher and all subscribers) is pinned to another. The tables give
# deliveries/s, the server's CPU time per delivery, publish-to-deliver latency and the ratios to
# WebSocket; the JSON, CSV and logs of every run, the tables (summary.md) and one HTML page of
# all runs go to bench/runs/<UTC stamp>-<host>-transports/.
#
#   bash scripts/bench-transports.sh                          # 2,000 subscribers, 10 s per run
#   bash scripts/bench-transports.sh -n 5000 --duration 5 --transports websocket,sse
#   bash scripts/bench-transports.sh --paced-rate 0           # full speed only
#   SERVER_CPU=2 TOOL_CPU=3 GYRE=/path/gyre BENCH=/path/gyre-bench bash scripts/bench-transports.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

usage() {
    cat <<'EOF'
Usage: bash scripts/bench-transports.sh [-n N] [--duration S] [--paced-rate R]
                                        [--transports LIST] [--out DIR] [--skip-build]

  -n N              subscribers of the one channel (default 2000)
  --duration S      measured seconds per run (default 10), after a 1 s warm-up
  --paced-rate R    publishes/s of the paced runs (default 100; 0: no paced runs); the full
                    speed runs publish as fast as the publisher's acknowledgements allow
  --transports L    comma-separated, run in this order (default: websocket,http_stream,sse,
                    uni_websocket,uni_sse,uni_http_stream); ratios are to websocket when it ran
  --out DIR         where the run's folder goes (default bench/runs)
  --skip-build      do not build; use target/release (or $GYRE / $BENCH)
Environment: SERVER_CPU (default 0) and TOOL_CPU (default 1), the CPUs of Gyre and gyre-bench.
EOF
}

N=2000
DURATION=10
PACED=100
TRANSPORTS="websocket,http_stream,sse,uni_websocket,uni_sse,uni_http_stream"
OUT_BASE="bench/runs"
BUILD=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        -n) N="${2:?-n needs a count}"; shift 2 ;;
        --duration) DURATION="${2:?--duration needs seconds}"; shift 2 ;;
        --paced-rate) PACED="${2:?--paced-rate needs a rate}"; shift 2 ;;
        --transports) TRANSPORTS="${2:?--transports needs a list}"; shift 2 ;;
        --out) OUT_BASE="${2:?--out needs a folder}"; shift 2 ;;
        --skip-build) BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-transports.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
[[ "$N" =~ ^[1-9][0-9]*$ ]] || { echo "bench-transports.sh: -n must be a positive count" >&2; exit 2; }
for v in "$DURATION" "$PACED"; do
    [[ "$v" =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "bench-transports.sh: $v is not a number" >&2; exit 2; }
done
IFS=',' read -ra RUN <<<"$TRANSPORTS"
for t in "${RUN[@]}"; do
    case "$t" in
        websocket|http_stream|sse|uni_websocket|uni_sse|uni_http_stream) ;;
        *) echo "bench-transports.sh: unknown transport $t" >&2; exit 2 ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
for tool in taskset timeout python3; do
    command -v "$tool" >/dev/null || { echo "bench-transports.sh: $tool not found" >&2; exit 2; }
done
SERVER_CPU="${SERVER_CPU:-0}"
TOOL_CPU="${TOOL_CPU:-1}"

# Binaries: built here unless told otherwise, then copied so a rebuild cannot swap them mid-run.
GYRE_BIN="${GYRE:-target/release/gyre}"
BENCH_BIN="${BENCH:-target/release/gyre-bench}"
if [[ $BUILD == 1 && -z "${GYRE:-}${BENCH:-}" ]]; then
    echo "== cargo build --release --bin gyre --bin gyre-bench" >&2
    timeout 3600 cargo build --release --bin gyre --bin gyre-bench
fi
for b in "$GYRE_BIN" "$BENCH_BIN"; do
    [[ -x "$b" ]] || { echo "bench-transports.sh: $b is missing (build it, or set GYRE= / BENCH=)" >&2; exit 2; }
done
WORK="$(mktemp -d /tmp/gyre-bench-transports.XXXXXX)"
cp "$GYRE_BIN" "$WORK/gyre"
cp "$BENCH_BIN" "$WORK/gyre-bench"

BENCH_PID=""
cleanup() {
    local rc=$?
    if [[ -n "$BENCH_PID" ]] && kill -0 "$BENCH_PID" 2>/dev/null; then
        kill -TERM "$BENCH_PID" 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
    fi
    stop_server
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Open files: up to 20,000 (what one process may hold on the machines this runs on).
HARD="$(ulimit -Hn)"
WANT_FILES=20000
if [[ $HARD != unlimited && $HARD -lt $WANT_FILES ]]; then WANT_FILES=$HARD; fi
ulimit -n "$WANT_FILES" 2>/dev/null || true
if (( $(ulimit -n) < N + 200 )); then
    echo "bench-transports.sh: $N subscribers need more open files than $(ulimit -n)" >&2
    exit 2
fi

STAMP="$(date -u +%Y-%m-%dT%H%M%SZ)"
HOST="$(hostname 2>/dev/null || echo host)"
OUT="$OUT_BASE/$STAMP-$HOST-transports"
mkdir -p "$OUT"
{
    echo "date:         $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host:         $HOST"
    echo "cpu:          $(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -1)"
    echo "cpus:         $(nproc); Gyre (1 worker) on CPU $SERVER_CPU, gyre-bench (1 thread) on CPU $TOOL_CPU"
    echo "kernel:       $(uname -r)"
    echo "memory:       $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "commit:       $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
    echo "workload:     fanout 1 channel x $N subscribers, 1 publisher, 100 B payloads, full speed$([[ $PACED == 0 ]] || echo " and $PACED publishes/s"), $DURATION s after 1 s warm-up"
    echo "transports:   ${RUN[*]}"
    echo "load start:   $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

API_KEY="bench-api-key"
SECRET="bench-hmac-secret"
RESULTS=()
FAILED=()
# run_one TRANSPORT RATE NAME: a fresh pinned Gyre, one pinned gyre-bench run.
run_one() {
    local t="$1" rate="$2" base="$OUT/$3" args rc=0
    echo "== $3" >&2
    PORT="$(free_port)"
    cat >"$WORK/gyre.json" <<EOF
{
  "http_server": { "address": "127.0.0.1", "port": $PORT },
  "log": { "level": "warn" },
  "workers": 1,
  "http_api": { "key": "$API_KEY" },
  "client": { "token": { "hmac_secret_key": "$SECRET" } },
  "channel": { "without_namespace": { "allow_subscribe_for_client": true } },
  "http_stream": { "enabled": true },
  "sse": { "enabled": true },
  "uni_websocket": { "enabled": true },
  "uni_sse": { "enabled": true },
  "uni_http_stream": { "enabled": true }
}
EOF
    taskset -c "$SERVER_CPU" "$WORK/gyre" -c "$WORK/gyre.json" >"$base.server.log" 2>&1 &
    SERVER_PID=$!
    if ! await_server "gyre" "$base.server.log"; then
        FAILED+=("$3: the server did not start")
        return 0
    fi
    args="fanout -n $N -c 1 -p 1 --size 100 --rate $rate -d $DURATION --warmup 1 -t 1 --transport $t"
    args="$args --target http://127.0.0.1:$PORT --api-key $API_KEY --hmac-secret $SECRET --server-pid $SERVER_PID -q"
    echo "$3: taskset -c $TOOL_CPU gyre-bench $args" >>"$OUT/commands.txt"
    # shellcheck disable=SC2086
    timeout -k 10 "$(awk -v d="$DURATION" 'BEGIN { printf "%d", d + 150 }')" taskset -c "$TOOL_CPU" \
        "$WORK/gyre-bench" $args --label "$3" --json "$base.json" --csv "$base.csv" >"$base.log" 2>&1 &
    BENCH_PID=$!
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=""
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "   Gyre exited during the run (see $base.server.log)" >&2
        [[ $rc == 0 ]] && rc=99
    fi
    stop_server
    if [[ $rc == 0 && -s "$base.json" ]]; then
        RESULTS+=("$base.json")
        rm -f "$base.server.log"
    else
        echo "   gyre-bench exit code $rc; last lines of $base.log:" >&2
        tail -5 "$base.log" | sed 's/^/   /' >&2
        FAILED+=("$3: gyre-bench exit code $rc (see $(basename "$base").log)")
        rm -f "$base.json" "$base.csv"
    fi
    # Let the sockets of the run settle before the next server starts.
    sleep 1
}

for t in "${RUN[@]}"; do
    run_one "$t" 0 "$t-full"
done
if [[ $PACED != 0 ]]; then
    for t in "${RUN[@]}"; do
        run_one "$t" "$PACED" "$t-paced"
    done
fi

python3 - "$OUT" "${RESULTS[@]}" >"$OUT/summary.md" <<'PY'
import json, os, sys

out, files = sys.argv[1], sys.argv[2:]
print(f"# {os.path.basename(out)}\n\n```")
print(open(os.path.join(out, "machine.txt")).read().rstrip())
print("```")
runs = []
for f in files:
    r = json.load(open(f))
    delivered = r["delivered"]
    server, tool = r.get("server") or {}, r.get("client") or {}
    cpu = server.get("cpu_s")
    runs.append({
        "t": r["transport"], "rate": r["rate"], "per_s": r["delivered_per_s"],
        "us": cpu * 1e6 / delivered if cpu is not None and delivered else None,
        "tool_ns": tool["cpu_s"] * 1e9 / delivered if tool.get("cpu_s") is not None and delivered else None,
        "server_pct": server.get("cpu_pct"), "tool_pct": tool.get("cpu_pct"),
        "p50": r["latency_us"]["p50"], "p99": r["latency_us"]["p99"],
        "lost": r["lost"], "dup": r["duplicated"],
    })
def ratio(v, base):
    return "–" if v is None or not base else f"{v / base:.2f}"
def ms(v):
    return "–" if v is None else f"{v / 1000:.2f}"
def opt(v, f):
    return "–" if v is None else format(v, f)
for paced in (False, True):
    group = [x for x in runs if (x["rate"] > 0) == paced]
    if not group:
        continue
    title = f"paced, {group[0]['rate']:,.0f} publishes/s" if paced else "full speed"
    print(f"\n## {title}\n")
    ws = next((x for x in group if x["t"] == "websocket"), {})
    print("| transport | deliveries/s | × WebSocket | server CPU µs / delivery | × WebSocket | p50 (ms) | p99 (ms) "
          "| lost / dup | server CPU % | gyre-bench CPU % | gyre-bench CPU ns / delivery |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for x in group:
        print(f"| {x['t']} | {x['per_s']:,.0f} | {ratio(x['per_s'], ws.get('per_s'))} | {opt(x['us'], '.3f')} | "
              f"{ratio(x['us'], ws.get('us'))} | {ms(x['p50'])} | {ms(x['p99'])} | {x['lost']} / {x['dup']} | "
              f"{opt(x['server_pct'], '')} | {opt(x['tool_pct'], '')} | {opt(x['tool_ns'], '.0f')} |")
PY
if [[ ${#FAILED[@]} -gt 0 ]]; then
    { echo; for s in "${FAILED[@]}"; do echo "* failed: $s"; done; } >>"$OUT/summary.md"
fi
if [[ ${#RESULTS[@]} -gt 0 ]]; then
    "$WORK/gyre-bench" report --out "$OUT/report.html" "${RESULTS[@]}" 2>>"$OUT/commands.txt" ||
        echo "bench-transports.sh: the HTML report could not be written" >&2
fi
cat "$OUT/summary.md" >&2
echo "== ${#RESULTS[@]} runs, ${#FAILED[@]} failed; results in $OUT" >&2
[[ ${#FAILED[@]} == 0 ]]
