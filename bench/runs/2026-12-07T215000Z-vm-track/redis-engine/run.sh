#!/usr/bin/env bash
# gyre-base vs gyre on the Redis engine, channel with history + force_recovery (every subscriber positioned),
# 1x1000 full speed; gyre (1 worker) on CPU 0; redis-server (the engine) and gyre-bench on CPU 1.
cd /work/main; source scripts/bench-lib.sh
G=target/release/gyre; B=target/release/gyre-bench
out=${OUTDIR:-/tmp/win/reng}; mkdir -p $out
RP=$(free_port); taskset -c 1 redis-server --port $RP --save '' --appendonly no > /tmp/win/r.log 2>&1 & RPID=$!
sleep 0.5
run() { # peer batch round
  PORT=$(free_port)
  printf '{"http_server":{"address":"127.0.0.1","port":%s},"log":{"level":"warn"},"workers":1,"http_api":{"key":"k"},"client":{"token":{"hmac_secret_key":"s"}},"engine":{"type":"redis","redis":{"address":"redis://127.0.0.1:%s"}},"channel":{"without_namespace":{"allow_subscribe_for_client":true,"history_size":100,"history_ttl":"60s","force_recovery":true}}}\n' $PORT $RP > /tmp/win/g.json
  GB=$G; [[ $1 == gyre-base ]] && GB=${GYRE_BASE:-/tmp/base/gyre}
  taskset -c 0 $GB -c /tmp/win/g.json > /tmp/win/s.log 2>&1 & SERVER_PID=$!
  wait_port $SERVER_PID $PORT
  taskset -c 1 $B fanout -n 1000 -c 1 -p 1 --size 100 -d 5 --warmup 1 -t 1 --batch $2 --inflight 2 --target http://127.0.0.1:$PORT --api-key k --hmac-secret s --server-pid $SERVER_PID --json $out/$1-b$2-r$3.json -q > /dev/null 2>/tmp/win/b.log || cat /tmp/win/b.log
  stop_server
  python3 - $out/$1-b$2-r$3.json $1 $2 $3 <<'PY'
import json,sys
d=json.load(open(sys.argv[1]))
dl=d.get('delivered') or 0; dur=d['duration_s']
print(f"{sys.argv[2]:9s} batch={sys.argv[3]:>3} r{sys.argv[4]} delivered/s={dl/dur/1e6:.2f}M cpu={d['server']['cpu_pct']}% us/deliv={d['server']['cpu_s']/dl*1e6:.3f} p50={d['latency_us']['p50']/1000:.1f}ms p99={d['latency_us']['p99']/1000:.1f}ms lost={d.get('lost')} dup={d.get('duplicated')}")
PY
}
for r in 1 2 3; do for p in gyre-base gyre; do run $p ${BATCH:-16} $r; done; done
kill $RPID
