#!/usr/bin/env bash
# Gyre on the memory engine vs two Gyre nodes sharing a redis-server vs redis-server itself,
# side by side, with the bundled load tool gyre-bench.
#
#   bash scripts/bench-redis.sh                  # every workload, 10 s measured per run
#   bash scripts/bench-redis.sh --duration 5     # shorter runs
#   bash scripts/bench-redis.sh --only fanout-1xN --only ingest-8
#
# Setups, each started fresh for every run (free ports, nothing kept between runs):
#   memory  one Gyre node, memory engine (the default configuration);
#   redis2  a redis-server (--save '' --appendonly no) and two Gyre nodes A and B on it
#           ({"engine":{"type":"redis","redis":{"address":["redis://127.0.0.1:PORT"]}}});
#           fanout subscribers spread over A and B (gyre-bench --target A,B), publishers on A;
#           ingest connections over A and B in turn;
#   raw     the same workload straight on a redis-server (RESP SUBSCRIBE / PUBLISH).
# Workloads: fanout 1 channel × N subscribers, fanout 100 channels × N/100 subscribers
# (N = 1,000 by default, one publisher at full speed), ingest over 1 and 8 connections.
#
# Builds release, runs `gyre-bench ... --json --server-pid PIDS -t 1` (PIDS: every server
# process of the setup — for redis2 both nodes and the redis-server — whose CPU and RSS the
# report sums) and keeps the raw JSON under bench/runs/<UTC timestamp>-redis/<workload>-<setup>.json
# (the tool's report and progress next to it as .log). At the end prints one markdown table
# per workload (also written to summary.md there) with the ratios redis2/memory and redis2/raw.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

usage() {
    cat <<'EOF'
Usage: bash scripts/bench-redis.sh [--duration S] [--subscribers N] [--workers W] [--only WORKLOAD]...
                                   [--max-load L | --no-wait] [--skip-build]

  --duration S       measured seconds per run (default 10)
  --subscribers N    subscribers per fanout run (default 1000; a multiple of 100)
  --workers W        workers of every Gyre node (default 1; 0 = one per core)
  --only WORKLOAD    run only this workload (repeatable): fanout-1xN, fanout-100xM (or the
                     exact names, e.g. fanout-1x1000), fanout, ingest-1, ingest-8, ingest
  --max-load L       before measuring, wait (up to 10 min, polling every 30 s) until the
                     1-minute load average is at most L (default 1.0)
  --no-wait          do not wait for the load to drop
  --skip-build       use the binaries already in target/release
EOF
}

DURATION=10
N=1000
WORKERS=1
ONLY=()
MAX_LOAD=1.0
WAIT_LOAD=1
BUILD=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) DURATION="${2:?--duration needs a value}"; shift 2 ;;
        --duration=*) DURATION="${1#*=}"; shift ;;
        --subscribers) N="${2:?--subscribers needs a value}"; shift 2 ;;
        --subscribers=*) N="${1#*=}"; shift ;;
        --workers) WORKERS="${2:?--workers needs a value}"; shift 2 ;;
        --workers=*) WORKERS="${1#*=}"; shift ;;
        --only) ONLY+=("${2:?--only needs a workload}"); shift 2 ;;
        --only=*) ONLY+=("${1#*=}"); shift ;;
        --max-load) MAX_LOAD="${2:?--max-load needs a value}"; shift 2 ;;
        --no-wait) WAIT_LOAD=0; shift ;;
        --skip-build) BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-redis.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
if ! [[ "$DURATION" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    echo "bench-redis.sh: --duration must be a number of seconds" >&2
    exit 2
fi
if ! [[ "$N" =~ ^[0-9]+$ ]] || (( N < 100 || N % 100 != 0 )); then
    echo "bench-redis.sh: --subscribers must be a multiple of 100" >&2
    exit 2
fi
if ! [[ "$WORKERS" =~ ^[0-9]+$ ]]; then
    echo "bench-redis.sh: --workers must be a number (0 = one per core)" >&2
    exit 2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

for tool in redis-server jq cargo ss timeout; do
    command -v "$tool" >/dev/null || { echo "bench-redis.sh: $tool not found" >&2; exit 2; }
done

SIZE=100
API_KEY="bench-api-key"
SECRET="bench-hmac-secret"
SETUPS=(memory redis2 raw)
WIDE="fanout-1x$N"
MANY="fanout-100x$((N / 100))"
WORKLOADS_ALL=("$WIDE" "$MANY" ingest-1 ingest-8)

selected() {
    local s="$1" o
    [[ ${#ONLY[@]} == 0 ]] && return 0
    for o in "${ONLY[@]}"; do
        case "$o" in
            "$s") return 0 ;;
            fanout) [[ $s == fanout-* ]] && return 0 ;;
            ingest) [[ $s == ingest-* ]] && return 0 ;;
            fanout-1xN) [[ $s == "$WIDE" ]] && return 0 ;;
            fanout-100xM|fanout-100x100) [[ $s == "$MANY" ]] && return 0 ;;
        esac
    done
    return 1
}
if [[ ${#ONLY[@]} -gt 0 ]]; then
    any=0
    for s in "${WORKLOADS_ALL[@]}"; do selected "$s" && any=1; done
    if [[ $any == 0 ]]; then
        echo "bench-redis.sh: --only matches no workload; workloads: ${WORKLOADS_ALL[*]}" >&2
        exit 2
    fi
fi

# ---------------------------------------------------------------------------------------------
# Build, then run copies of the binaries so a concurrent rebuild cannot swap them mid-run.
if [[ $BUILD == 1 ]]; then
    echo "== cargo build --release" >&2
    timeout 3600 cargo build --release
fi
WORK="$(mktemp -d /tmp/gyre-bench-redis.XXXXXX)"
cp target/release/gyre target/release/gyre-bench "$WORK/"
GYRE="$WORK/gyre"
BENCH="$WORK/gyre-bench"

# Every server process of the current setup (Gyre nodes, redis-server).
SERVER_PIDS=()
BENCH_PID=""
cleanup() {
    local rc=$? p
    if [[ -n "$BENCH_PID" ]] && kill -0 "$BENCH_PID" 2>/dev/null; then
        kill -TERM "$BENCH_PID" 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
    fi
    for p in "${SERVER_PIDS[@]}"; do
        if kill -0 "$p" 2>/dev/null; then
            kill -KILL "$p" 2>/dev/null || true
            wait "$p" 2>/dev/null || true
        fi
    done
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

STAMP="$(date -u +%Y-%m-%dT%H%M%SZ)"
OUT="bench/runs/$STAMP-redis"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.md"
: >"$SUMMARY"

load1() { cut -d' ' -f1 /proc/loadavg; }

if [[ $WAIT_LOAD == 1 ]]; then
    waited=0
    while awk -v l="$(load1)" -v m="$MAX_LOAD" 'BEGIN { exit !(l > m) }'; do
        if (( waited >= 600 )); then
            echo "== load $(load1) still above $MAX_LOAD after 10 min; measuring anyway" >&2
            break
        fi
        echo "== load average $(load1) > $MAX_LOAD; waiting (${waited}s of 600s)" >&2
        sleep 30
        waited=$((waited + 30))
    done
fi

NPROC="$(nproc)"
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
T_START=$(date +%s)
COMMIT="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
DIRTY="$(git status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null | awk '{ print $2 }' | tr '\n' ' ')"
[[ -n "$DIRTY" ]] && COMMIT="$COMMIT + uncommitted changes in: $DIRTY"
CPU_MODEL="$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
WORKERS_TEXT="$WORKERS"
[[ $WORKERS == 0 ]] && WORKERS_TEXT="0 (one per core: $NPROC)"
{
    echo "date:        $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host:        $(hostname)"
    echo "nproc:       $NPROC"
    echo "kernel:      $(uname -r)"
    echo "cpu:         ${CPU_MODEL:-unknown}"
    echo "memory:      $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "commit:      $COMMIT"
    echo "rustc:       $(rustc --version 2>/dev/null || echo unknown)"
    echo "redis:       $(redis-server --version | head -1)"
    echo "open files:  $(ulimit -n)"
    echo "gyre:        workers $WORKERS_TEXT per node"
    echo "duration:    ${DURATION} s measured per run (1 s warm-up)"
    echo "load start:  $LOAD_START"
    echo "contention:  every process of a run shares these $NPROC cores: gyre-bench (one event-loop"
    echo "             thread), and memory: 1 Gyre node; redis2: 2 Gyre nodes + redis-server;"
    echo "             raw: redis-server. redis2 runs four busy processes on $NPROC cores, so its"
    echo "             figures are a floor for what two nodes on their own machines would do."
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

# ---------------------------------------------------------------------------------------------
# Servers.

# start_redis LOG: sets REDIS_PORT, adds the pid to SERVER_PIDS.
REDIS_PORT=""
start_redis() {
    REDIS_PORT="$(free_port)"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --maxclients 10000 >"$1" 2>&1 &
    local pid=$!
    SERVER_PIDS+=("$pid")
    if ! wait_port "$pid" "$REDIS_PORT"; then
        echo "bench-redis.sh: redis-server did not start on port $REDIS_PORT; its log:" >&2
        tail -20 "$1" >&2 || true
        return 1
    fi
}

# start_gyre LOG [REDIS_PORT]: memory engine, or the redis engine on 127.0.0.1:REDIS_PORT;
# appends the port to GYRE_PORTS and the pid to SERVER_PIDS.
GYRE_PORTS=()
start_gyre() {
    local log="$1" redis="${2:-}" port cfg engine=""
    port="$(free_port)"
    cfg="$WORK/gyre-$port.json"
    if [[ -n "$redis" ]]; then
        engine=",
  \"engine\": { \"type\": \"redis\", \"redis\": { \"address\": [\"redis://127.0.0.1:$redis\"] } }"
    fi
    cat >"$cfg" <<EOF
{
  "http_server": { "address": "127.0.0.1", "port": $port },
  "log": { "level": "warn" },
  "workers": $WORKERS,
  "http_api": { "key": "$API_KEY" },
  "client": { "token": { "hmac_secret_key": "$SECRET" } },
  "channel": { "without_namespace": { "allow_subscribe_for_client": true } }$engine
}
EOF
    "$GYRE" -c "$cfg" >"$log" 2>&1 &
    local pid=$!
    SERVER_PIDS+=("$pid")
    GYRE_PORTS+=("$port")
    if ! wait_port "$pid" "$port"; then
        echo "bench-redis.sh: gyre did not start on port $port; its log:" >&2
        tail -20 "$log" >&2 || true
        return 1
    fi
}

# start_setup SETUP BASE: starts every server of SETUP; sets TARGET.
TARGET=""
start_setup() {
    local setup="$1" base="$2"
    GYRE_PORTS=()
    case "$setup" in
        memory)
            start_gyre "$base.server.log" || return 1
            TARGET="http://127.0.0.1:${GYRE_PORTS[0]}"
            ;;
        redis2)
            start_redis "$base.redis.log" || return 1
            start_gyre "$base.server.log" "$REDIS_PORT" || return 1
            start_gyre "$base.server-b.log" "$REDIS_PORT" || return 1
            TARGET="http://127.0.0.1:${GYRE_PORTS[0]},http://127.0.0.1:${GYRE_PORTS[1]}"
            ;;
        raw)
            start_redis "$base.redis.log" || return 1
            TARGET="redis://127.0.0.1:$REDIS_PORT"
            ;;
    esac
}

# Whether every server of the setup still runs.
stop_servers() {
    if ((${#SERVER_PIDS[@]})); then stop_pid "${SERVER_PIDS[@]}"; fi
    SERVER_PIDS=()
}

servers_alive() {
    local p
    for p in "${SERVER_PIDS[@]}"; do
        kill -0 "$p" 2>/dev/null || return 1
    done
}

# gyre-bench arguments of a workload (before the target).
workload_args() {
    local s="$1"
    case "$s" in
        ingest-*) echo "ingest -k ${s#ingest-} --size $SIZE -d $DURATION" ;;
        fanout-*)
            local spec="${s#fanout-}"
            local c="${spec%x*}" per="${spec#*x}"
            echo "fanout -n $((c * per)) -c $c -p 1 --size $SIZE -d $DURATION"
            ;;
    esac
}

# Gyre's clients get minted HS256 tokens; ingest needs only the API key.
target_args() {
    local setup="$1" s="$2"
    case "$setup" in
        raw) echo "--target $TARGET" ;;
        *)
            if [[ $s == ingest-* ]]; then
                echo "--target $TARGET --api-key $API_KEY"
            else
                echo "--target $TARGET --api-key $API_KEY --hmac-secret $SECRET"
            fi
            ;;
    esac
}

# run_one WORKLOAD SETUP: fresh servers, one gyre-bench run, raw JSON saved.
run_one() {
    local s="$1" setup="$2"
    local base="$OUT/$s-$setup"
    echo "== $s / $setup" >&2
    if ! start_setup "$setup" "$base"; then
        stop_servers
        echo "{\"error\": \"server did not start\"}" >"$base.json"
        return 0
    fi
    local pids args
    pids="$(IFS=,; echo "${SERVER_PIDS[*]}")"
    args="$(workload_args "$s") $(target_args "$setup" "$s") -t 1 --json --server-pid $pids"
    echo "$s $setup: gyre-bench $args" >>"$OUT/commands.txt"
    local load_before limit rc=0
    load_before="$(load1)"
    # Bounded: connect (60 s at most), warm-up, measure, drain (5 s), plus margin.
    limit=$(awk -v d="$DURATION" 'BEGIN { printf "%d", d + 150 }')
    # shellcheck disable=SC2086
    timeout -k 10 "$limit" "$BENCH" $args >"$base.json" 2>"$base.log" &
    BENCH_PID=$!
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=""
    if ! servers_alive; then
        echo "   a server of $setup exited during the run (see $base.*.log)" >&2
        [[ $rc == 0 ]] && rc=99
    fi
    echo "$s $setup $load_before $(load1)" >>"$OUT/loads.txt"
    stop_servers
    if [[ $rc != 0 ]]; then
        echo "   gyre-bench exit code $rc; last lines of $base.log:" >&2
        tail -5 "$base.log" | sed 's/^/   /' >&2
        if ! jq -e . "$base.json" >/dev/null 2>&1; then
            jq -n --arg e "gyre-bench exit code $rc" '{error: $e}' >"$base.json"
        else
            jq --arg e "gyre-bench exit code $rc" '. + {error: $e}' "$base.json" >"$base.tmp" && mv "$base.tmp" "$base.json"
        fi
    fi
    # Keep the servers' logs when the run failed, and Gyre's when it logged anything (warn
    # level); redis-server always logs its start-up banner.
    local f
    for f in "$base".server*.log "$base".redis.log; do
        [[ -e "$f" ]] || continue
        if [[ $rc == 0 && ( $f == *.redis.log || ! -s "$f" ) ]]; then
            rm -f "$f"
        fi
    done
    # Let sockets of the run settle before the next servers start.
    sleep 1
}

# ---------------------------------------------------------------------------------------------
# Reading results.

get() {
    local f="$OUT/$1-$2.json"
    [[ -s "$f" ]] || return 0
    jq -r "if .error then empty else ($3) // empty end" "$f" 2>/dev/null | head -1 || true
}
num() {
    [[ -z "$1" ]] && { echo "n/a"; return; }
    printf "%.0f" "$1" | sed -e ':a' -e 's/\([0-9]\)\([0-9]\{3\}\)\($\|,\)/\1,\2\3/' -e 'ta'
}
ms() {
    [[ -z "$1" ]] && { echo "n/a"; return; }
    awk -v v="$1" 'BEGIN { printf "%.2f", v / 1000 }'
}
mib() { [[ -z "$1" ]] && { echo "n/a"; return; }; awk -v v="$1" 'BEGIN { printf "%.1f", v / 1024 }'; }
plain() { [[ -z "$1" ]] && echo "n/a" || echo "$1"; }
ratio() {
    if [[ -z "$1" || -z "$2" ]] || awk -v b="$2" 'BEGIN { exit !(b == 0) }'; then
        echo "n/a"
        return
    fi
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f×", a / b }'
}
status_of() {
    local f="$OUT/$1-$2.json"
    [[ -s "$f" ]] || { echo "not run"; return; }
    jq -r '.error // empty' "$f" 2>/dev/null || true
}

emit() { echo "$*" | tee -a "$SUMMARY"; }

loads() {
    [[ -s "$OUT/loads.txt" ]] || { echo "n/a"; return; }
    awk -v s="$1" -v k="$2" '$1 == s && $2 == k { v = $3 " → " $4 } END { print (v == "" ? "n/a" : v) }' "$OUT/loads.txt"
}
failures() {
    local s="$1" k st
    for k in "${SETUPS[@]}"; do
        st="$(status_of "$s" "$k")"
        [[ -n "$st" ]] && emit "" && emit "_$k: ${st}._"
    done
    return 0
}

# row LABEL WORKLOAD JQ FORMATTER RATIO?(1/0)
row() {
    local label="$1" s="$2" q="$3" f="$4" withratio="$5" m r w
    m="$(get "$s" memory "$q")"
    r="$(get "$s" redis2 "$q")"
    w="$(get "$s" raw "$q")"
    if [[ $withratio == 1 ]]; then
        emit "| $label | $($f "$m") | $($f "$r") | $($f "$w") | $(ratio "$r" "$m") | $(ratio "$r" "$w") |"
    else
        emit "| $label | $($f "$m") | $($f "$r") | $($f "$w") | | |"
    fi
}

table_head() {
    emit ""
    emit "### $1"
    emit ""
    emit "| | Gyre memory, 1 node | Gyre redis, 2 nodes | redis-server | 2 nodes / memory | 2 nodes / redis-server |"
    emit "|---|---:|---:|---:|---:|---:|"
}

table_fanout() {
    local s="$1" title="$2"
    selected "$s" || return 0
    table_head "$title"
    row "delivered/s" "$s" .delivered_per_s num 1
    row "published/s" "$s" .published_per_s num 1
    row "latency p50 (ms)" "$s" .latency_us.p50 ms 1
    row "latency p99 (ms)" "$s" .latency_us.p99 ms 1
    row "latency p99.9 (ms)" "$s" .latency_us.p999 ms 0
    row "latency max (ms)" "$s" .latency_us.max ms 0
    row "subscribers ready" "$s" .subscribers_ready num 0
    row "subscribers per node" "$s" '[.nodes[]?.subscribers] | if length > 0 then map(tostring) | join(" / ") else empty end' plain 0
    row "lost / duplicated" "$s" '"\(.lost) / \(.duplicated)"' plain 0
    row "disconnects" "$s" .disconnects plain 0
    row "server CPU, all server processes (% of one core)" "$s" .server.cpu_pct plain 1
    row "server RSS max, all server processes (MiB)" "$s" .server.rss_max_kb mib 0
    row "gyre-bench CPU (% of one core)" "$s" .client.cpu_pct plain 0
    emit "| load average (1 min) before → after | $(loads "$s" memory) | $(loads "$s" redis2) | $(loads "$s" raw) | | |"
    failures "$s"
}

table_ingest() {
    local k any=0
    for k in 1 8; do selected "ingest-$k" && any=1; done
    [[ $any == 1 ]] || return 0
    table_head "Ingest: pipelined publishes, no subscribers (commands/s)"
    for k in 1 8; do
        local s="ingest-$k"
        selected "$s" || continue
        row "$k connection(s): commands/s" "$s" .commands_per_s num 1
        row "$k connection(s): connections per node" "$s" '[.nodes[]?.publishers] | if length > 0 then map(tostring) | join(" / ") else empty end' plain 0
        row "$k connection(s): server CPU, all server processes (% of one core)" "$s" .server.cpu_pct plain 1
        row "$k connection(s): publish errors" "$s" .publish_errors plain 0
        emit "| $k connection(s): load average before → after | $(loads "$s" memory) | $(loads "$s" redis2) | $(loads "$s" raw) | | |"
        failures "$s"
    done
}

# ---------------------------------------------------------------------------------------------
# Run.

for s in "${WORKLOADS_ALL[@]}"; do
    selected "$s" || continue
    for setup in "${SETUPS[@]}"; do
        run_one "$s" "$setup"
    done
done

LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"
T_END=$(date +%s)
{
    echo "load end:    $LOAD_END"
    echo "wall time:   $(( (T_END - T_START) / 60 )) min $(( (T_END - T_START) % 60 )) s (measuring, after the build)"
} >>"$OUT/machine.txt"

emit "## Run $STAMP: Gyre memory vs Gyre on Redis (2 nodes) vs redis-server"
emit ""
emit '```'
while IFS= read -r l; do emit "$l"; done <"$OUT/machine.txt"
emit '```'
emit ""
emit "Tool: \`gyre-bench -t 1\` on the same machine. Payload ${SIZE} bytes, 1 publisher at full"
emit "speed (fanout), batch 1000 × 4 in flight per connection (ingest). Gyre redis, 2 nodes:"
emit "subscribers spread over nodes A and B, publisher on A, so about half of all deliveries cross"
emit "nodes through Redis PUB/SUB; ingest connections over A and B in turn. Server CPU and RSS are"
emit "summed over every server process of the setup (redis2: both nodes and redis-server). Ratios"
emit "are the 2-node figure divided by the other: above 1 the 2-node setup is ahead on throughput"
emit "rows, behind on latency and CPU rows. gyre-bench near 100% of one core means the load tool,"
emit "not the server, sets the pace of that run."

table_fanout "$WIDE" "Fanout: 1 channel → $(num "$N") subscribers"
table_fanout "$MANY" "Fanout: 100 channels × $((N / 100)) subscribers"
table_ingest

echo >&2
echo "== raw results in $OUT (summary.md, machine.txt, commands.txt, <workload>-<setup>.json/.log)" >&2
