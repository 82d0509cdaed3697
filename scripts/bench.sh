#!/usr/bin/env bash
# Gyre vs redis-server vs nats-server, side by side, with the bundled load tool gyre-bench.
#
#   bash scripts/bench.sh                    # every scenario, 10 s measured per run
#   bash scripts/bench.sh --duration 5       # shorter runs
#   bash scripts/bench.sh --quick            # smoke check: 3 s runs, smaller N
#   bash scripts/bench.sh --only fanout-100x100
#
# Builds release, then for every scenario and server starts the server fresh on a free port,
# runs `gyre-bench ... --json --server-pid PID -t 1`, stops the server and keeps the raw JSON
# under bench/runs/<date>-<hostname>/<scenario>-<server>.json (the tool's report and progress
# next to it as .log). At the end prints one markdown table per scenario (also written to
# summary.md in the same folder) with the ratios Gyre/Redis and Gyre/NATS, and the project's
# targets with whether each is met. See BENCHMARKS.md.
#
# The load tool shares the machine with the server: it runs with one event-loop thread (-t 1),
# Gyre with its default worker count (one per core), redis-server single-threaded as always,
# nats-server with its default GOMAXPROCS.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

usage() {
    cat <<'EOF'
Usage: bash scripts/bench.sh [--duration S] [--quick] [--only SCENARIO]... [--max-load L | --no-wait]

  --duration S     measured seconds per fanout / ingest run (default 10)
  --quick          smoke check: 3 s runs, 1,000 subscribers instead of 10,000, 1,000 and
                   2,000 idle connections instead of 10,000 and 19,000; no load wait
  --only SCENARIO  run only this scenario (repeatable): ingest, fanout-1xN, fanout-100x100,
                   fanout-Nx1, connections, latency (or the group name "fanout"); latency
                   needs Gyre's saturating rate from fanout-100x100 and measures it first
                   when this run has none
  --max-load L     before measuring, wait (up to 10 min, polling every 30 s) until the
                   1-minute load average is at most L (default 1.0)
  --no-wait        do not wait for the load to drop
  --skip-build     use the binaries already in target/release
EOF
}

DURATION=10
QUICK=0
ONLY=()
MAX_LOAD=1.0
WAIT_LOAD=1
BUILD=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) DURATION="${2:?--duration needs a value}"; shift 2 ;;
        --duration=*) DURATION="${1#*=}"; shift ;;
        --quick) QUICK=1; shift ;;
        --only) ONLY+=("${2:?--only needs a scenario}"); shift 2 ;;
        --only=*) ONLY+=("${1#*=}"); shift ;;
        --max-load) MAX_LOAD="${2:?--max-load needs a value}"; shift 2 ;;
        --no-wait) WAIT_LOAD=0; shift ;;
        --skip-build) BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
if ! [[ "$DURATION" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    echo "bench.sh: --duration must be a number of seconds" >&2
    exit 2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

for tool in redis-server nats-server jq cargo ss timeout; do
    command -v "$tool" >/dev/null || { echo "bench.sh: $tool not found" >&2; exit 2; }
done

# Sizes. Full: 10,000 subscribers per fanout scenario, 10,000 and 19,000 idle connections
# (one process holds about 19,900 sockets under the 20,000 open-file hard limit).
if [[ $QUICK == 1 ]]; then
    DURATION=3
    N=1000
    CONNS=(1000 2000)
    WAIT_LOAD=0
    HOLD=2
else
    N=10000
    CONNS=(10000 19000)
    HOLD=5
fi
CH_MID=$(( N >= 10000 ? 100 : 10 ))  # 100 channels x 100 subscribers (quick: 10 x 100)
SIZE=100
API_KEY="bench-api-key"
SECRET="bench-hmac-secret"
SERVERS=(gyre redis nats)
SCENARIOS_ALL=(ingest-1 ingest-8 "fanout-1x$N" "fanout-${CH_MID}x$((N / CH_MID))" "fanout-${N}x1")
for c in "${CONNS[@]}"; do SCENARIOS_ALL+=("connections-$c"); done
SCENARIOS_ALL+=("latency-${CH_MID}x$((N / CH_MID))")
MID="fanout-${CH_MID}x$((N / CH_MID))"
LAT="latency-${CH_MID}x$((N / CH_MID))"

# --only: accept the generic names too (fanout-1xN, fanout-100x100, fanout-Nx1, ...).
selected() {
    local s="$1" o
    [[ ${#ONLY[@]} == 0 ]] && return 0
    for o in "${ONLY[@]}"; do
        case "$o" in
            "$s") return 0 ;;
            ingest) [[ $s == ingest-* ]] && return 0 ;;
            fanout) [[ $s == fanout-* ]] && return 0 ;;
            connections) [[ $s == connections-* ]] && return 0 ;;
            latency) [[ $s == latency-* ]] && return 0 ;;
            fanout-1xN) [[ $s == "fanout-1x$N" ]] && return 0 ;;
            fanout-Nx1) [[ $s == "fanout-${N}x1" ]] && return 0 ;;
            fanout-100x100) [[ $s == "$MID" ]] && return 0 ;;
        esac
    done
    return 1
}
if [[ ${#ONLY[@]} -gt 0 ]]; then
    any=0
    for s in "${SCENARIOS_ALL[@]}"; do selected "$s" && any=1; done
    if [[ $any == 0 ]]; then
        echo "bench.sh: --only matches no scenario; scenarios: ${SCENARIOS_ALL[*]}" >&2
        exit 2
    fi
fi

# ---------------------------------------------------------------------------------------------
# Build, then run copies of the binaries so a concurrent rebuild cannot swap them mid-run.
if [[ $BUILD == 1 ]]; then
    echo "== cargo build --release --bins" >&2
    timeout 3600 cargo build --release --bins
fi
WORK="$(mktemp -d /tmp/gyre-bench-sh.XXXXXX)"
cp target/release/gyre target/release/gyre-bench "$WORK/"
GYRE="$WORK/gyre"
BENCH="$WORK/gyre-bench"

SERVER_PID=""
BENCH_PID=""
cleanup() {
    local rc=$?
    if [[ -n "$BENCH_PID" ]] && kill -0 "$BENCH_PID" 2>/dev/null; then
        kill -TERM "$BENCH_PID" 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
    fi
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Sockets: the tool and the servers inherit this (hard limit permitting).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

STAMP="$(date -u +%Y-%m-%dT%H%M%SZ)"
HOST="$(hostname)"
OUT="bench/runs/$STAMP-$HOST"
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

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
T_START=$(date +%s)
COMMIT="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
DIRTY="$(git status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null | awk '{ print $2 }' | tr '\n' ' ')"
[[ -n "$DIRTY" ]] && COMMIT="$COMMIT + uncommitted changes in: $DIRTY"
CPU_MODEL="$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
{
    echo "date:        $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host:        $HOST"
    echo "nproc:       $(nproc)"
    echo "kernel:      $(uname -r)"
    echo "cpu:         ${CPU_MODEL:-unknown}"
    echo "memory:      $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "commit:      $COMMIT"
    echo "rustc:       $(rustc --version 2>/dev/null || echo unknown)"
    echo "redis:       $(redis-server --version | head -1)"
    echo "nats:        $(nats-server --version | head -1)"
    echo "open files:  $(ulimit -n)"
    echo "duration:    ${DURATION} s measured per fanout/ingest run (1 s warm-up), idle connections held ${HOLD} s"
    echo "load start:  $LOAD_START"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

# ---------------------------------------------------------------------------------------------
# Servers.

PORT=""
SERVER_LOG=""
# start_server KIND LOGFILE: sets SERVER_PID, PORT.
start_server() {
    local kind="$1"
    SERVER_LOG="$2"
    PORT="$(free_port)"
    case "$kind" in
        gyre)
            local cfg="$WORK/gyre-$PORT.json"
            cat >"$cfg" <<EOF
{
  "http_server": { "address": "127.0.0.1", "port": $PORT },
  "log": { "level": "warn" },
  "http_api": { "key": "$API_KEY" },
  "client": { "token": { "hmac_secret_key": "$SECRET" } },
  "channel": { "without_namespace": { "allow_subscribe_for_client": true } }
}
EOF
            "$GYRE" -c "$cfg" >"$SERVER_LOG" 2>&1 &
            ;;
        redis)
            # maxclients past 10,000 (19,000 idle clients + headroom); protected mode off
            # because clients come from 127.0.0.x source addresses.
            redis-server --port "$PORT" --bind 127.0.0.1 --protected-mode no --save '' \
                --appendonly no --maxclients 19500 >"$SERVER_LOG" 2>&1 &
            ;;
        nats)
            nats-server -a 127.0.0.1 -p "$PORT" >"$SERVER_LOG" 2>&1 &
            ;;
    esac
    SERVER_PID=$!
    await_server "$kind" "$SERVER_LOG"
}

# target_args SERVER SCENARIO: Gyre's clients get minted HS256 tokens; ingest needs only the API key.
target_args() {
    case "$1" in
        gyre)
            if [[ $2 == ingest-* ]]; then
                echo "--target http://127.0.0.1:$PORT --api-key $API_KEY"
            else
                echo "--target http://127.0.0.1:$PORT --api-key $API_KEY --hmac-secret $SECRET"
            fi
            ;;
        redis) echo "--target redis://127.0.0.1:$PORT" ;;
        nats) echo "--target nats://127.0.0.1:$PORT" ;;
    esac
}

# gyre-bench arguments of a scenario (before the target).
scenario_args() {
    local s="$1"
    case "$s" in
        ingest-*) echo "ingest -k ${s#ingest-} --size $SIZE -d $DURATION" ;;
        fanout-*)
            local spec="${s#fanout-}"
            local c="${spec%x*}" per="${spec#*x}"
            echo "fanout -n $((c * per)) -c $c -p 1 --size $SIZE -d $DURATION"
            ;;
        connections-*) echo "connections -n ${s#connections-} -d $HOLD" ;;
        latency-*)
            local spec="${s#latency-}"
            local c="${spec%x*}" per="${spec#*x}"
            echo "fanout -n $((c * per)) -c $c -p 1 --size $SIZE -d $DURATION --rate $LAT_RATE"
            ;;
    esac
}

# run_one SCENARIO SERVER: fresh server, one gyre-bench run, raw JSON saved.
run_one() {
    local s="$1" kind="$2"
    local base="$OUT/$s-$kind"
    echo "== $s / $kind" >&2
    if ! start_server "$kind" "$base.server.log"; then
        echo "{\"error\": \"server did not start\"}" >"$base.json"
        return 0
    fi
    # shellcheck disable=SC2046
    local args
    args="$(scenario_args "$s") $(target_args "$kind" "$s") -t 1 --json --server-pid $SERVER_PID"
    echo "$s $kind: gyre-bench $args" >>"$OUT/commands.txt"
    local load_before
    load_before="$(load1)"
    local limit rc=0
    # Bounded: connect (60 s at most), warm-up, measure, drain (5 s), plus margin.
    limit=$(awk -v d="$DURATION" -v h="$HOLD" 'BEGIN { printf "%d", (d > h ? d : h) + 150 }')
    # shellcheck disable=SC2086
    # In the background so a signal to this script is handled at once (bash runs traps only
    # between foreground commands); cleanup ends it.
    timeout -k 10 "$limit" "$BENCH" $args >"$base.json" 2>"$base.log" &
    BENCH_PID=$!
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=""
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "   $kind exited during the run (see $base.server.log)" >&2
        rc=${rc:-0}
        [[ $rc == 0 ]] && rc=99
    fi
    echo "$s $kind $load_before $(load1)" >>"$OUT/loads.txt"
    stop_server
    if [[ $rc != 0 ]]; then
        echo "   gyre-bench exit code $rc; last lines of $base.log:" >&2
        tail -5 "$base.log" | sed 's/^/   /' >&2
        if ! jq -e . "$base.json" >/dev/null 2>&1; then
            jq -n --arg e "gyre-bench exit code $rc" '{error: $e}' >"$base.json"
        else
            jq --arg e "gyre-bench exit code $rc" '. + {error: $e}' "$base.json" >"$base.tmp" && mv "$base.tmp" "$base.json"
        fi
    fi
    # Keep the server's log when the run failed, and Gyre's when it logged anything (warn level);
    # redis-server and nats-server always log their start-up banner.
    if [[ $rc == 0 && ( $kind != gyre || ! -s "$base.server.log" ) ]]; then
        rm -f "$base.server.log"
    fi
    # Let sockets of the run settle before the next server starts.
    sleep 1
}

# ---------------------------------------------------------------------------------------------
# Reading results.

# get SCENARIO SERVER JQ: the value, or empty when missing / failed.
get() {
    local f="$OUT/$1-$2.json"
    [[ -s "$f" ]] || return 0
    jq -r "if .error then empty else ($3) // empty end" "$f" 2>/dev/null | head -1 || true
}

# Number with thousands separators (integer).
num() {
    [[ -z "$1" ]] && { echo "n/a"; return; }
    printf "%.0f" "$1" | sed -e ':a' -e 's/\([0-9]\)\([0-9]\{3\}\)\($\|,\)/\1,\2\3/' -e 'ta'
}
# Fixed decimals.
dec() {
    [[ -z "$1" ]] && { echo "n/a"; return; }
    printf "%.${2:-2}f" "$1"
}
# Microseconds as milliseconds.
ms() {
    [[ -z "$1" ]] && { echo "n/a"; return; }
    awk -v v="$1" 'BEGIN { printf "%.2f", v / 1000 }'
}
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

# 1-minute load average before → after one run (other work on the machine disturbs figures).
loads() {
    [[ -s "$OUT/loads.txt" ]] || { echo "n/a"; return; }
    awk -v s="$1" -v k="$2" '$1 == s && $2 == k { v = $3 " → " $4 } END { print (v == "" ? "n/a" : v) }' "$OUT/loads.txt"
}
load_row() {
    local s="$1"
    emit "| load average (1 min) before → after | $(loads "$s" gyre) | $(loads "$s" redis) | $(loads "$s" nats) | | |"
}

TARGETS=()
# target_row TEXT FIGURE MET
target_row() { TARGETS+=("| $1 | $2 | $3 |"); }
met() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "") { print "n/a"; exit } print (a >= b ? "met" : "**not met**") }'; }
met_le() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "") { print "n/a"; exit } print (a <= b ? "met" : "**not met**") }'; }
failures() {
    local s="$1" k st
    for k in "${SERVERS[@]}"; do
        st="$(status_of "$s" "$k")"
        [[ -n "$st" ]] && emit "" && emit "_$k: ${st}._"
    done
    return 0
}

table_ingest() {
    local k
    emit ""
    emit "### Ingest: pipelined publishes, no subscribers (commands/s)"
    emit ""
    emit "Batch 1000 commands × 4 batches in flight per connection, ${SIZE}-byte payload."
    emit ""
    emit "| connections | Gyre | Redis | NATS | Gyre/Redis | Gyre/NATS | server CPU % (Gyre / Redis / NATS) | load avg before → after (Gyre / Redis / NATS) |"
    emit "|---|---:|---:|---:|---:|---:|---|---|"
    for k in 1 8; do
        local s="ingest-$k"
        selected "$s" || continue
        local g r n
        g="$(get "$s" gyre .commands_per_s)"
        r="$(get "$s" redis .commands_per_s)"
        n="$(get "$s" nats .commands_per_s)"
        emit "| $k | $(num "$g") | $(num "$r") | $(num "$n") | $(ratio "$g" "$r") | $(ratio "$g" "$n") | $(dec "$(get "$s" gyre .server.cpu_pct)" 0) / $(dec "$(get "$s" redis .server.cpu_pct)" 0) / $(dec "$(get "$s" nats .server.cpu_pct)" 0) | $(loads "$s" gyre) / $(loads "$s" redis) / $(loads "$s" nats) |"
        target_row "ingest ($k conn) ≥ 1.5× redis pipelined PUBLISH" "$(ratio "$g" "$r")" "$(met "$(awk -v a="$g" -v b="$r" 'BEGIN { if (a != "" && b > 0) print a / b }')" 1.5)"
        failures "$s"
    done
}

# row LABEL SCENARIO JQ FORMATTER RATIO?(1/0)
row() {
    local label="$1" s="$2" q="$3" f="$4" withratio="$5" g r n
    g="$(get "$s" gyre "$q")"
    r="$(get "$s" redis "$q")"
    n="$(get "$s" nats "$q")"
    if [[ $withratio == 1 ]]; then
        emit "| $label | $($f "$g") | $($f "$r") | $($f "$n") | $(ratio "$g" "$r") | $(ratio "$g" "$n") |"
    else
        emit "| $label | $($f "$g") | $($f "$r") | $($f "$n") | | |"
    fi
}
kib() { [[ -z "$1" ]] && { echo "n/a"; return; }; awk -v v="$1" 'BEGIN { printf "%.1f", v / 1024 }'; }
mib() { [[ -z "$1" ]] && { echo "n/a"; return; }; awk -v v="$1" 'BEGIN { printf "%.1f", v / 1024 }'; }
plain() { [[ -z "$1" ]] && echo "n/a" || echo "$1"; }

table_fanout() {
    local s="$1" title="$2"
    selected "$s" || return 0
    emit ""
    emit "### $title"
    emit ""
    emit "| | Gyre | Redis | NATS | Gyre/Redis | Gyre/NATS |"
    emit "|---|---:|---:|---:|---:|---:|"
    row "delivered/s" "$s" .delivered_per_s num 1
    row "published/s" "$s" .published_per_s num 1
    row "latency p50 (ms)" "$s" .latency_us.p50 ms 0
    row "latency p99 (ms)" "$s" .latency_us.p99 ms 0
    row "latency p99.9 (ms)" "$s" .latency_us.p999 ms 0
    row "latency max (ms)" "$s" .latency_us.max ms 0
    row "subscribers ready" "$s" .subscribers_ready num 0
    row "lost / duplicated" "$s" '"\(.lost) / \(.duplicated)"' plain 0
    row "disconnects" "$s" .disconnects plain 0
    row "server CPU (% of one core)" "$s" .server.cpu_pct plain 0
    row "server RSS max (MiB)" "$s" .server.rss_max_kb mib 0
    row "gyre-bench CPU (% of one core)" "$s" .client.cpu_pct plain 0
    load_row "$s"
    failures "$s"
    local g r n
    g="$(get "$s" gyre .delivered_per_s)"
    r="$(get "$s" redis .delivered_per_s)"
    n="$(get "$s" nats .delivered_per_s)"
    local rr rn
    rr="$(awk -v a="$g" -v b="$r" 'BEGIN { if (a != "" && b > 0) print a / b }')"
    rn="$(awk -v a="$g" -v b="$n" 'BEGIN { if (a != "" && b > 0) print a / b }')"
    target_row "$s delivered/s ≥ 2× redis" "$(ratio "$g" "$r")" "$(met "$rr" 2)"
    target_row "$s delivered/s ≥ 1.2× nats" "$(ratio "$g" "$n")" "$(met "$rn" 1.2)"
}

table_connections() {
    local c any=0
    for c in "${CONNS[@]}"; do selected "connections-$c" && any=1; done
    [[ $any == 1 ]] || return 0
    emit ""
    emit "### Idle connections: server memory per connection"
    emit ""
    emit "Gyre: WebSocket + Centrifuge connect command (JSON, HS256 token), no subscription."
    emit "Redis: RESP connection after PING. NATS: CONNECT + PING. Memory per connection ="
    emit "(server RSS 1 s after the last connect − RSS before) / open connections; held ${HOLD} s."
    emit ""
    emit "| | Gyre | Redis | NATS | Gyre/Redis | Gyre/NATS |"
    emit "|---|---:|---:|---:|---:|---:|"
    for c in "${CONNS[@]}"; do
        local s="connections-$c"
        selected "$s" || continue
        row "$(num "$c"): KiB per connection" "$s" .server.bytes_per_connection kib 1
        row "$(num "$c"): open / failed" "$s" '"\(.ready) / \(.failed)"' plain 0
        row "$(num "$c"): server RSS before → after (MiB)" "$s" '"\(.server.rss_before_kb / 1024 * 10 | round / 10) → \(.server.rss_after_kb / 1024 * 10 | round / 10)"' plain 0
        row "$(num "$c"): disconnects while held" "$s" .disconnects plain 0
        emit "| $(num "$c"): load average (1 min) before → after | $(loads "$s" gyre) | $(loads "$s" redis) | $(loads "$s" nats) | | |"
        failures "$s"
        local g
        g="$(get "$s" gyre .server.bytes_per_connection)"
        target_row "≤ 4 KiB server memory per idle WebSocket connection ($(num "$c"))" "$(kib "$g") KiB" "$(met_le "$g" 4096)"
    done
    # Between the two sizes (two server processes, same configuration): without the start-up
    # growth that the per-connection figure above spreads over the connections.
    local a="connections-${CONNS[0]}" b="connections-${CONNS[1]}"
    if selected "$a" && selected "$b"; then
        local k m=()
        for k in "${SERVERS[@]}"; do
            m+=("$(awk -v x="$(get "$a" "$k" .server.rss_after_kb)" -v y="$(get "$b" "$k" .server.rss_after_kb)" \
                -v d="$(( CONNS[1] - CONNS[0] ))" 'BEGIN { if (x != "" && y != "") printf "%.1f", (y - x) / d; else print "n/a" }')")
        done
        emit "| marginal KiB per connection, $(num "${CONNS[0]}") → $(num "${CONNS[1]}") (RSS after, difference) | ${m[0]} | ${m[1]} | ${m[2]} | $(ratio "${m[0]/n\/a/}" "${m[1]/n\/a/}") | $(ratio "${m[0]/n\/a/}" "${m[2]/n\/a/}") |"
    fi
}

table_latency() {
    local s="$LAT"
    selected "$s" || return 0
    emit ""
    emit "### Latency at 50% of Gyre's saturating rate (${CH_MID} channels × $((N / CH_MID)) subscribers)"
    emit ""
    emit "Offered rate for all three servers: ${LAT_RATE} publishes/s = 50% of Gyre's published/s in $MID"
    emit "(same absolute rate for all). Publish → deliver latency over every delivered message."
    emit ""
    emit "| | Gyre | Redis | NATS | Gyre/Redis | Gyre/NATS |"
    emit "|---|---:|---:|---:|---:|---:|"
    row "saturating published/s ($MID)" "$MID" .published_per_s num 1
    row "saturating delivered/s ($MID)" "$MID" .delivered_per_s num 1
    local k pct=()
    for k in "${SERVERS[@]}"; do
        local sat
        sat="$(get "$MID" "$k" .published_per_s)"
        pct+=("$(awk -v r="$LAT_RATE" -v s="$sat" 'BEGIN { if (s > 0) printf "%.0f%%", r / s * 100; else print "n/a" }')")
    done
    emit "| offered rate, % of the server's own saturation | ${pct[0]} | ${pct[1]} | ${pct[2]} | | |"
    row "published/s achieved" "$s" .published_per_s num 0
    row "delivered/s" "$s" .delivered_per_s num 0
    row "latency p50 (ms)" "$s" .latency_us.p50 ms 1
    row "latency p99 (ms)" "$s" .latency_us.p99 ms 1
    row "latency p99.9 (ms)" "$s" .latency_us.p999 ms 1
    row "latency max (ms)" "$s" .latency_us.max ms 1
    row "lost / duplicated" "$s" '"\(.lost) / \(.duplicated)"' plain 0
    row "server CPU (% of one core)" "$s" .server.cpu_pct plain 0
    load_row "$s"
    failures "$s"
    local p99
    p99="$(get "$s" gyre .latency_us.p99)"
    target_row "p99 publish→deliver ≤ 5 ms at 50% of the saturating rate" "$(ms "$p99") ms" "$(met_le "$p99" 5000)"
}

# ---------------------------------------------------------------------------------------------
# Run.

LAT_RATE=""
for s in "${SCENARIOS_ALL[@]}"; do
    selected "$s" || continue
    if [[ $s == latency-* ]]; then
        if [[ -z "$(get "$MID" gyre .published_per_s)" ]]; then
            echo "== latency needs Gyre's saturating rate: measuring $MID first" >&2
            run_one "$MID" gyre
        fi
        sat="$(get "$MID" gyre .published_per_s)"
        if [[ -z "$sat" ]] || awk -v s="$sat" 'BEGIN { exit !(s <= 0) }'; then
            echo "bench.sh: no saturating rate for Gyre from $MID; skipping latency" >&2
            continue
        fi
        LAT_RATE="$(awk -v s="$sat" 'BEGIN { printf "%d", s / 2 }')"
    fi
    for kind in "${SERVERS[@]}"; do
        run_one "$s" "$kind"
    done
done

LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"
T_END=$(date +%s)
{
    echo "load end:    $LOAD_END"
    echo "wall time:   $(( (T_END - T_START) / 60 )) min $(( (T_END - T_START) % 60 )) s (measuring, after the build)"
} >>"$OUT/machine.txt"

# ---------------------------------------------------------------------------------------------
# Tables.

emit "## Run $STAMP on $HOST"
emit ""
emit '```'
while IFS= read -r l; do emit "$l"; done <"$OUT/machine.txt"
emit '```'
emit ""
emit "Tool: \`gyre-bench -t 1\` (one event-loop thread) on the same machine as the server; Gyre"
emit "with its default workers (one per core, $(nproc) here). Payload ${SIZE} bytes. Ratios are"
emit "Gyre's figure divided by the peer's: above 1 Gyre is ahead on throughput rows, behind on"
emit "memory and latency rows."

any_ingest=0
for k in 1 8; do selected "ingest-$k" && any_ingest=1; done
[[ $any_ingest == 1 ]] && table_ingest
table_fanout "fanout-1x$N" "Fanout: 1 channel → $(num "$N") subscribers (1 publisher, full speed)"
table_fanout "$MID" "Fanout: $CH_MID channels × $((N / CH_MID)) subscribers (1 publisher, full speed)"
table_fanout "fanout-${N}x1" "Fanout: $(num "$N") channels × 1 subscriber (1 publisher, full speed)"
table_connections
[[ -n "$LAT_RATE" ]] && table_latency

if [[ ${#TARGETS[@]} -gt 0 ]]; then
    emit ""
    emit "### Targets"
    emit ""
    emit "| target | Gyre's figure | |"
    emit "|---|---:|---|"
    for t in "${TARGETS[@]}"; do emit "$t"; done
fi
echo >&2
echo "== raw results in $OUT (summary.md, machine.txt, commands.txt, <scenario>-<server>.json/.log)" >&2
