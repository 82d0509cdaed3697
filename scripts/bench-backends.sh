#!/usr/bin/env bash
# Three Gyre nodes on each backend, side by side with the bundled load tool gyre-bench:
# a standalone redis-server, a Sentinel setup (primary, replica, sentinel), the same with
# `engine.redis.wait_replicas: 1`, a Redis Cluster of three primaries, and the NATS broker
# (one nats-server, presence in memory).
#
#   bash scripts/bench-backends.sh                 # 5 s measured per run
#   bash scripts/bench-backends.sh --duration 10 --skip-build
#   bash scripts/bench-backends.sh --bin-dir target/debug --duration 1   # the script itself, quickly
#   bash scripts/bench-backends.sh --setups "standalone nats"            # some backends only
#
# Every run starts its servers fresh (free ports). Workloads: fanout 1 channel × N subscribers
# and 100 channels × N/100 subscribers (N = 1,000), one publisher at full speed on the first
# node, subscribers spread over the three nodes (gyre-bench --target A,B,C). The raw JSON of
# each run is kept under bench/runs/<UTC timestamp>-backends/; the tables (also in summary.md
# there) give each backend's figures and its ratio to the standalone redis-server.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

DURATION=5
N=1000
BUILD=1
BIN_DIR=target/release
ONLY=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) DURATION="${2:?--duration needs a value}"; shift 2 ;;
        --subscribers) N="${2:?--subscribers needs a value}"; shift 2 ;;
        --skip-build) BUILD=0; shift ;;
        --setups) read -r -a ONLY <<<"${2:?--setups needs a value}"; shift 2 ;;
        --bin-dir) BIN_DIR="${2:?--bin-dir needs a value}"; BUILD=0; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "bench-backends.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
if ! [[ "$N" =~ ^[0-9]+$ ]] || (( N < 100 || N % 100 != 0 )); then
    echo "bench-backends.sh: --subscribers must be a multiple of 100" >&2
    exit 2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
for tool in redis-server redis-cli nats-server jq cargo timeout; do
    command -v "$tool" >/dev/null || { echo "bench-backends.sh: $tool not found" >&2; exit 2; }
done

API_KEY="bench-api-key"
SECRET="bench-hmac-secret"
SETUPS=(standalone sentinel sentinel-wait cluster nats)
if ((${#ONLY[@]})); then SETUPS=("${ONLY[@]}"); fi
WORKLOADS=("fanout-1x$N" "fanout-100x$((N / 100))")

if [[ $BUILD == 1 ]]; then
    echo "== cargo build --release" >&2
    timeout 3600 cargo build --release
fi
WORK="$(mktemp -d /tmp/gyre-bench-backends.XXXXXX)"
cp "$BIN_DIR/gyre" "$BIN_DIR/gyre-bench" "$WORK/"
GYRE="$WORK/gyre"
BENCH="$WORK/gyre-bench"

SERVER_PIDS=()
cleanup() {
    local rc=$?
    if ((${#SERVER_PIDS[@]})); then stop_pid "${SERVER_PIDS[@]}"; fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

STAMP="$(date -u +%Y-%m-%dT%H%M%SZ)"
OUT="bench/runs/$STAMP-backends"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.md"
: >"$SUMMARY"
{
    echo "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "nproc:    $(nproc)"
    echo "cpu:      $(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
    echo "commit:   $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
    echo "redis:    $(redis-server --version | head -1)"
    echo "nats:     $(nats-server --version | head -1)"
    echo "duration: ${DURATION} s measured per run; 3 Gyre nodes (1 worker each) on every backend"
    echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) at start"
} | tee "$OUT/machine.txt" >&2

# start_redis LOG [ARGS...]: a redis-server on a free port; sets REDIS_PORT.
REDIS_PORT=""
start_redis() {
    local log="$1"
    shift
    REDIS_PORT="$(free_port)"
    (cd "$WORK" && exec redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --maxclients 10000 "$@") >"$log" 2>&1 &
    SERVER_PIDS+=("$!")
    wait_port "$!" "$REDIS_PORT" || { echo "redis-server did not start; see $log" >&2; return 1; }
}

# start_gyre LOG BACKEND_JSON: one node (BACKEND_JSON: its "engine" and "broker" members);
# appends its port to GYRE_PORTS.
GYRE_PORTS=()
start_gyre() {
    local log="$1" engine="$2" port cfg
    port="$(free_port)"
    cfg="$WORK/gyre-$port.json"
    cat >"$cfg" <<EOF
{
  "http_server": { "address": "127.0.0.1", "port": $port },
  "log": { "level": "warn" },
  "workers": 1,
  "http_api": { "key": "$API_KEY" },
  "client": { "token": { "hmac_secret_key": "$SECRET" } },
  "channel": { "without_namespace": { "allow_subscribe_for_client": true } },
  $engine
}
EOF
    "$GYRE" -c "$cfg" >"$log" 2>&1 &
    SERVER_PIDS+=("$!")
    GYRE_PORTS+=("$port")
    wait_port "$!" "$port" || { echo "gyre did not start; see $log" >&2; return 1; }
}

# start_setup SETUP BASE: every server of SETUP; sets TARGET.
TARGET=""
start_setup() {
    local setup="$1" base="$2" engine i nport=""
    GYRE_PORTS=()
    case "$setup" in
        standalone)
            start_redis "$base.redis.log"
            engine="{ \"address\": [\"redis://127.0.0.1:$REDIS_PORT\"] }"
            ;;
        sentinel|sentinel-wait)
            start_redis "$base.redis.log"
            local primary="$REDIS_PORT"
            start_redis "$base.replica.log" --replicaof 127.0.0.1 "$primary"
            local sport conf="$WORK/sentinel-$primary.conf"
            sport="$(free_port)"
            printf 'port %s\nbind 127.0.0.1\ndir %s\nsentinel monitor mymaster 127.0.0.1 %s 1\n' \
                "$sport" "$WORK" "$primary" >"$conf"
            redis-server "$conf" --sentinel >"$base.sentinel.log" 2>&1 &
            SERVER_PIDS+=("$!")
            wait_port "$!" "$sport"
            engine="{ \"sentinel_address\": [\"127.0.0.1:$sport\"], \"sentinel_master_name\": \"mymaster\""
            [[ $setup == sentinel-wait ]] && engine="$engine, \"wait_replicas\": 1"
            engine="$engine }"
            ;;
        cluster)
            local seeds=()
            for i in 1 2 3; do
                rm -rf "$WORK/cl$i"; mkdir -p "$WORK/cl$i"
                start_redis "$base.redis$i.log" --cluster-enabled yes --cluster-config-file nodes.conf \
                    --dir "$WORK/cl$i"
                seeds+=("127.0.0.1:$REDIS_PORT")
            done
            redis-cli --cluster create "${seeds[@]}" --cluster-replicas 0 --cluster-yes >"$base.cluster.log" 2>&1
            for i in $(seq 1 100); do
                redis-cli -p "${REDIS_PORT}" cluster info | grep -q cluster_state:ok && break
                sleep 0.1
            done
            engine="{ \"cluster_address\": [\"$(IFS=,; echo "${seeds[*]}")\"] }"
            ;;
        nats)
            nport="$(free_port)"
            nats-server -a 127.0.0.1 -p "$nport" >"$base.nats.log" 2>&1 &
            SERVER_PIDS+=("$!")
            wait_port "$!" "$nport" || { echo "nats-server did not start" >&2; return 1; }
            ;;
    esac
    local backend
    if [[ $setup == nats ]]; then
        backend="\"engine\": { \"type\": \"memory\" }, \"broker\": { \"enabled\": true, \"type\": \"nats\", \"nats\": { \"url\": \"nats://127.0.0.1:$nport\" } }"
    else
        backend="\"engine\": { \"type\": \"redis\", \"redis\": $engine }"
    fi
    for i in 1 2 3; do
        start_gyre "$base.node$i.log" "$backend"
    done
    TARGET="http://127.0.0.1:${GYRE_PORTS[0]},http://127.0.0.1:${GYRE_PORTS[1]},http://127.0.0.1:${GYRE_PORTS[2]}"
}

run_one() {
    local s="$1" setup="$2" base="$OUT/$1-$2" spec c per pids
    echo "== $s / $setup" >&2
    start_setup "$setup" "$base"
    spec="${s#fanout-}"
    c="${spec%x*}"
    per="${spec#*x}"
    pids="$(IFS=,; echo "${SERVER_PIDS[*]}")"
    local args="fanout -n $((c * per)) -c $c -p 1 --size 100 -d $DURATION --target $TARGET --api-key $API_KEY \
--hmac-secret $SECRET -t 1 --json --server-pid $pids"
    echo "$s $setup: gyre-bench $args" >>"$OUT/commands.txt"
    # shellcheck disable=SC2086
    timeout -k 10 $((DURATION + 150)) "$BENCH" $args >"$base.json" 2>"$base.log" || \
        jq -n '{error: "gyre-bench failed"}' >"$base.json"
    stop_pid "${SERVER_PIDS[@]}"
    SERVER_PIDS=()
    sleep 1
}

for s in "${WORKLOADS[@]}"; do
    for setup in "${SETUPS[@]}"; do
        run_one "$s" "$setup"
    done
done

get() { jq -r "if .error then empty else ($3) // empty end" "$OUT/$1-$2.json" 2>/dev/null | head -1 || true; }
fmt() { [[ -z "$1" ]] && echo "n/a" || printf "%.0f" "$1"; }
ms() { [[ -z "$1" ]] && echo "n/a" || awk -v v="$1" 'BEGIN { printf "%.2f", v / 1000 }'; }
ratio() {
    if [[ -z "$1" || -z "$2" ]] || awk -v b="$2" 'BEGIN { exit !(b == 0) }'; then echo "n/a"; return; fi
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f×", a / b }'
}
emit() { echo "$*" | tee -a "$SUMMARY"; }
for s in "${WORKLOADS[@]}"; do
    emit ""
    emit "### $s, 3 nodes"
    emit ""
    emit "| backend | delivered/s | published/s | p50 ms | p99 ms | lost / dup | server CPU % | delivered/s vs standalone |"
    emit "|---|---:|---:|---:|---:|---|---:|---:|"
    base="$(get "$s" standalone .delivered_per_s)"
    for setup in "${SETUPS[@]}"; do
        d="$(get "$s" "$setup" .delivered_per_s)"
        emit "| $setup | $(fmt "$d") | $(fmt "$(get "$s" "$setup" .published_per_s)") | \
$(ms "$(get "$s" "$setup" .latency_us.p50)") | $(ms "$(get "$s" "$setup" .latency_us.p99)") | \
$(get "$s" "$setup" '"\(.lost) / \(.duplicated)"') | $(get "$s" "$setup" .server.cpu_pct) | $(ratio "$d" "$base") |"
    done
done
echo "== results in $OUT" >&2
