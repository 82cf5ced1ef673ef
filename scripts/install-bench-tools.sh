#!/usr/bin/env bash
# Installs the tools `strait-bench compare` drives: nginx (the comparison gateway) and wrk (the
# HTTP/1 load generator), h2load (HTTP/2's, from nghttp2-client), valgrind for
# scripts/callgrind.sh, strace for scripts/syscalls.sh and ss (iproute2) for
# scripts/backend-connects.sh (openssl makes their TLS certificate), from Debian/Ubuntu packages.
# Idempotent: installs only what is missing, then prints the versions found. Needs root (or sudo) for apt-get.
# With --oha it also builds oha (an open-loop HTTP load generator, for compare's "HTTP at the same
# load" rows and LOAD=oha scripts/paced.sh) from crates.io with cargo, about 4 minutes on two cores.
# With --pgo it also installs the newest LLVM Debian offers, for llvm-profdata (scripts/pgo.sh),
# unless rustup's llvm-tools are there.
set -euo pipefail
oha=false pgo=false
for arg in "$@"; do
    case $arg in
        --oha) oha=true ;;
        --pgo) pgo=true ;;
        *) echo "usage: $0 [--oha] [--pgo]" >&2; exit 2 ;;
    esac
done

need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v h2load >/dev/null 2>&1 || need+=(h2load)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
command -v strace >/dev/null 2>&1 || need+=(strace)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v ss >/dev/null 2>&1 || need+=(ss)

# Runs a command as root: directly when root, else through sudo.
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "error: run as root or install sudo" >&2
        exit 1
    fi
}

if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    as_root apt-get update -qq
    pkgs=()
    for tool in "${need[@]}"; do
        case "$tool" in
            # nginx-light is the smallest build with the proxy and map modules; newer Debian
            # releases dropped it, so fall back to the plain package.
            nginx)
                if apt-cache show nginx-light >/dev/null 2>&1; then pkgs+=(nginx-light); else pkgs+=(nginx); fi ;;
            h2load) pkgs+=(nghttp2-client) ;;
            ss) pkgs+=(iproute2) ;;
            *) pkgs+=("$tool") ;;
        esac
    done
    # Do not let the package start a system nginx on port 80: the harness runs its own.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
        as_root chmod +x /usr/sbin/policy-rc.d
        trap 'as_root rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
else
    echo "nginx, wrk, h2load, taskset, valgrind, strace, openssl and ss are already installed"
fi

if $oha && ! command -v oha >/dev/null 2>&1; then
    echo "installing: oha (cargo install)"
    cargo install oha --locked --version 1.16.0
fi

if $pgo; then
    host=$(rustc -vV | sed -n 's/^host: //p')
    if [[ ! -x $(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata ]]; then
        newest_llvm() { apt-cache pkgnames llvm- | grep -E '^llvm-[0-9]+$' | sort -V | tail -n 1 || true; }
        llvm=$(newest_llvm)
        # A fresh machine may have no package lists yet.
        [[ -n $llvm ]] || { as_root apt-get update -qq; llvm=$(newest_llvm); }
        [[ -n $llvm ]] || { echo "error: no llvm-N package found; rustup component add llvm-tools" >&2; exit 1; }
        if ! dpkg -s "$llvm" >/dev/null 2>&1; then
            echo "installing: $llvm (for llvm-profdata)"
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$llvm"
        fi
    fi
fi

echo "--- versions"
nginx -v 2>&1
wrk --version 2>&1 | head -n 1 || true   # wrk prints its version and exits 1
h2load --version 2>&1 | head -n 1
taskset --version 2>&1 | head -n 1
valgrind --version 2>&1 | head -n 1
strace --version 2>&1 | head -n 1
ss --version 2>&1 | head -n 1
if command -v oha >/dev/null 2>&1; then oha --version; fi
