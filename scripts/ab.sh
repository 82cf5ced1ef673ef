#!/usr/bin/env bash
# Two builds of Strait measured in alternation on one workload: how to tell a change's effect
# on throughput from this shared machine's noise (20–35 % between runs), where callgrind's
# instruction counts are not the whole story. Each run starts a fresh gateway (the callgrind
# configuration, default workers) in front of one `strait echo`, warms it up for 1 s and
# records 4 s; each pair of runs alternates which build goes first.
#
#   scripts/ab.sh BUILD_A BUILD_B [http|churn|paced|h2|echo|connect|stream] [PAIRS]   (default: http, 6 pairs)
#
#   http     keep-alive GETs: wrk -t1 -c64          (requests/s, p99 µs)
#   churn    as http, each connection closed after 20 requests (bench/wrk-churn.lua)
#   paced    keep-alive GETs at a fixed rate: oha -c64 -q RATE (default 27000), timed from when
#            each request was due (requests/s as asked; the p99 is the point)
#   h2       HTTP/2 GETs: h2load -t1 -c8 -m8        (requests/s, p99 µs)
#   echo     64-byte WebSocket round trips, 100 connections  (messages/s, p99 µs)
#   connect  WebSocket connect + upgrade + close, 32 clients (sessions/s, handshake p99 µs)
#   stream   1 MiB binary messages echoed back, one connection (kB/s echoed; no p99: 0)
#
# BUILD_A and BUILD_B are `strait` binaries (copy one aside before rebuilding). Prints one line
# per run — rate, p99, and the gateway's CPU time per unit in user space and in the kernel
# (/proc, all threads: what a change costs in time, cache misses included, where callgrind
# counts instructions) — then each build's medians, and how many pairs B won. Loopback only;
# the load generator runs on the last CPU; every run is bounded (5 s). Needs the release build
# of strait-bench, wrk and h2load, and oha for `paced` (scripts/install-bench-tools.sh --oha).
# Ports: STRAIT_AB_PORT (default 19780) and the next four.
set -euo pipefail
(($# >= 2)) || { sed -n 8p "$0" >&2; exit 2; }
a=$(realpath "$1") b=$(realpath "$2") mode=${3:-http} pairs=${4:-6}
STRAIT_BIN=$a
source "$(dirname "$0")/gateways.sh"
require wrk h2load openssl taskset
[[ $mode == paced ]] && require oha
start_echo "${STRAIT_AB_PORT:-19780}"
cpu=$(($(nproc) - 1))
url=$gw

# The gateway's CPU time so far, all threads: "user system" in clock ticks.
ticks() { awk '{ print $14, $15 }' "/proc/$pid/stat"; }

# One recorded run of $mode against the gateway on $gw: "rate p99_us", after its warm-up
# (which ends with `ticks >"$dir/ticks"`, so the CPU counted is the recorded part's).
measure() {
    case $mode in
        http|churn)
              local script=()
              [[ $mode == churn ]] && script=(-s bench/wrk-churn.lua)
              taskset -c "$cpu" wrk -t1 -c64 -d1s "${script[@]}" "http://$url/bench/http" >/dev/null
              ticks >"$dir/ticks"
              taskset -c "$cpu" wrk -t1 -c64 -d4s --latency "${script[@]}" "http://$url/bench/http" | awk '
                  function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; return v * 1e6 }
                  /Requests\/sec/ { r = $2 } / 99%/ { p = us($2) }
                  /Non-2xx|Socket errors/ { print "error: " $0 > "/dev/stderr"; bad = 1 }
                  END { printf "%d %d\n", bad ? 0 : r, p }' ;;
        paced) local oha=(taskset -c "$cpu" oha -c64 -q "${RATE:-27000}" --latency-correction --no-tui --output-format json)
               "${oha[@]}" -z 1s "http://$url/bench/http" >/dev/null
               ticks >"$dir/ticks"
               # In its JSON, the first "requestsPerSec" is the summary's; percentiles in seconds.
               "${oha[@]}" -z 4s "http://$url/bench/http" | awk '
                   $1 == "\"requestsPerSec\":" && !rate { gsub(",", "", $2); rate = $2 }
                   /"latencyPercentiles"/ { in_p = 1 }
                   in_p && $1 == "\"p99\":" { gsub(",", "", $2); p = $2 * 1e6 }
                   in_p && /}/ { in_p = 0 }
                   END { printf "%d %d\n", rate, p }' ;;
        h2) taskset -c "$cpu" h2load -t1 -c8 -m8 -D1 "http://$url/bench/http" >/dev/null
            ticks >"$dir/ticks"
            local r
            r=$(taskset -c "$cpu" h2load -t1 -c8 -m8 -D4 --log-file="$dir/h2.log" "http://$url/bench/http" \
                | awk '/^requests:/ { print int($8 / 4) }')
            echo "$r $(awk '{ print $3 }' "$dir/h2.log" | sort -n | awk '{ v[NR] = $1 } END { print v[int(NR * 0.99)] }')" ;;
        echo) ticks >"$dir/ticks"
              taskset -c "$cpu" "$bench" echo --json --url "ws://$url/" --sources 4 --conns 100 --warmup 1 --duration 4 \
                | tail -1 | sed -E 's/.*"messages_per_sec":([0-9]+).*"p99_us":([0-9]+).*/\1 \2/' ;;
        connect) taskset -c "$cpu" "$bench" connect --json --url "ws://$url/" --sources 4 --workers 32 --duration 1 >/dev/null
                 ticks >"$dir/ticks"
                 taskset -c "$cpu" "$bench" connect --json --url "ws://$url/" --sources 4 --workers 32 --duration 4 \
                     | tail -1 | sed -E 's/.*"sessions_per_sec":([0-9]+).*"p99_us":([0-9]+).*/\1 \2/' ;;
        stream) ticks >"$dir/ticks"
                taskset -c "$cpu" "$bench" stream --json --url "ws://$url/" --sources 1 --warmup 1 --duration 4 \
                    | tail -1 | sed -E 's/.*"mb_per_sec":([0-9.]+).*/\1/' | awk '{ printf "%d 0\n", $1 * 1000 }' ;;
        *) echo "error: unknown workload $mode" >&2; exit 2 ;;
    esac
}

run() {
    "$1" run --config "$dir/strait.yaml" >/dev/null 2>&1 &
    local pid=$!
    pids+=("$pid")
    wait_listening
    local rate p99 user sys u0 s0
    read -r rate p99 < <(measure)
    ((rate > 0)) || { echo "error: $mode through $1 completed nothing, or failed" >&2; exit 1; }
    read -r user sys < <(ticks)
    # CPU per unit (stream: per kB), in µs: the ticks since the warm-up over the units done
    # since (echo's and stream's ticks include their own second of warm-up at the same rate).
    local secs=4
    [[ $mode == echo || $mode == stream ]] && secs=5
    read -r u0 s0 <"$dir/ticks"
    awk -v r="$rate" -v p="$p99" -v u=$((user - u0)) -v s=$((sys - s0)) -v t="$secs" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { n = r * t; printf "%d %d %.2f %.2f\n", r, p, n ? u * 1e6 / hz / n : 0, n ? s * 1e6 / hz / n : 0 }'
    kill "$pid"; wait "$pid" 2>/dev/null || true
}

printf '%-5s %-5s %10s %10s %8s %8s\n' pair build rate p99_us user_us sys_us
for pair in $(seq "$pairs"); do
    order=(A B); ((pair % 2)) || order=(B A)
    for side in "${order[@]}"; do
        bin=$a; [[ $side == B ]] && bin=$b
        run "$bin" >"$dir/out"
        read -r rate p99 user sys <"$dir/out"
        printf '%-5s %-5s %10s %10s %8s %8s\n' "$pair" "$side" "$rate" "$p99" "$user" "$sys"
        echo "$pair $side $rate $p99 $user $sys" >>"$dir/runs"
    done
done
# The median of column $2 over build $1's runs.
median() {
    awk -v side="$1" -v col="$2" '$2 == side { print $col }' "$dir/runs" | sort -n \
        | awk '{ v[NR] = $1 } END { print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
read -r won lower < <(awk '{ r[$2, $1] = $3; p[$2, $1] = $4; n = $1 > n ? $1 : n }
    END { for (i = 1; i <= n; i++) { w += r["B", i] > r["A", i]; l += p["B", i] < p["A", i] }; print w + 0, l + 0 }' "$dir/runs")
ra=$(median A 3) rb=$(median B 3)
echo "medians: A $ra/s, p99 $(median A 4) µs; B $rb/s, p99 $(median B 4) µs; B/A $(awk -v a="$ra" -v b="$rb" 'BEGIN { printf "%.3f", b / a }')"
echo "CPU per unit (µs, medians): A user $(median A 5), kernel $(median A 6); B user $(median B 5), kernel $(median B 6)"
echo "B faster in $won of $pairs pairs, lower p99 in $lower"
