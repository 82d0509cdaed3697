#!/usr/bin/env bash
# tool A/B: old vs new gyre-bench against redis and nats, 1x1000 full speed
cd "$(git rev-parse --show-toplevel)"; source scripts/bench-lib.sh
out=${OUTDIR:-/tmp/win/tool}; mkdir -p $out /tmp/win
run() { # server tool round
  PORT=$(free_port)
  if [[ $1 == redis ]]; then
    taskset -c 0 redis-server --port $PORT --save '' --appendonly no > /tmp/win/s.log 2>&1 & SERVER_PID=$!
    tgt="redis://127.0.0.1:$PORT"
  else
    GOMAXPROCS=1 taskset -c 0 nats-server -a 127.0.0.1 -p $PORT > /tmp/win/s.log 2>&1 & SERVER_PID=$!
    tgt="nats://127.0.0.1:$PORT"
  fi
  wait_port $SERVER_PID $PORT
  B=target/release/gyre-bench; [[ $2 == old ]] && B=${TOOL_BASE:-/tmp/base/gyre-bench}
  taskset -c 1 $B fanout -n 1000 -c 1 -p 1 --size 100 -d 5 --warmup 1 -t 1 ${BATCH:+--batch $BATCH} --target $tgt --server-pid $SERVER_PID --json $out/$1-$2-r$3.json -q > /dev/null 2>/tmp/win/b.log || cat /tmp/win/b.log
  stop_server
  python3 - $out/$1-$2-r$3.json $1 $2 $3 <<'PY'
import json,sys
d=json.load(open(sys.argv[1]))
dl=d.get('delivered') or 0; dur=d['duration_s']
print(f"{sys.argv[2]:5s} tool={sys.argv[3]} r{sys.argv[4]} delivered/s={dl/dur/1e6:.2f}M server={d['server']['cpu_pct']}% us/deliv={d['server']['cpu_s']/dl*1e6:.3f} tool={d['client']['cpu_pct']}% tool-us/deliv={d['client']['cpu_s']/dl*1e6 if 'cpu_s' in d['client'] else float('nan'):.3f} p99={d['latency_us']['p99']/1000:.1f}ms lost={d.get('lost')} dup={d.get('duplicated')}")
PY
}
for r in 1 2 3; do for s in ${SERVERS:-redis nats}; do for t in old new; do run $s $t $r; done; done; done
