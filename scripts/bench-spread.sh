#!/usr/bin/env bash
# What one pipelined request costs the worker that reads it when its lines are spread over
# several workers, on a 2-core machine: Gyre with W workers (default 8); once the run is going,
# the worker that reads the connection (the busiest) gets CPU 0 to itself, the other workers
# and gyre-bench share CPU 1. Prints each worker's CPU time per command (user and system) over
# the measured seconds: on a machine with a core per worker, the reader's figure bounds what
# one connection can reach (1 s / its ns per command).
#
#   bash scripts/bench-spread.sh                       # 8 workers, 1,000 channels, 3 rounds
#   bash scripts/bench-spread.sh --workers 4 --rounds 1
#   GYRE_BASE=/tmp/old/gyre bash scripts/bench-spread.sh --peers "base gyre"   # before/after
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

WORKERS=8
CHANNELS=1000
ROUNDS=3
MEASURE=4
PEERS="gyre"
while (($#)); do
    case "$1" in
        --workers) WORKERS="$2"; shift 2 ;;
        --channels) CHANNELS="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --measure) MEASURE="$2"; shift 2 ;;
        --peers) PEERS="$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
GYRE="${GYRE:-target/release/gyre}"
BENCH="${BENCH:-target/release/gyre-bench}"
[ -x "$GYRE" ] && [ -x "$BENCH" ] || cargo build --release --bins
WORK="$(mktemp -d)"
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

# Per thread of the server: name, user ticks, system ticks, thread id.
snap() { for t in /proc/"$PID"/task/*; do echo "$(cat "$t/comm") $(awk '{print $14, $15}' "$t/stat") ${t##*/}"; done; }

for round in $(seq "$ROUNDS"); do
    for peer in $PEERS; do
        bin="$GYRE"
        [ "$peer" = base ] && bin="${GYRE_BASE:?GYRE_BASE: the gyre binary to compare with}"
        PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
        cat >"$WORK/gyre.json" <<JSON
{ "http_server": { "address": "127.0.0.1", "port": $PORT }, "log": { "level": "warn" },
  "workers": $WORKERS, "http_api": { "key": "bench-api-key" } }
JSON
        taskset -c 1 "$bin" -c "$WORK/gyre.json" >"$WORK/server.log" 2>&1 &
        PID=$!
        for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
        taskset -c 1 "$BENCH" ingest -k 1 -c "$CHANNELS" --size 100 -d $((MEASURE + 3)) --warmup 0 -t 1 \
            --target "http://127.0.0.1:$PORT" --api-key bench-api-key --csv "$WORK/series.csv" -q >/dev/null 2>"$WORK/bench.log" &
        TOOL=$!
        snap >"$WORK/s0"; sleep 1; snap >"$WORK/s1"
        reader="$(python3 -c '
import sys
a = {l.split()[3]: int(l.split()[1]) + int(l.split()[2]) for l in open(sys.argv[1])}
b = {l.split()[3]: int(l.split()[1]) + int(l.split()[2]) for l in open(sys.argv[2])}
print(max(b, key=lambda t: b[t] - a.get(t, 0)))' "$WORK/s0" "$WORK/s1")"
        taskset -p -c 0 "$reader" >/dev/null
        sleep 1; snap >"$WORK/a"; sleep "$MEASURE"; snap >"$WORK/b"
        wait "$TOOL" || { cat "$WORK/bench.log" >&2; exit 1; }
        kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
        python3 - "$round" "$peer" "$WORK/a" "$WORK/b" "$WORK/series.csv" "$MEASURE" "$reader" <<'PY'
import csv, os, sys
rnd, peer, fa, fb, series, measure, reader = sys.argv[1:8]
measure = int(measure)
tck = os.sysconf("SC_CLK_TCK")
def load(f):
    return {l.split()[3]: (l.split()[0], int(l.split()[1]), int(l.split()[2])) for l in open(f)}
a, b = load(fa), load(fb)
rows = [r for r in csv.DictReader(open(series)) if r.get("phase") == "measure"]
# Seconds 3 .. 3+measure of the tool's run are the ones measured here.
rate = sum(float(r["commands_per_s"]) for r in rows[2:2 + measure]) / measure
n = rate * measure
others = [0.0, 0.0]
line = f"round {rnd} {peer:5s} commands/s={rate:,.0f}"
for tid, (name, u, s) in sorted(b.items()):
    if tid not in a or not name.startswith("gyre-worker"):
        continue
    du, ds = (u - a[tid][1]) / tck, (s - a[tid][2]) / tck
    if tid == reader:
        line += f" reader={1e9 * (du + ds) / n:.0f}ns (user {1e9 * du / n:.0f}, sys {1e9 * ds / n:.0f}) busy={100 * (du + ds) / measure:.0f}%"
    else:
        others[0] += du; others[1] += ds
line += f" other_workers={1e9 * sum(others) / n:.0f}ns"
print(line)
PY
    done
done
