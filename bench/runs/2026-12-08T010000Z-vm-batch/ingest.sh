#!/usr/bin/env bash
# gyre-bench ingest, one connection, per core (server on CPU 0, gyre-bench on CPU 1):
# publishes as new-style `batch` requests (--api-batch) to the build before and after, the
# legacy body to the build after, and redis-server's pipelined PUBLISH; alternated per round.
#   BASE=/path/to/old/gyre NEW=target/release/gyre BENCH=target/release/gyre-bench \
#   ROUNDS=3 DUR=4 BATCH=1000 bash ingest.sh > ingest.txt
set -euo pipefail
BASE="${BASE:?}"; NEW="${NEW:?}"; BENCH="${BENCH:?}"
ROUNDS="${ROUNDS:-3}"; DUR="${DUR:-4}"; BATCH="${BATCH:-1000}"; PORT="${PORT:-8011}"; RPORT="${RPORT:-6390}"
tmp="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
printf '{"workers":1,"http_api":{"insecure":true},"http_server":{"port":%s},"log":{"level":"error"}}\n' "$PORT" > "$tmp/cfg.json"
echo "# ingest -k 1 --size 100 --batch $BATCH -d $DUR, $(date -u +%FT%TZ), $(nproc) CPUs"
echo "# round peer commands/s server_cpu_s commands_per_server_cpu_s p50_us p99_us errors"
run() { # peer target pid extra...
    local peer=$1 target=$2 pid=$3; shift 3
    taskset -c 1 "$BENCH" ingest --target "$target" -k 1 --size 100 -t 1 --batch "$BATCH" -d "$DUR" \
        --server-pid "$pid" --json "$tmp/r.json" --quiet "$@" > /dev/null
    python3 - "$tmp/r.json" "$round" "$peer" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
cmd = r["commands_per_s"]; cpu = r.get("server", {}).get("cpu_s", 0)
lat = r.get("latency_us", r.get("round_trip_us", {}))
print(sys.argv[2], sys.argv[3], round(cmd), round(cpu, 2), round(r["commands"] / cpu) if cpu else "-",
      lat.get("p50", "-"), lat.get("p99", "-"), r["publish_errors"])
PY
}
for round in $(seq 1 "$ROUNDS"); do
    for peer in base-batch new-batch new-legacy redis; do
        case $peer in
            redis)
                taskset -c 0 redis-server --port "$RPORT" --save '' --appendonly no > /dev/null &
                pid=$!; sleep 0.5; run redis "redis://127.0.0.1:$RPORT" $pid ;;
            *)
                bin="$NEW"; [ "$peer" = base-batch ] && bin="$BASE"
                extra=(); [ "$peer" != new-legacy ] && extra=(--api-batch)
                taskset -c 0 "$bin" -c "$tmp/cfg.json" > /dev/null 2>&1 &
                pid=$!; sleep 1; run "$peer" "http://127.0.0.1:$PORT" $pid "${extra[@]}" ;;
        esac
        kill $pid; wait $pid 2>/dev/null || true; sleep 0.3
    done
done
