#!/usr/bin/env bash
# Soak test (not part of `cargo test`): a release build of Gyre under mixed load with
# connection churn for MINUTES (default 10), sampled every second.
#
#   scripts/soak.sh [MINUTES]        env: SOAK_SUBSCRIBERS (300) SOAK_CHANNELS (10)
#                                         SOAK_RATE (1000 publishes/s) SOAK_CHURN (30 clients/s)
#                                         SOAK_WORKERS (cores) SOAK_OUT (target/soak)
#
# The driver is scripts/soak.js (Node, with `ws` from tests/js/node_modules): persistent
# subscribers that must receive every acknowledged publication exactly once, publishes through
# the HTTP API, a legacy stream plus history / presence_stats / info every second, and short-lived
# clients connecting, subscribing and leaving (clean close, abrupt termination, or gone before
# their subscribe reply). Writes $SOAK_OUT/soak-<time>.csv (one row per second: server RSS,
# fds, CPU, rates, delivery and API latency percentiles, churn, errors) and .json (the report:
# lost messages, RSS least-squares slope after the first minute, latency summary), then stops
# the server with SIGTERM and reports how long it took to exit.
# Exits non-zero when a message was lost, a persistent subscriber was disconnected, or the
# server did not exit cleanly.
set -euo pipefail

minutes="${1:-10}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="${SOAK_OUT:-target/soak}"
mkdir -p "$out"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
csv="$out/soak-$stamp.csv"
report="$out/soak-$stamp.json"

command -v node >/dev/null || { echo "soak.sh: node is required" >&2; exit 2; }
[ -d tests/js/node_modules/ws ] || npm ci --prefix tests/js --no-audit --no-fund >&2
cargo build --release --bin gyre >&2

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
key="soak-key-$RANDOM$RANDOM"
secret="soak-secret-$RANDOM$RANDOM"
dir="$(mktemp -d)"
cat >"$dir/config.json" <<EOF
{
  "http_server": {"port": $port},
  "http_api": {"key": "$key"},
  "client": {"token": {"hmac_secret_key": "$secret"}},
  "channel": {"namespaces": [{"name": "soak", "history_size": 100, "history_ttl": "300s", "presence": true,
                               "join_leave": true, "allow_subscribe_for_client": true}]},
  "workers": ${SOAK_WORKERS:-0},
  "log": {"level": "warn"}
}
EOF
target/release/gyre --config "$dir/config.json" 2>"$dir/gyre.log" &
pid=$!
cleanup() {
    kill "$pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

echo "soak.sh: gyre pid $pid on port $port, ${minutes} min; CSV $csv" >&2
set +e
node scripts/soak.js --port "$port" --key "$key" --secret "$secret" --pid "$pid" --minutes "$minutes" \
    --subscribers "${SOAK_SUBSCRIBERS:-300}" --channels "${SOAK_CHANNELS:-10}" --rate "${SOAK_RATE:-1000}" \
    --churn "${SOAK_CHURN:-30}" --csv "$csv" --report "$report"
rc=$?
set -e

# Graceful stop: SIGTERM, then how long the process takes to exit.
start=$(date +%s%N)
kill -TERM "$pid"
exit_rc=0
wait "$pid" || exit_rc=$?
stop_ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "soak.sh: SIGTERM -> exit status $exit_rc after ${stop_ms} ms" >&2
if grep -q panicked "$dir/gyre.log"; then
    echo "soak.sh: the server panicked:" >&2
    cat "$dir/gyre.log" >&2
    rc=1
fi
[ "$exit_rc" -eq 0 ] || rc=1
echo "soak.sh: report $report" >&2
exit "$rc"
