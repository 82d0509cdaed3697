#!/usr/bin/env bash
# window sweep: gyre (WORKERS workers, default 1) vs redis, 1x1000 full speed (RATE: paced).
# Peers: gyre (target/release), gyre-base (GYRE_BASE), gyre-epoll ("driver": "epoll"),
# gyre-poll (with GYRE_FLUSH_AFTER_POLL=1, read by one experiment's build), redis.
# HIST=1 gives the channel history and force_recovery (every subscriber positioned).
cd /work/main; source scripts/bench-lib.sh
G=target/release/gyre; B=target/release/gyre-bench
out=${OUTDIR:-/tmp/win/res}; mkdir -p $out
run() { # peer batch inflight round
  PORT=$(free_port)
  if [[ $1 == gyre* ]]; then
    printf '{"http_server":{"address":"127.0.0.1","port":%s},"log":{"level":"warn"},"workers":%s,"http_api":{"key":"k"},"client":{"token":{"hmac_secret_key":"s"}},"channel":{"without_namespace":{"allow_subscribe_for_client":true%s}}}\n' $PORT ${WORKERS:-1} "${HIST:+,\"history_size\":100,\"history_ttl\":\"60s\",\"force_recovery\":true}" > /tmp/win/g.json
    [[ $1 == gyre-epoll ]] && sed -i 's/^{/{"driver":"epoll",/' /tmp/win/g.json
    EV=; [[ $1 == gyre-poll ]] && EV=GYRE_FLUSH_AFTER_POLL=1
    GB=$G; [[ $1 == gyre-base ]] && GB=${GYRE_BASE:-/tmp/base/gyre}; env $EV taskset -c 0 $GB -c /tmp/win/g.json > /tmp/win/s.log 2>&1 & SERVER_PID=$!
    tgt="http://127.0.0.1:$PORT"; extra="--api-key k --hmac-secret s"
  else
    taskset -c 0 redis-server --port $PORT --save '' --appendonly no > /tmp/win/s.log 2>&1 & SERVER_PID=$!
    tgt="redis://127.0.0.1:$PORT"; extra=""
  fi
  wait_port $SERVER_PID $PORT
  taskset -c 1 $B fanout -n 1000 -c 1 -p 1 --size 100 -d 5 --warmup 1 -t 1 --batch $2 --inflight $3 ${RATE:+--rate $RATE} --target $tgt $extra --server-pid $SERVER_PID --json $out/$1-$2x$3-r$4.json -q > /dev/null 2>/tmp/win/b.log || cat /tmp/win/b.log
  stop_server
  python3 - $out/$1-$2x$3-r$4.json $1 $2 $3 $4 <<'PY'
import json,sys
d=json.load(open(sys.argv[1]))
dl=d.get('delivered') or 0; dur=d['duration_s']
print(f"{sys.argv[2]:5s} batch={sys.argv[3]:>4} inflight={sys.argv[4]} r{sys.argv[5]} delivered/s={dl/dur/1e6:.2f}M cpu={d['server']['cpu_pct']}% us/deliv={d['server']['cpu_s']/dl*1e6:.3f} p50={d['latency_us']['p50']/1000:.1f}ms p99={d['latency_us']['p99']/1000:.1f}ms tool={d['client']['cpu_pct']}% lost={d.get('lost')} dup={d.get('duplicated')}")
PY
}
for r in 1 2 3; do for p in ${PEERS:-gyre-base gyre redis}; do run $p ${BATCH:-16} ${INFL:-2} $r; done; done
