#!/usr/bin/env bash
# System calls per unit of work, Strait vs nginx, counted by `strace -c -f` on the gateway
# (every thread) while a bounded load runs: the kernel's share of the work is the same for
# both when these agree. Counts only: strace slows both gateways down, so rates here mean
# nothing.
#
#   scripts/syscalls.sh [http|churn|h2|https|h2tls|echo|connect]...   (default: http h2 echo connect)
#
# Workloads as in scripts/callgrind.sh (wrk -t1 -c8; h2load, 8 connections × 8 streams; 50
# echoing WebSocket connections; 8 workers connecting and closing), 3 s each. Needs the
# release build, nginx, wrk, h2load and strace (scripts/install-bench-tools.sh). Loopback
# only. Ports: STRAIT_SC_PORT (default 19180) and the next four. STRAIT_SC_TOP: how many
# system calls each list shows (default 10).
set -euo pipefail
source "$(dirname "$0")/gateways.sh"
modes=("$@")
((${#modes[@]})) || modes=(http h2 echo connect)
require strace nginx wrk h2load openssl
start_echo "${STRAIT_SC_PORT:-19180}"

for mode in "${modes[@]}"; do
    for side in strait nginx; do
        start_gateway "$side"
        strace -c -f -p "$pid" -o "$dir/counts" 2>/dev/null &
        tracer=$!
        sleep 1
        units=$(load "$mode" 3)
        kill -INT "$tracer"; wait "$tracer" 2>/dev/null || true
        kill "$pid"; wait "$pid" 2>/dev/null || true
        # strace -c: % time, seconds, usecs/call, calls, [errors,] syscall.
        echo "== $mode $side ($units units): calls per unit, the most frequent first (failed ones in brackets)"
        awk -v units="$units" '$1 ~ /^[0-9.]+$/ && $NF != "total" {
                errors = (NF == 6) ? $5 : 0
                printf "  %-14s %7.2f", $NF, $4 / units
                if (errors > 0) printf "  (%.2f)", errors / units
                printf "\n"
            }' "$dir/counts" | sort -k2 -rn | head -${STRAIT_SC_TOP:-10}
    done
done
