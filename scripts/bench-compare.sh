#!/usr/bin/env bash
# Gyre against an earlier Gyre, side by side in one run: the end-to-end figures of a change.
#
#   bash scripts/bench-compare.sh BASE_REV                 # fanout and ingest, 5 s runs, 3 rounds
#   bash scripts/bench-compare.sh BASE_REV --rounds 5 --duration 10
#   bash scripts/bench-compare.sh BASE_REV --only fanout-100x100
#
# Builds release binaries of the working tree and of BASE_REV (in a git worktree under
# target/bench-base, with a target folder of its own), then runs every scenario on both, alternating base and new
# for each round so drift on the machine (other load, thermal state) hits both alike. Each run
# starts a fresh server on a free port and runs the bundled load tool against it with one
# event-loop thread (-t 1), as scripts/bench.sh does. Prints a markdown table with the median
# of the rounds for each and the ratio new/base, and keeps the raw JSON under
# bench/runs/<date>-<host>-compare/.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bash scripts/bench-compare.sh BASE_REV [--rounds R] [--duration S] [--only SCENARIO]... [--skip-build]
                                      [--workers N] [--tool-threads T] [--server-cpus LIST --tool-cpus LIST]

  BASE_REV         the revision to compare with (a commit, tag or branch)
  --rounds R       runs of each scenario on each build, alternating (default 3)
  --duration S     measured seconds per run (default 5)
  --only SCENARIO  ingest-1, ingest-8, fanout-1x10000, fanout-100x100, fanout-10000x1 (repeatable)
  --skip-build     use the binaries already built by an earlier run (target/bench-compare/)
  --workers N      Gyre's worker count (default: one per core)
  --tool-threads T the load tool's event-loop threads (default 1)
  --server-cpus L, --tool-cpus L
                   pin the server and the load tool to these CPUs (taskset lists, e.g. 0-7)
EOF
}

[[ $# -ge 1 && $1 != -* ]] || { usage >&2; exit 2; }
BASE_REV="$1"
shift
ROUNDS=3
DURATION=5
ONLY=()
BUILD=1
WORKERS=""
TOOL_THREADS=1
SERVER_CPUS=""
TOOL_CPUS=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) ROUNDS="${2:?--rounds needs a value}"; shift 2 ;;
        --duration) DURATION="${2:?--duration needs a value}"; shift 2 ;;
        --only) ONLY+=("${2:?--only needs a scenario}"); shift 2 ;;
        --skip-build) BUILD=0; shift ;;
        --workers) WORKERS="${2:?--workers needs a value}"; shift 2 ;;
        --tool-threads) TOOL_THREADS="${2:?--tool-threads needs a value}"; shift 2 ;;
        --server-cpus) SERVER_CPUS="${2:?--server-cpus needs a list}"; shift 2 ;;
        --tool-cpus) TOOL_CPUS="${2:?--tool-cpus needs a list}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-compare.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
for tool in timeout; do
    command -v "$tool" >/dev/null || { echo "bench-compare.sh: $tool not found" >&2; exit 2; }
done

SCENARIOS=(ingest-1 ingest-8 fanout-1x10000 fanout-100x100 fanout-10000x1)
if [[ ${#ONLY[@]} -gt 0 ]]; then
    for o in "${ONLY[@]}"; do
        [[ " ${SCENARIOS[*]} " == *" $o "* ]] || { echo "bench-compare.sh: unknown scenario $o" >&2; exit 2; }
    done
    SCENARIOS=("${ONLY[@]}")
fi

# (With --skip-build the binaries may have travelled to a machine without the repository.)
BASE_SHA="$(git rev-parse --verify "$BASE_REV^{commit}" 2>/dev/null || { [[ $BUILD == 0 ]] && echo "$BASE_REV"; })"
[[ -n "$BASE_SHA" ]] || { echo "bench-compare.sh: unknown revision $BASE_REV" >&2; exit 2; }
BASE_DIR="$ROOT/target/bench-base"
BINS="$ROOT/target/bench-compare"
if [[ $BUILD == 1 ]]; then
    mkdir -p "$BINS"
    echo "== release build of the working tree" >&2
    cargo build --release --bins
    cp target/release/gyre "$BINS/gyre-new"
    # One load tool for both, so only the server differs.
    cp target/release/gyre-bench "$BINS/gyre-bench"
    echo "== release build of $BASE_REV ($BASE_SHA) in $BASE_DIR" >&2
    if [[ -d "$BASE_DIR" ]]; then
        git -C "$BASE_DIR" checkout --quiet --detach "$BASE_SHA"
    else
        git worktree add --quiet --detach "$BASE_DIR" "$BASE_SHA"
    fi
    # A target folder of its own: cargo names a path package's build units by its path inside
    # the workspace, so two checkouts of Gyre sharing one target folder overwrite each other.
    (cd "$BASE_DIR" && cargo build --release --bin gyre --target-dir "$ROOT/target/bench-base-target")
    cp target/bench-base-target/release/gyre "$BINS/gyre-base"
fi
WORK="$(mktemp -d /tmp/gyre-bench-compare.XXXXXX)"
cp "$BINS/gyre-new" "$BINS/gyre-base" "$BINS/gyre-bench" "$WORK/"

SERVER_PID=""
cleanup() {
    local rc=$?
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

OUT="bench/runs/$(date -u +%Y-%m-%dT%H%M%SZ)-$(hostname)-compare"
mkdir -p "$OUT"
{
    echo "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host:     $(hostname), $(nproc) cores, $(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
    echo "kernel:   $(uname -r)"
    echo "base:     $BASE_REV ($BASE_SHA)"
    echo "new:      $(git rev-parse --short=12 HEAD 2>/dev/null || echo 'the working tree')$(git status --porcelain --untracked-files=no -- src 2>/dev/null | grep -q . && echo ' + uncommitted changes')"
    echo "runs:     $ROUNDS rounds × $DURATION s per scenario and build, alternating base/new"
    echo "server:   workers ${WORKERS:-one per core}${SERVER_CPUS:+, cpus $SERVER_CPUS}; load tool: -t $TOOL_THREADS${TOOL_CPUS:+, cpus $TOOL_CPUS}"
    echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) at start"
} | tee "$OUT/machine.txt" >&2

free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((15000 + RANDOM % 15000))
        if command -v ss >/dev/null; then
            [[ -z "$(ss -Htan "sport = :$p" 2>/dev/null)" ]] && { echo "$p"; return 0; }
        elif ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# run BUILD SCENARIO ROUND: one fresh server and one load-tool run; the JSON is kept.
run() {
    local build="$1" s="$2" round="$3" port cfg args
    port="$(free_port)"
    cfg="$WORK/cfg-$port.json"
    local workers_line=""
    [[ -n "$WORKERS" ]] && workers_line=$'\n'"  \"workers\": $WORKERS,"
    cat >"$cfg" <<EOF
{
  "http_server": { "address": "127.0.0.1", "port": $port },
  "log": { "level": "warn" },$workers_line
  "http_api": { "key": "k" },
  "client": { "token": { "hmac_secret_key": "s" } },
  "channel": { "without_namespace": { "allow_subscribe_for_client": true } }
}
EOF
    ${SERVER_CPUS:+taskset -c "$SERVER_CPUS"} "$WORK/gyre-$build" -c "$cfg" >"$OUT/$s-$build-$round.server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.05
    done
    case "$s" in
        ingest-*) args="ingest -k ${s#ingest-} --size 100 -d $DURATION --target http://127.0.0.1:$port --api-key k" ;;
        fanout-*)
            local spec="${s#fanout-}" c per
            c="${spec%x*}"
            per="${spec#*x}"
            args="fanout -n $((c * per)) -c $c -p 1 --size 100 -d $DURATION --target http://127.0.0.1:$port --api-key k --hmac-secret s"
            ;;
    esac
    echo "== $s / $build / round $round" >&2
    # shellcheck disable=SC2086
    timeout -k 10 $((DURATION + 150)) ${TOOL_CPUS:+taskset -c "$TOOL_CPUS"} "$WORK/gyre-bench" $args -t "$TOOL_THREADS" --json --server-pid "$SERVER_PID" \
        >"$OUT/$s-$build-$round.json" 2>"$OUT/$s-$build-$round.log" || echo "   gyre-bench failed (see $OUT/$s-$build-$round.log)" >&2
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    sleep 1
}

for s in "${SCENARIOS[@]}"; do
    for r in $(seq 1 "$ROUNDS"); do
        # Alternate which build goes first, so neither always runs on a warmer machine.
        if ((r % 2)); then run base "$s" "$r"; run new "$s" "$r"; else run new "$s" "$r"; run base "$s" "$r"; fi
    done
done

command -v jq >/dev/null || { echo "bench-compare.sh: jq not found; raw results in $OUT" >&2; exit 0; }

# median BUILD SCENARIO JQ
median() {
    local build="$1" s="$2" q="$3"
    for r in $(seq 1 "$ROUNDS"); do
        jq -r "if .error then empty else ($q) // empty end" "$OUT/$s-$build-$r.json" 2>/dev/null || true
    done | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
fmt() { [[ -z "$1" ]] && echo "n/a" || printf "%.0f" "$1" | sed -e ':a' -e 's/\([0-9]\)\([0-9]\{3\}\)\($\|,\)/\1,\2\3/' -e 'ta'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "n/a"; else printf "%.2f×", a / b }'; }

{
    echo "| scenario | figure | base | new | new/base |"
    echo "|---|---|---:|---:|---:|"
    for s in "${SCENARIOS[@]}"; do
        case "$s" in
            ingest-*) q=.commands_per_s; what="commands/s" ;;
            *) q=.delivered_per_s; what="delivered/s" ;;
        esac
        b="$(median base "$s" "$q")"
        n="$(median new "$s" "$q")"
        echo "| $s | $what (median of $ROUNDS) | $(fmt "$b") | $(fmt "$n") | $(ratio "$n" "$b") |"
        if [[ $s == fanout-* ]]; then
            b="$(median base "$s" .latency_us.p99)"
            n="$(median new "$s" .latency_us.p99)"
            echo "| $s | latency p99 µs (median of $ROUNDS) | $(fmt "$b") | $(fmt "$n") | $(ratio "$n" "$b") |"
        fi
        b="$(median base "$s" .server.cpu_pct)"
        n="$(median new "$s" .server.cpu_pct)"
        echo "| $s | server CPU % (median of $ROUNDS) | $(fmt "$b") | $(fmt "$n") | $(ratio "$n" "$b") |"
    done
} | tee "$OUT/summary.md"
