#!/usr/bin/env bash
# What one pipelined request costs the worker that reads it when its lines are spread over
# several workers, on a 2-core machine: Gyre with W workers (default 8); once the run is going,
# the worker that reads the connection (the busiest) gets CPU 0 to itself, the other workers
# and gyre-bench share CPU 1. Prints each round's commands/s and the CPU time per command of
# the reader (user and system) and of the other workers together, over the measured seconds:
# on a machine with a core per worker, the reader's figure bounds what one connection can
# reach (1 s / its ns per command).
#
#   bash scripts/bench-spread.sh                                   # 8 workers, 3 rounds
#   bash scripts/bench-spread.sh 4 1                               # 4 workers, 1 round
#   GYRE_BASE=/tmp/old/gyre PEERS="base gyre" bash scripts/bench-spread.sh   # before/after
#
# Arguments: [WORKERS [ROUNDS]]; environment: PEERS (gyre, base), CHANNELS (1000), MEASURE (4 s),
# GYRE, BENCH (target/release's).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bench-lib.sh

workers="${1:-8}"
rounds="${2:-3}"
GYRE="${GYRE:-target/release/gyre}"
BENCH="${BENCH:-target/release/gyre-bench}"
for b in "$GYRE" "$BENCH"; do
    [[ -x "$b" ]] || { echo "bench-spread.sh: $b is missing (cargo build --release --bins)" >&2; exit 2; }
done
work="$(mktemp -d)"
trap 'stop_server; rm -rf "$work"' EXIT

# Per thread of the server: name, user ticks, system ticks, thread id.
threads() { for t in /proc/"$SERVER_PID"/task/*; do echo "$(cat "$t/comm") $(awk '{print $14, $15}' "$t/stat") ${t##*/}"; done; }

one_run() { # round peer binary
    PORT="$(free_port)"
    printf '{"http_server": {"address": "127.0.0.1", "port": %s}, "log": {"level": "warn"}, "workers": %s, "http_api": {"key": "k"}}\n' \
        "$PORT" "$workers" >"$work/gyre.json"
    taskset -c 1 "$3" -c "$work/gyre.json" >"$work/server.log" 2>&1 &
    SERVER_PID=$!
    await_server "$2" "$work/server.log"
    taskset -c 1 "$BENCH" ingest -k 1 -c "${CHANNELS:-1000}" --size 100 -d $((${MEASURE:-4} + 4)) --warmup 0 -t 1 \
        --target "http://127.0.0.1:$PORT" --api-key k --csv "$work/series.csv" -q >/dev/null 2>"$work/bench.log" &
    local tool=$!
    sleep 1; threads >"$work/t0"; sleep 1; threads >"$work/t1"
    # The reader: the thread that worked most in the tool's second second.
    local reader
    reader="$(join -j 4 <(sort -k4 "$work/t0") <(sort -k4 "$work/t1") | awk '{d = $6 + $7 - $3 - $4; if (d > m) { m = d; t = $1 }} END { print t }')"
    taskset -p -c 0 "$reader" >/dev/null
    sleep 1; threads >"$work/a"; sleep "${MEASURE:-4}"; threads >"$work/b"
    wait "$tool" || { cat "$work/bench.log" >&2; exit 1; }
    stop_server
    python3 - "$1" "$2" "$reader" "${MEASURE:-4}" "$work" <<'PY'
import csv, os, sys
rnd, peer, reader, measure, work = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
tck = os.sysconf("SC_CLK_TCK")
def load(name):
    return {f[3]: (f[0], int(f[1]), int(f[2])) for f in (l.split() for l in open(f"{work}/{name}"))}
a, b = load("a"), load("b")
rows = [r for r in csv.DictReader(open(f"{work}/series.csv")) if r["phase"] == "measure"]
# The tool's seconds 4 .. 4 + measure are the ones measured here.
rate = sum(float(r["commands_per_s"]) for r in rows[3:3 + measure]) / measure
ns = lambda ticks: 1e9 * ticks / tck / (rate * measure)
other = 0
for tid, (name, u, s) in b.items():
    if tid in a and name.startswith("gyre-worker") and tid != reader:
        other += u + s - a[tid][1] - a[tid][2]
u, s = b[reader][1] - a[reader][1], b[reader][2] - a[reader][2]
print(f"round {rnd} {peer:5s} commands/s={rate:,.0f} reader={ns(u + s):.0f}ns (user {ns(u):.0f}, sys {ns(s):.0f}) "
      f"busy={100 * (u + s) / tck / measure:.0f}% other_workers={ns(other):.0f}ns")
PY
}

for round in $(seq "$rounds"); do
    for peer in ${PEERS:-gyre}; do
        bin="$GYRE"
        [[ "$peer" == base ]] && bin="${GYRE_BASE:?GYRE_BASE: the gyre binary to compare with}"
        one_run "$round" "$peer" "$bin"
    done
done
