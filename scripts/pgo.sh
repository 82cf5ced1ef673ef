#!/usr/bin/env bash
# A profile-guided release build of `strait` (PGO): builds it instrumented, runs it through
# the data plane's workloads, and builds it again with the profile, so the compiler lays out
# and inlines the code the gateway runs per request and per frame for how it actually runs.
# Measured on 2026-12-05 (bench/micro-benchmarks.md, "Profile-guided build"): HTTP/1 and
# HTTP/2 serve more requests per second, echo and set-up are unchanged.
#
#   scripts/pgo.sh          -> target/pgo/strait (`strait --version` says "profile-guided")
#
# The workloads (3 s each, under a minute in all, loopback only): keep-alive HTTP/1 GETs, with
# clients that come and go, with the access log on, and through a route with the usual
# policies (api_key, rate_limit, cors, headers); HTTP/2, HTTPS and HTTP/2 over TLS; WebSocket
# echo on 50 and 1,000 connections, through the policies too, connect-upgrade-close, and a
# stream of 1 MiB messages. The echo backend is the same binary, so `strait echo` is
# profiled too. Paths the workloads never take are still built, only not favoured.
#
# Needs wrk, h2load and openssl (scripts/install-bench-tools.sh) and an llvm-profdata that
# reads this rustc's profiles: rustup's (`rustup component add llvm-tools`) or, failing that,
# the newest LLVM on PATH or in /usr/lib/llvm-* (`scripts/install-bench-tools.sh --pgo`
# installs Debian's). Two full release builds: ~12 minutes on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$PWD/target/pgo
host=$(rustc -vV | sed -n 's/^host: //p')

# llvm-profdata: rustup's matches rustc's LLVM; otherwise the newest found.
profdata=$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata
if [[ ! -x $profdata ]]; then
    profdata=$(ls -d /usr/lib/llvm-*/bin/llvm-profdata 2>/dev/null | sort -V | tail -n 1 || true)
    [[ -n $profdata ]] || profdata=$(command -v llvm-profdata || true)
fi
[[ -n $profdata && -x $profdata ]] || {
    echo "error: llvm-profdata is missing: rustup component add llvm-tools, or scripts/install-bench-tools.sh --pgo" >&2
    exit 1
}

# The load generator, an ordinary release build. `--target` keeps RUSTFLAGS off build
# scripts and proc macros, so only the gateway is instrumented.
cargo build --release -p strait-bench
RUSTFLAGS="-Cprofile-generate=$out/raw" \
    cargo build --release -p strait-cli --target "$host" --target-dir "$out/gen"
rm -rf "$out/raw"

STRAIT_BIN=$out/gen/$host/release/strait
export LLVM_PROFILE_FILE=$out/raw/strait-%p-%m.profraw
source scripts/gateways.sh
require wrk h2load openssl
start_echo "${STRAIT_PGO_PORT:-19980}"
backend=$(sed -n 's/^ *backend: //p' "$dir/strait.yaml" | head -n 1)
strait_config=$dir/pgo.yaml
cat >"$strait_config" <<YAML
environments:
  - {name: bench, listen: $gw, websocket: true, access_log: {format: off}}
  - name: bench-tls
    listen: $gw_tls
    websocket: true
    access_log: {format: off}
    tls: {cert: $dir/cert.pem, key: $dir/key.pem}
  - {name: logged, listen: $gw_logged, websocket: true, access_log: {format: json, file: $dir/access.log}}
proxies:
  - name: secure
    path: /secure/*
    backend: $backend
    deploy: [bench, logged]
    policies:
      - {type: api_key, query: api_key}
      - {type: rate_limit, requests: 1000000000, per: 1s}
      - {type: cors, origins: ["https://app.example.com"]}
      - {type: headers, request_set: ["X-Env: bench"], response_remove: [Server]}
      - {type: ws_message_size, max: 65536}
  - {name: echo, path: /*, backend: $backend, deploy: [bench, bench-tls, logged]}
consumers:
  - {name: alice, credentials: {api_keys: [k-alice-0123456789]}}
YAML
start_gateway strait

s=3
key=k-alice-0123456789
for mode in http churn h2 https h2tls echo connect; do
    echo "$mode: $(load "$mode" "$s") units"
done
wrk -t1 -c64 -d"${s}s" "http://$gw_logged/bench/http" | sed -n 's/^ *\([0-9]*\) requests in.*/logged: \1 requests/p'
wrk -t1 -c64 -d"${s}s" -H "X-API-Key: $key" -H 'Origin: https://app.example.com' "http://$gw/secure/x" \
    | sed -n 's/^ *\([0-9]*\) requests in.*/policies: \1 requests/p'
ws() { "$bench" "$@" --json --warmup 0 --duration "$s" | tail -n 1; }
echo "policies, WebSocket: $(ws echo --url "ws://$gw/secure/?api_key=$key" --sources 4 --conns 20)"
echo "echo, 1,000 connections: $(ws echo --url "ws://$gw/" --sources 8 --conns 1000)"
echo "stream: $(ws stream --url "ws://$gw/" --sources 4)"
# Each process (the gateway, the echo) writes its profile when it exits.
kill "$pid" "${pids[@]}" 2>/dev/null || true
wait 2>/dev/null || true

"$profdata" merge -o "$out/strait.profdata" "$out/raw" || {
    echo "error: $profdata cannot read this rustc's profiles ($(rustc -vV | grep LLVM)); rustup component add llvm-tools" >&2
    exit 1
}
STRAIT_PGO=1 RUSTFLAGS="-Cprofile-use=$out/strait.profdata" \
    cargo build --release -p strait-cli --target "$host" --target-dir "$out/use"
cp "$out/use/$host/release/strait" "$out/strait"
echo "built $out/strait: $("$out/strait" --version)"
