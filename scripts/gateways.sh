# Sourced by scripts/callgrind.sh, scripts/syscalls.sh and scripts/paced.sh: the release
# build, `strait echo`, and Strait's and nginx's configurations in front of it (nginx as the
# comparison configures it, in one process), plus the bounded workloads the first two measure.
#
#   require TOOL...          exits with a clear error unless every TOOL is installed
#   start_echo PORT          `strait echo` on PORT+1; configurations for gateways on PORT
#   wait_listening           waits (up to 30 s) until something accepts on PORT
#   start_gateway SIDE       starts strait or nginx (its pid in $pid) and waits until it accepts
#                            (Strait with $strait_config when set, else the configuration above)
#   load MODE SECONDS        runs one workload, prints the units it completed:
#     http     keep-alive GETs: wrk -t1 -c8                         (unit: request)
#     churn    as http, each connection closed after 20 requests    (unit: request)
#              (bench/wrk-churn.lua, the comparison's client-churn row)
#     h2       HTTP/2 GETs: h2load, 8 connections × 8 streams       (unit: request)
#     https    keep-alive GETs over TLS: wrk -t1 -c8                (unit: request)
#     h2tls    HTTP/2 GETs over TLS (ALPN h2): as h2                (unit: request)
#     echo     64-byte WebSocket round trips on 50 connections      (unit: message echoed)
#     connect  WebSocket connect + upgrade + close, 8 workers        (unit: session)
#
# STRAIT_BIN=PATH measures another build of the gateway (say, one with debug line tables).
# Loopback only. Leaves $dir (a temporary folder, removed on exit), $strait, $bench, $gw,
# $gw_h2 (nginx's HTTP/2 port; Strait serves both on $gw), $gw_tls (both gateways' TLS
# port, with a self-signed certificate made by openssl) and $gw_logged (nginx's port that
# writes an access log; the scripts leave it unused). `load h2` goes to $gw_h2 while
# $side is nginx.
cd "$(dirname "${BASH_SOURCE[0]}")/.."

require() {
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "error: $tool is missing (scripts/install-bench-tools.sh)" >&2; exit 1; }
    done
}

strait=${STRAIT_BIN:-target/release/strait}
bench=target/release/strait-bench
[[ -x $strait && -x $bench ]] || { echo "error: build first: cargo build --release -p strait-cli -p strait-bench" >&2; exit 1; }
dir=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

start_echo() {
    port=$1
    gw=127.0.0.1:$port
    gw_h2=127.0.0.1:$((port + 2))
    gw_tls=127.0.0.1:$((port + 3))
    gw_logged=127.0.0.1:$((port + 4))
    local echo_addr=127.0.0.1:$((port + 1))
    "$strait" echo --listen "$echo_addr" >/dev/null 2>&1 &
    pids+=($!)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
        -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
    cat >"$dir/strait.yaml" <<YAML
environments:
  - name: bench
    listen: $gw
    websocket: true
    access_log: { format: off }
  - name: bench-tls
    listen: $gw_tls
    websocket: true
    access_log: { format: off }
    tls: { cert: $dir/cert.pem, key: $dir/key.pem }
proxies:
  - name: echo
    path: /*
    backend: http://$echo_addr/
    deploy: [bench, bench-tls]
YAML
    sed -e "s#{{PREFIX}}#$dir#g" -e "s#{{LISTEN}}#$gw#" -e "s#{{LISTEN_H2}}#$gw_h2#" -e "s#{{ECHO}}#$echo_addr#" \
        -e "s#{{LISTEN_TLS}}#$gw_tls#" -e "s#{{LISTEN_LOGGED}}#$gw_logged#" -e "s#{{CERT}}#$dir/cert.pem#" -e "s#{{KEY}}#$dir/key.pem#" \
        -e "s#{{WORKERS}}#1#" -e "s#{{NOFILE}}#4096#" -e "s#{{WORKER_CONNECTIONS}}#4096#" \
        -e "s#master_process on#master_process off#" bench/nginx.conf.template >"$dir/nginx.conf"
}

start_gateway() {
    if [[ $1 == strait ]]; then
        "$strait" run --config "${strait_config:-$dir/strait.yaml}" >/dev/null 2>&1 &
    else
        nginx -p "$dir" -c "$dir/nginx.conf" >/dev/null 2>&1 &
    fi
    pid=$!
    wait_listening
}

wait_listening() {
    for _ in $(seq 150); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return
        sleep 0.2
    done
}

load() {
    local mode=$1 secs=$2
    case $mode in
        http) wrk -t1 -c8 -d"${secs}s" "http://$gw/bench/http" | awk '/requests in/ {print $1}' ;;
        churn) wrk -t1 -c8 -d"${secs}s" -s bench/wrk-churn.lua "http://$gw/bench/http" | awk '/requests in/ {print $1}' ;;
        h2) local url=http://$gw/bench/http
            [[ ${side:-} == nginx ]] && url=http://$gw_h2/bench/http
            h2load -t1 -c8 -m8 -D"$secs" "$url" | awk '/^requests:/ {print $8}' ;;
        https) wrk -t1 -c8 -d"${secs}s" "https://$gw_tls/bench/http" | awk '/requests in/ {print $1}' ;;
        h2tls) h2load -t1 -c8 -m8 -D"$secs" "https://$gw_tls/bench/http" | awk '/^requests:/ {print $8}' ;;
        echo) "$bench" echo --json --url "ws://$gw/" --sources 4 --conns 50 --warmup 0 --duration "$secs" \
                | tail -1 | sed -E 's/.*"messages":([0-9]+).*/\1/' ;;
        connect) "$bench" connect --json --url "ws://$gw/" --sources 4 --workers 8 --duration "$secs" \
                | tail -1 | sed -E 's/.*"sessions":([0-9]+).*/\1/' ;;
        *) echo "error: unknown mode $mode" >&2; exit 1 ;;
    esac
}
