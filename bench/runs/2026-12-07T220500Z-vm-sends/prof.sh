#!/usr/bin/env bash
# prof.sh PEER BATCH ROUND (OUT=dir): server CPU, send calls and the kernel/user split of the server at 1x1000 full speed (server CPU 0, tool CPU 1)
cd /work/main; source scripts/bench-lib.sh
PORT=$(free_port)
if [[ $1 == gyre ]]; then
  printf '{"http_server":{"address":"127.0.0.1","port":%s},"log":{"level":"warn"},"workers":1,"http_api":{"key":"k"},"client":{"token":{"hmac_secret_key":"s"}},"channel":{"without_namespace":{"allow_subscribe_for_client":true}}}\n' $PORT > /tmp/win/g.json
  taskset -c 0 target/release/gyre -c /tmp/win/g.json > /tmp/win/s.log 2>&1 & SP=$!
  tgt="http://127.0.0.1:$PORT"; extra="--api-key k --hmac-secret s"
else
  taskset -c 0 redis-server --port $PORT --save '' --appendonly no > /tmp/win/s.log 2>&1 & SP=$!
  tgt="redis://127.0.0.1:$PORT"; extra=""
fi
wait_port $SP $PORT
taskset -c 1 target/release/gyre-bench fanout -n 1000 -c 1 -p 1 --size 100 -d 9 --warmup 1 -t 1 --batch $2 --inflight 2 --target $tgt $extra --server-pid $SP --json $OUT/$1-b$2-r$3.json -q > /dev/null 2>&1 & BP=$!
sleep 4
perf stat -e 'syscalls:sys_enter_sendto,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_read,syscalls:sys_enter_recvfrom' -p $SP -x, -o $OUT/stat-$1-b$2-r$3.txt -- sleep 3
perf record -e cpu-clock -F 2000 -p $SP -o /tmp/win/perf-$1-b$2-r$3.data -- sleep 2 2>/dev/null >/dev/null
wait $BP; kill $SP; wait $SP 2>/dev/null
python3 - $1 $2 $3 <<'PY'
import json,sys,os
peer,b,r=sys.argv[1:4]; out=os.environ['OUT']
d=json.load(open(f'{out}/{peer}-b{b}-r{r}.json'))
rate=d['delivered']/d['duration_s']
sends=0; t=None
for l in open(f'{out}/stat-{peer}-b{b}-r{r}.txt'):
    f=l.strip().split(',')
    if len(f)>3 and f[0].isdigit():
        if f[2].split(':')[1] in ('sys_enter_sendto','sys_enter_write','sys_enter_writev'): sends+=int(f[0])
        t=int(f[3])/1e9
us=d['server']['cpu_s']/d['delivered']*1e6
print(f"{peer:5s} batch={b} r{r} delivered/s={rate/1e6:.2f}M cpu={d['server']['cpu_pct']}% us/deliv={us:.3f} sends/s={sends/t/1e3:.0f}k deliveries/send={rate/(sends/t):.1f} p50={d['latency_us']['p50']/1000:.1f}ms tool={d['client']['cpu_pct']}% lost={d.get('lost')} dup={d.get('duplicated')}", end=' ')
PY
perf report -i /tmp/win/perf-$1-b$2-r$3.data --no-children --sort dso 2>/dev/null | grep -v '^#' | grep -v '^$' | awk '{printf "%s %s  ", $1, $2} END {print ""}'
