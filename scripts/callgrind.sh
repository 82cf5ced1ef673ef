#!/usr/bin/env bash
# Instructions per unit of work, Strait vs nginx, under valgrind's callgrind: repeatable on a
# noisy shared machine where throughput is not. For each gateway and each workload: start it
# under callgrind in front of `strait echo`, warm up for 2 s, zero the counters, load it for
# 8 s, dump, and divide the instructions by the units the load generator completed.
#
#   scripts/callgrind.sh [http|churn|h2|https|h2tls|echo|connect]...   (default: http h2 echo connect;
#   see scripts/gateways.sh)
#
# Needs the release build (cargo build --release -p strait-cli -p strait-bench), nginx, wrk,
# h2load and valgrind (scripts/install-bench-tools.sh installs them). Loopback only; every run is
# bounded (10 s of load each). Ports: STRAIT_CG_PORT (default 19080) and the next four.
# STRAIT_CG_KEEP=DIR keeps the profiles there (cg.MODE.GATEWAY.*) for callgrind_annotate.
# STRAIT_CG_LOCKS=1 also counts each gateway's atomic read-modify-write instructions per unit
# and where they are (scripts/locked.py; needs objdump and python3).
set -euo pipefail
source "$(dirname "$0")/gateways.sh"
modes=("$@")
((${#modes[@]})) || modes=(http h2 echo connect)
require valgrind callgrind_control nginx wrk h2load openssl
start_echo "${STRAIT_CG_PORT:-19080}"

printf '%-8s %-7s %10s %14s\n' mode gateway units instructions/unit
locks=${STRAIT_CG_LOCKS:-}
[[ -n $locks ]] && export VALGRIND_OPTS="${VALGRIND_OPTS:-} --dump-instr=yes"
for mode in "${modes[@]}"; do
    for side in strait nginx; do
        out=$dir/cg.$mode.$side
        if [[ $side == strait ]]; then
            valgrind --tool=callgrind --callgrind-out-file="$out" "$strait" run --config "$dir/strait.yaml" >/dev/null 2>"$dir/vg.log" &
        else
            valgrind --tool=callgrind --callgrind-out-file="$out" nginx -p "$dir" -c "$dir/nginx.conf" >/dev/null 2>"$dir/vg.log" &
        fi
        pid=$!
        # Started (under valgrind that takes a few seconds) once it accepts connections.
        wait_listening
        load "$mode" 2 >/dev/null
        callgrind_control -z "$pid" >/dev/null 2>&1
        units=$(load "$mode" 8)
        callgrind_control -d "$pid" >/dev/null 2>&1
        kill "$pid"; wait "$pid" 2>/dev/null || true
        ir=$(grep -h '^summary:\|^totals:' "$out".* 2>/dev/null | tail -1 | awk '{print $2}')
        printf '%-8s %-7s %10s %14s\n' "$mode" "$side" "$units" "$((ir / units))"
        if [[ -n $locks ]]; then
            binary=$strait
            [[ $side == nginx ]] && binary=$(command -v nginx)
            python3 "$(dirname "$0")/locked.py" "$binary" "$(ls "$out".* | tail -1)" "$units" 12
        fi
        if [[ -n ${STRAIT_CG_KEEP:-} ]]; then
            mkdir -p "$STRAIT_CG_KEEP" && mv "$out".* "$STRAIT_CG_KEEP"/
        fi
        rm -f "$out" "$out".*
    done
done
