#!/usr/bin/env bash
# POST /api/batch of 1,000 publishes (sequential and parallel, 1,000 channels, 100-byte data,
# no subscribers) beside the same commands as one legacy POST /api body, for two builds
# alternated in one session. One connection, one request at a time (wrk -t1 -c1).
#   BASE=/path/to/old/gyre NEW=/path/to/new/gyre ROUNDS=3 DUR=4 bash run.sh > results.txt
# WORKERS=1: the server on CPU 0, wrk on CPU 1. WORKERS=2: the server on both CPUs, wrk too.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
BASE="${BASE:?old gyre binary}"
NEW="${NEW:?new gyre binary}"
ROUNDS="${ROUNDS:-3}"
DUR="${DUR:-4}"
WORKERS="${WORKERS:-1}"
PORT="${PORT:-8011}"
tmp="$(mktemp -d)"
trap 'pkill -f "gyre -c $tmp/cfg.json" || true; rm -rf "$tmp"' EXIT
printf '{"workers":%s,"http_api":{"insecure":true},"http_server":{"port":%s},"log":{"level":"error"}}\n' \
    "$WORKERS" "$PORT" > "$tmp/cfg.json"
python3 - "$tmp" <<'PY'
import json, sys
d = sys.argv[1]
n = 1000
pub = lambda i: {"channel": "ch%d" % i, "data": {"v": "x" * 80}}
bodies = {
    "batch-seq": json.dumps({"commands": [{"publish": pub(i)} for i in range(n)]}),
    "batch-par": json.dumps({"commands": [{"publish": pub(i)} for i in range(n)], "parallel": True}),
    "legacy": "\n".join(json.dumps({"id": i + 1, "method": "publish", "params": pub(i)}) for i in range(n)),
}
for name, body in bodies.items():
    open("%s/%s.body" % (d, name), "w").write(body)
    open("%s/%s.lua" % (d, name), "w").write(
        'wrk.method="POST"\nwrk.body=io.open("%s/%s.body"):read("*a")\nwrk.headers["Content-Type"]="application/json"\n' % (d, name))
PY
if [ "$WORKERS" = 1 ]; then srv=(taskset -c 0); cli=(taskset -c 1); else srv=(); cli=(); fi
cpu_s() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }
echo "# workers=$WORKERS rounds=$ROUNDS dur=${DUR}s $(date -u +%FT%TZ) $(nproc) CPUs"
echo "# round build workload requests/s commands/s server_cpu_s cpu_us_per_command"
for round in $(seq 1 "$ROUNDS"); do
    for build in base new; do
        bin="$BASE"; [ "$build" = new ] && bin="$NEW"
        "${srv[@]}" "$bin" -c "$tmp/cfg.json" > "$tmp/$build.log" 2>&1 &
        pid=$!
        sleep 1
        for w in batch-seq batch-par legacy; do
            path=/api; [ "$w" != legacy ] && path=/api/batch
            c0=$(cpu_s $pid)
            rps=$("${cli[@]}" wrk -t1 -c1 -d"${DUR}s" -s "$tmp/$w.lua" "http://127.0.0.1:$PORT$path" | awk '/Requests\/sec/ {print $2}')
            c1=$(cpu_s $pid)
            awk -v r="$round" -v b="$build" -v w="$w" -v rps="$rps" -v c0="$c0" -v c1="$c1" -v d="$DUR" \
                'BEGIN { cmds = rps * 1000; printf "%s %s %s %.0f %.0f %.2f %.3f\n", r, b, w, rps, cmds, c1 - c0, (c1 - c0) * 1e6 / (cmds * d) }'
        done
        kill $pid; wait $pid 2>/dev/null || true
        sleep 0.5
    done
done
