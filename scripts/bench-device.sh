#!/usr/bin/env bash
# The whole comparison on a many-core machine in one run: Gyre, redis-server, redis-server with
# I/O threads and nats-server under the same workloads, the servers pinned to the first half of
# the CPUs and the load tool to the other half. Every result is kept as JSON and CSV, one HTML
# page puts all servers of each workload on the same charts, and everything is packed into one
# archive whose path is printed last.
#
#   bash scripts/bench-device.sh                  # full sizes, 10 s measured per run
#   bash scripts/bench-device.sh --quick          # small sizes, 2 s runs (works on 2 cores)
#   bash scripts/bench-device.sh --only fanout-1x10000 --only paced-1x1000
#   GYRE=/path/gyre BENCH=/path/gyre-bench bash scripts/bench-device.sh --skip-build
#   (a machine without a toolchain or the peers: scripts/bench-pack.sh packs all it needs)
#
# Workloads (full / --quick):
#   ingest-1, ingest-8            pipelined publishes to one channel over 1 and 8 connections
#   ingest-1-1000ch               pipelined publishes over 1 connection, spread over 1,000
#                                 channels (a Gyre with several workers runs them on every
#                                 worker: the workload that scales with workers)
#   ingest-1-1000ch-deep          the same with 16 batches in flight instead of 4 (only on
#                                 request): if it is faster, the window bounded the other
#   fanout-1x1000, fanout-1x10000 one channel, 1,000 / 10,000 subscribers (quick: 1,000 / 2,000)
#   fanout-100x100                100 channels × 100 subscribers (quick: 10 × 100)
#   fanout-10000x1                10,000 channels × 1 subscriber (quick: 1,000 × 1)
#   paced-1x1000                  1 × 1,000 at 1,500 publishes/s: server CPU seconds and p99
#   paced-10000x1                 10,000 × 1 at 50,000 publishes/s (quick: 1,000 × 1 at 5,000/s)
#   connections                   10,000 idle connections (quick: 1,000): memory per connection
# Peers (a peer whose server is not installed is skipped, and the run says so):
#   gyre        Gyre with N workers (N = server CPUs)
#   gyre-delay  the same with client.write_delay (--write-delay, default 20ms) and no bound on
#               max_messages_in_frame: fewer, larger writes for that much latency (not default)
#   gyre-wK     Gyre with K workers pinned to the first K server CPUs (K from 1 to N): with
#               several K, how a figure scales with workers (e.g. --only ingest-1-1000ch
#               --peers gyre-w1,gyre-w2,gyre-w4,gyre,redis)
#   redis       redis-server (one thread executes commands)
#   redis-io    redis-server --io-threads N (at least 2) --io-threads-do-reads yes
#   nats        nats-server with GOMAXPROCS=N
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

usage() {
    cat <<'EOF'
Usage: bash scripts/bench-device.sh [--quick] [--duration S] [--only WORKLOAD]... [--peers LIST]
                                    [--server-cpus LIST --tool-cpus LIST] [--tool-procs P]
                                    [--out DIR] [--skip-build]

  --quick          small sizes and 2 s runs: a check that everything works (2 cores suffice)
  --duration S     measured seconds per run (default 10; --quick 2)
  --only W         run only this workload (repeatable): ingest-1 ingest-8 ingest-1-1000ch
                   ingest-1-1000ch-deep (only when named)
                   fanout-1x1000 fanout-1x10000 fanout-100x100 fanout-10000x1 paced-1x1000
                   paced-10000x1 connections (the --quick sizes keep the full names)
  --peers LIST     comma-separated subset of gyre,gyre-delay,gyre-wK,redis,redis-io,nats
                   (default: gyre,redis,redis-io,nats, those installed); gyre-wK: Gyre with K
                   workers on the first K server CPUs, for scaling
  --write-delay D  client.write_delay of the gyre-delay peer (default 20ms)
  --server-cpus L  CPUs of the servers (taskset list; default: the first half of this
  --tool-cpus L    process's CPUs) and of the load tool (default: the other half)
  --tool-procs P   fan-out subscribers in P gyre-bench processes (fanout --procs P), the
                   tool CPUs' threads divided among them (default 1: one process)
  --out DIR        where the run's folder and archive go (default bench/runs; --quick:
                   target/bench-device)
  --skip-build     do not build; use target/release (or $GYRE / $BENCH)
EOF
}

QUICK=0
DURATION=""
ONLY=()
PEERS="gyre,redis,redis-io,nats"
SERVER_CPUS=""
TOOL_CPUS=""
OUT_BASE=""
BUILD=1
TOOL_PROCS=1
WRITE_DELAY=20ms
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1; shift ;;
        --duration) DURATION="${2:?--duration needs a value}"; shift 2 ;;
        --only) ONLY+=("${2:?--only needs a workload}"); shift 2 ;;
        --peers) PEERS="${2:?--peers needs a list}"; shift 2 ;;
        --server-cpus) SERVER_CPUS="${2:?--server-cpus needs a list}"; shift 2 ;;
        --tool-cpus) TOOL_CPUS="${2:?--tool-cpus needs a list}"; shift 2 ;;
        --out) OUT_BASE="${2:?--out needs a folder}"; shift 2 ;;
        --write-delay) WRITE_DELAY="${2:?--write-delay needs a duration}"; shift 2 ;;
        --tool-procs) TOOL_PROCS="${2:?--tool-procs needs a count}"; shift 2 ;;
        --skip-build) BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-device.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
if ! [[ "$TOOL_PROCS" =~ ^[1-9][0-9]*$ ]]; then
    echo "bench-device.sh: --tool-procs must be a positive count" >&2
    exit 2
fi
if [[ -n "$DURATION" ]] && ! [[ "$DURATION" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    echo "bench-device.sh: --duration must be a number of seconds" >&2
    exit 2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
for tool in taskset timeout jq tar; do
    command -v "$tool" >/dev/null || { echo "bench-device.sh: $tool not found" >&2; exit 2; }
done

# ---------------------------------------------------------------------------------------------
# CPUs: a taskset list expanded to one CPU per line, and the halves.
expand_cpus() {
    local part a b
    IFS=',' read -ra parts <<<"$1"
    for part in "${parts[@]}"; do
        if [[ $part == *-* ]]; then
            a="${part%-*}"; b="${part#*-}"
            seq "$a" "$b"
        else
            echo "$part"
        fi
    done
}
join_cpus() { paste -sd, -; }
ALLOWED="$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status)"
mapfile -t CPUS < <(expand_cpus "$ALLOWED")
if [[ -z "$SERVER_CPUS" || -z "$TOOL_CPUS" ]]; then
    if [[ ${#CPUS[@]} -lt 2 ]]; then
        echo "bench-device.sh: needs at least 2 CPUs (this process may use: $ALLOWED)" >&2
        exit 2
    fi
    HALF=$(( ${#CPUS[@]} / 2 ))
    SERVER_CPUS="$(printf '%s\n' "${CPUS[@]:0:$HALF}" | join_cpus)"
    TOOL_CPUS="$(printf '%s\n' "${CPUS[@]:$HALF}" | join_cpus)"
fi
N_SERVER=$(expand_cpus "$SERVER_CPUS" | wc -l)
N_TOOL=$(expand_cpus "$TOOL_CPUS" | wc -l)
IO_THREADS=$(( N_SERVER < 2 ? 2 : N_SERVER ))
# Threads per gyre-bench process: the tool's CPUs shared among its processes.
PROC_THREADS=$(( N_TOOL / TOOL_PROCS > 0 ? N_TOOL / TOOL_PROCS : 1 ))

# Sizes.
if [[ $QUICK == 1 ]]; then
    DURATION="${DURATION:-2}"
    WARMUP=0.5
    BIG=2000; MID_C=10; MID_N=100; MANY=1000; PACED_MANY_RATE=5000; IDLE=1000; HOLD=2
else
    DURATION="${DURATION:-10}"
    WARMUP=1
    BIG=10000; MID_C=100; MID_N=100; MANY=10000; PACED_MANY_RATE=50000; IDLE=10000; HOLD=5
fi
SIZE=100
API_KEY="bench-api-key"
SECRET="bench-hmac-secret"
WORKLOADS=(ingest-1 ingest-8 ingest-1-1000ch fanout-1x1000 fanout-1x10000 fanout-100x100 fanout-10000x1 paced-1x1000
    paced-10000x1 connections)
for o in "${ONLY[@]}"; do
    [[ " ${WORKLOADS[*]} ingest-1-1000ch-deep " == *" $o "* ]] || { echo "bench-device.sh: unknown workload $o" >&2; exit 2; }
done
[[ ${#ONLY[@]} -gt 0 ]] && WORKLOADS=("${ONLY[@]}")

# gyre-bench arguments of a workload (before the target).
workload_args() {
    case "$1" in
        ingest-1-1000ch) echo "ingest -k 1 -c 1000 --size $SIZE" ;;
        ingest-1-1000ch-deep) echo "ingest -k 1 -c 1000 --inflight 16 --size $SIZE" ;;
        ingest-*) echo "ingest -k ${1#ingest-} --size $SIZE" ;;
        fanout-1x1000) echo "fanout -n 1000 -c 1 -p 1 --size $SIZE" ;;
        fanout-1x10000) echo "fanout -n $BIG -c 1 -p 1 --size $SIZE" ;;
        fanout-100x100) echo "fanout -n $((MID_C * MID_N)) -c $MID_C -p 1 --size $SIZE" ;;
        fanout-10000x1) echo "fanout -n $MANY -c $MANY -p 1 --size $SIZE" ;;
        paced-1x1000) echo "fanout -n 1000 -c 1 -p 1 --size $SIZE --rate 1500" ;;
        paced-10000x1) echo "fanout -n $MANY -c $MANY -p 1 --size $SIZE --rate $PACED_MANY_RATE" ;;
        connections) echo "connections -n $IDLE" ;;
    esac
}

# ---------------------------------------------------------------------------------------------
# Peers: which are installed.
declare -A LABEL
LABEL[gyre]="gyre ($N_SERVER worker$([[ $N_SERVER == 1 ]] || echo s))"
LABEL[gyre-delay]="${LABEL[gyre]}, write_delay $WRITE_DELAY"
LABEL[redis]="redis"
LABEL[redis-io]="redis io-threads $IO_THREADS"
LABEL[nats]="nats (GOMAXPROCS $N_SERVER)"
RUN_PEERS=()
SKIPPED=()
IFS=',' read -ra WANT <<<"$PEERS"
for p in "${WANT[@]}"; do
    case "$p" in
        gyre|gyre-delay) RUN_PEERS+=("$p") ;;
        gyre-w*)
            k="${p#gyre-w}"
            if ! [[ $k =~ ^[1-9][0-9]*$ ]] || (( k > N_SERVER )); then
                echo "bench-device.sh: $p: K must be 1 to $N_SERVER (the server CPUs)" >&2
                exit 2
            fi
            LABEL[$p]="gyre, $k worker$([[ $k == 1 ]] || echo s) on $k CPU$([[ $k == 1 ]] || echo s)"
            RUN_PEERS+=("$p") ;;
        redis|redis-io)
            if command -v redis-server >/dev/null; then RUN_PEERS+=("$p"); else SKIPPED+=("$p: redis-server is not installed"); fi ;;
        nats)
            if command -v nats-server >/dev/null; then RUN_PEERS+=(nats); else SKIPPED+=("nats: nats-server is not installed"); fi ;;
        *) echo "bench-device.sh: unknown peer $p (gyre, gyre-delay, gyre-wK, redis, redis-io, nats)" >&2; exit 2 ;;
    esac
done
for s in "${SKIPPED[@]}"; do echo "== skipping $s" >&2; done
[[ ${#RUN_PEERS[@]} -gt 0 ]] || { echo "bench-device.sh: no peer to run" >&2; exit 2; }

# ---------------------------------------------------------------------------------------------
# Binaries: built here unless told otherwise, then copied so a rebuild cannot swap them mid-run.
GYRE_BIN="${GYRE:-target/release/gyre}"
BENCH_BIN="${BENCH:-target/release/gyre-bench}"
if [[ $BUILD == 1 && -z "${GYRE:-}${BENCH:-}" ]]; then
    command -v cargo >/dev/null || { echo "bench-device.sh: cargo not found (or pass --skip-build with GYRE= BENCH=)" >&2; exit 2; }
    echo "== cargo build --release --bin gyre --bin gyre-bench" >&2
    timeout 3600 cargo build --release --bin gyre --bin gyre-bench
fi
for b in "$GYRE_BIN" "$BENCH_BIN"; do
    [[ -x "$b" ]] || { echo "bench-device.sh: $b is missing (build it, or set GYRE= / BENCH=)" >&2; exit 2; }
done
WORK="$(mktemp -d /tmp/gyre-bench-device.XXXXXX)"
cp "$GYRE_BIN" "$WORK/gyre"
cp "$BENCH_BIN" "$WORK/gyre-bench"
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
if [[ $(ulimit -n) -lt $((IDLE + 200)) ]]; then
    echo "== open-file limit $(ulimit -n): gyre-bench spreads idle connections over child processes" >&2
fi

STAMP="$(date -u +%Y-%m-%dT%H%M%SZ)"
HOST="$(hostname 2>/dev/null || echo host)"
if [[ -z "$OUT_BASE" ]]; then
    if [[ $QUICK == 1 ]]; then OUT_BASE="target/bench-device"; else OUT_BASE="bench/runs"; fi
fi
NAME="$STAMP-$HOST-device$([[ $QUICK == 1 ]] && echo -quick || true)"
OUT="$OUT_BASE/$NAME"
mkdir -p "$OUT"
{
    echo "date:         $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host:         $HOST"
    echo "cpus:         ${#CPUS[@]} ($ALLOWED); servers on $SERVER_CPUS, load tool on $TOOL_CPUS ($TOOL_PROCS process(es) for fan-out)"
    echo "cpu:          $(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -1)"
    echo "kernel:       $(uname -r)"
    echo "memory:       $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "commit:       ${GYRE_COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}"
    echo "redis:        $(command -v redis-server >/dev/null && redis-server --version | head -1 || echo 'not installed')"
    echo "nats:         $(command -v nats-server >/dev/null && nats-server --version 2>&1 | head -1 || echo 'not installed')"
    echo "open files:   $(ulimit -n)"
    echo "mode:         $([[ $QUICK == 1 ]] && echo quick || echo full), ${DURATION} s measured per run after ${WARMUP} s warm-up"
    echo "peers:        ${RUN_PEERS[*]}"
    for s in "${SKIPPED[@]}"; do echo "skipped:      $s"; done
    echo "load start:   $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

# ---------------------------------------------------------------------------------------------
# Servers.

PORT=""
# start_server PEER LOG: sets SERVER_PID and PORT.
start_server() {
    local peer="$1" log="$2"
    PORT="$(free_port)"
    case "$peer" in
        gyre|gyre-delay|gyre-w*)
            local batching="" workers="$N_SERVER" cpus="$SERVER_CPUS"
            if [[ $peer == gyre-w* ]]; then
                workers="${peer#gyre-w}"
                cpus="$(expand_cpus "$SERVER_CPUS" | head -n "$workers" | join_cpus)"
            fi
            [[ $peer == gyre-delay ]] && batching=", \"write_delay\": \"$WRITE_DELAY\", \"max_messages_in_frame\": -1"
            cat >"$WORK/gyre-$PORT.json" <<EOF
{
  "http_server": { "address": "127.0.0.1", "port": $PORT },
  "log": { "level": "warn" },
  "workers": $workers,
  "http_api": { "key": "$API_KEY" },
  "client": { "token": { "hmac_secret_key": "$SECRET" }$batching },
  "channel": { "without_namespace": { "allow_subscribe_for_client": true } }
}
EOF
            taskset -c "$cpus" "$GYRE" -c "$WORK/gyre-$PORT.json" >"$log" 2>&1 &
            ;;
        redis|redis-io)
            local extra=()
            [[ $peer == redis-io ]] && extra=(--io-threads "$IO_THREADS" --io-threads-do-reads yes)
            # As many clients as the open-file limit allows (redis-server lowers it to that anyway).
            taskset -c "$SERVER_CPUS" redis-server --port "$PORT" --bind 127.0.0.1 --protected-mode no --save '' \
                --appendonly no --maxclients $(( $(ulimit -n) - 100 )) "${extra[@]}" >"$log" 2>&1 &
            ;;
        nats)
            GOMAXPROCS="$N_SERVER" taskset -c "$SERVER_CPUS" nats-server -a 127.0.0.1 -p "$PORT" >"$log" 2>&1 &
            ;;
    esac
    SERVER_PID=$!
    await_server "$peer" "$log"
}

target_args() {
    case "$1" in
        gyre|gyre-delay|gyre-w*) echo "--target http://127.0.0.1:$PORT --api-key $API_KEY --hmac-secret $SECRET" ;;
        redis|redis-io) echo "--target redis://127.0.0.1:$PORT" ;;
        nats) echo "--target nats://127.0.0.1:$PORT" ;;
    esac
}

RESULTS=()
FAILED=()
# run_one WORKLOAD PEER: fresh pinned server, one pinned gyre-bench run, JSON + CSV kept.
run_one() {
    local w="$1" peer="$2"
    local base="$OUT/$w-$peer"
    echo "== $w / ${LABEL[$peer]}" >&2
    if ! start_server "$peer" "$base.server.log"; then
        FAILED+=("$w / $peer: the server did not start")
        return 0
    fi
    local args hold_or_run limit rc=0
    if [[ $w == connections ]]; then hold_or_run="-d $HOLD"; else hold_or_run="-d $DURATION --warmup $WARMUP"; fi
    local threads="-t $N_TOOL"
    if [[ $w == fanout-* || $w == paced-* ]] && (( TOOL_PROCS > 1 )); then
        threads="--procs $TOOL_PROCS -t $PROC_THREADS"
    fi
    args="$(workload_args "$w") $hold_or_run $(target_args "$peer") $threads --server-pid $SERVER_PID -q"
    echo "$w $peer: taskset -c $TOOL_CPUS gyre-bench $args" >>"$OUT/commands.txt"
    limit=$(awk -v d="$DURATION" -v h="$HOLD" 'BEGIN { printf "%d", (d > h ? d : h) + 150 }')
    # shellcheck disable=SC2086
    timeout -k 10 "$limit" taskset -c "$TOOL_CPUS" "$BENCH" $args --label "${LABEL[$peer]}" \
        --json "$base.json" --csv "$base.csv" >"$base.log" 2>&1 &
    BENCH_PID=$!
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=""
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "   ${LABEL[$peer]} exited during the run (see $base.server.log)" >&2
        [[ $rc == 0 ]] && rc=99
    fi
    stop_server
    if [[ $rc == 0 ]] && jq -e .scenario "$base.json" >/dev/null 2>&1; then
        RESULTS+=("$base.json")
        # The servers' own logs only matter when something went wrong.
        rm -f "$base.server.log"
    else
        echo "   gyre-bench exit code $rc; last lines of $base.log:" >&2
        tail -5 "$base.log" | sed 's/^/   /' >&2
        FAILED+=("$w / $peer: gyre-bench exit code $rc (see $(basename "$base").log)")
        rm -f "$base.json" "$base.csv"
    fi
    # Let the sockets of the run settle before the next server starts.
    sleep 1
}

T0=$(date +%s)
for w in "${WORKLOADS[@]}"; do
    for peer in "${RUN_PEERS[@]}"; do
        run_one "$w" "$peer"
    done
done

# ---------------------------------------------------------------------------------------------
# Summary, report, archive.
{
    echo "# $NAME"
    echo
    echo '```'
    cat "$OUT/machine.txt"
    echo "wall time:    $(( $(date +%s) - T0 )) s"
    echo '```'
    echo
    echo "| workload | server | figure | p50 (ms) | p99 (ms) | lost / dup | server CPU s (% of one core) | server RSS max (MiB) | gyre-bench CPU % |"
    echo "|---|---|---:|---:|---:|---|---|---:|---:|"
    for f in "${RESULTS[@]}"; do
        jq -r --arg w "$(basename "$f" .json)" '
            def ms: if . == null then "–" else (. / 1000 * 100 | round / 100 | tostring) end;
            def n: if . == null then "–" else ((round | tostring) as $s | ($s | length) as $l
                | [range(0; $l)] | map($s[.:. + 1] + (if . < $l - 1 and ($l - . - 1) % 3 == 0 then "," else "" end))
                | join("")) end;
            (if .scenario == "ingest" then "\(.commands_per_s | n) commands/s"
             elif .scenario == "fanout" then "\(.delivered_per_s | n) deliveries/s (\(.published_per_s | n) pub/s)"
             else "\((.server.bytes_per_connection // null) as $b | if $b == null then "–" else ($b / 1024 * 10 | round / 10 | tostring) end) KiB/connection (\(.ready) open)" end) as $fig
            | "| \($w | sub("-(gyre-delay|gyre-w[0-9]+|gyre|redis-io|redis|nats)$"; "")) | \(.label) | \($fig) | \(.latency_us.p50 | ms) | \(.latency_us.p99 | ms) | \(if .scenario == "fanout" then "\(.lost) / \(.duplicated)" else "–" end) | \(if .server.cpu_s != null then "\(.server.cpu_s) (\(.server.cpu_pct))" else "–" end) | \((.server.rss_max_kb // .server.rss_after_kb // null) as $r | if $r == null then "–" else ($r / 1024 * 10 | round / 10 | tostring) end) | \(.client.cpu_pct // "–") |"' "$f"
    done
    if [[ ${#FAILED[@]} -gt 0 || ${#SKIPPED[@]} -gt 0 ]]; then
        echo
        for s in "${SKIPPED[@]}"; do echo "* skipped $s"; done
        for s in "${FAILED[@]}"; do echo "* failed: $s"; done
    fi
} >"$OUT/summary.md"

if [[ ${#RESULTS[@]} -gt 0 ]]; then
    "$BENCH" report --out "$OUT/report.html" "${RESULTS[@]}" 2>>"$OUT/commands.txt" ||
        echo "bench-device.sh: the HTML report could not be written" >&2
fi
ARCHIVE="$OUT_BASE/$NAME.tar.gz"
tar -czf "$ARCHIVE" -C "$OUT_BASE" "$NAME"
cat "$OUT/summary.md" >&2
echo >&2
echo "== ${#RESULTS[@]} runs, ${#FAILED[@]} failed; results in $OUT" >&2
echo "$ARCHIVE"
