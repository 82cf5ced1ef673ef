#!/usr/bin/env bash
# System calls per unit of work, Strait vs nginx, counted by `strace -c -f` on the gateway
# (every thread) while a bounded load runs: the kernel's share of the work is the same for
# both when these agree. Counts only: strace slows both gateways down, so rates here mean
# nothing.
#
#   scripts/syscalls.sh [http|echo|connect]...   (default: all three)
#
# Workloads as in scripts/callgrind.sh (wrk -t1 -c8; 50 echoing WebSocket connections;
# 8 workers connecting and closing), 3 s each. Needs the release build, nginx, wrk and strace
# (scripts/install-bench-tools.sh). Loopback only. Ports: STRAIT_SC_PORT (default 19180) and
# the next one.
set -euo pipefail
cd "$(dirname "$0")/.."
modes=("$@")
((${#modes[@]})) || modes=(http echo connect)
for tool in strace nginx wrk; do
    command -v "$tool" >/dev/null || { echo "error: $tool is missing (scripts/install-bench-tools.sh)" >&2; exit 1; }
done
strait=target/release/strait
bench=target/release/strait-bench
[[ -x $strait && -x $bench ]] || { echo "error: build first: cargo build --release -p strait-cli -p strait-bench" >&2; exit 1; }

port=${STRAIT_SC_PORT:-19180}
gw=127.0.0.1:$port
echo_addr=127.0.0.1:$((port + 1))
dir=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

"$strait" echo --listen "$echo_addr" >/dev/null 2>&1 &
pids+=($!)
cat >"$dir/strait.yaml" <<YAML
environments:
  - name: bench
    listen: $gw
    websocket: true
    access_log: { format: off }
proxies:
  - name: echo
    path: /*
    backend: http://$echo_addr/
    deploy: [bench]
YAML
# nginx as the comparison configures it, with one worker process.
sed -e "s#{{PREFIX}}#$dir#g" -e "s#{{LISTEN}}#$gw#" -e "s#{{ECHO}}#$echo_addr#" \
    -e "s#{{WORKERS}}#1#" -e "s#{{NOFILE}}#4096#" -e "s#{{WORKER_CONNECTIONS}}#4096#" \
    -e "s#master_process on#master_process off#" bench/nginx.conf.template >"$dir/nginx.conf"

# Prints the units one bounded load run completed.
load() {
    local mode=$1
    case $mode in
        http) wrk -t1 -c8 -d3s "http://$gw/bench/http" | awk '/requests in/ {print $1}' ;;
        echo) "$bench" echo --json --url "ws://$gw/" --sources 4 --conns 50 --warmup 0 --duration 3 \
                | tail -1 | sed -E 's/.*"messages":([0-9]+).*/\1/' ;;
        connect) "$bench" connect --json --url "ws://$gw/" --sources 4 --workers 8 --duration 3 \
                | tail -1 | sed -E 's/.*"sessions":([0-9]+).*/\1/' ;;
        *) echo "error: unknown mode $mode" >&2; exit 1 ;;
    esac
}

for mode in "${modes[@]}"; do
    for side in strait nginx; do
        if [[ $side == strait ]]; then
            "$strait" run --config "$dir/strait.yaml" >/dev/null 2>&1 &
        else
            nginx -p "$dir" -c "$dir/nginx.conf" >/dev/null 2>&1 &
        fi
        pid=$!
        for _ in $(seq 50); do
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
            sleep 0.1
        done
        strace -c -f -p "$pid" -o "$dir/counts" 2>/dev/null &
        tracer=$!
        sleep 1
        units=$(load "$mode")
        kill -INT "$tracer"; wait "$tracer" 2>/dev/null || true
        kill "$pid"; wait "$pid" 2>/dev/null || true
        # strace -c: % time, seconds, usecs/call, calls, [errors,] syscall.
        echo "== $mode $side ($units units): calls per unit, the most frequent first (failed ones in brackets)"
        awk -v units="$units" '$1 ~ /^[0-9.]+$/ && $NF != "total" {
                errors = (NF == 6) ? $5 : 0
                printf "  %-14s %7.2f", $NF, $4 / units
                if (errors > 0) printf "  (%.2f)", errors / units
                printf "\n"
            }' "$dir/counts" | sort -k2 -rn | head -10
    done
done
