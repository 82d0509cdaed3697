# Shell functions the benchmark scripts share (sourced, not run): ports and server processes.

# free_port: a port below the ephemeral range (so no client socket of a run can hold it) that
# nothing listens on.
free_port() {
    local p i lo
    lo="$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
    (( lo > 11000 )) || lo=32768
    for i in $(seq 1 200); do
        p=$((10000 + RANDOM % (lo - 10000)))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    echo "$(basename "$0"): no free port found" >&2
    return 1
}

# wait_port PID PORT: until something accepts on 127.0.0.1:PORT (10 s at most) while PID lives.
wait_port() {
    local pid="$1" port="$2" i
    for i in $(seq 1 200); do
        kill -0 "$pid" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}

# stop_pid PID...: SIGTERM, up to 5 s for each to exit, then SIGKILL; reaps them.
stop_pid() {
    local p i
    for p in "$@"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "$@"; do
        for i in $(seq 1 100); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.05
        done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
}

# stop_server: stops the server of SERVER_PID (if any) and clears it.
SERVER_PID=""
stop_server() {
    [[ -z "$SERVER_PID" ]] && return 0
    stop_pid "$SERVER_PID"
    SERVER_PID=""
}

# await_server WHAT LOG: waits until the server of SERVER_PID accepts on PORT; when it does not,
# says so with the end of LOG, stops it and returns 1.
await_server() {
    if ! wait_port "$SERVER_PID" "$PORT"; then
        echo "$(basename "$0"): $1 did not start on port $PORT; its log:" >&2
        tail -20 "$2" >&2 || true
        stop_server
        return 1
    fi
}
