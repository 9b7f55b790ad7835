#!/usr/bin/env bash
# Installs what the integration tests need: Debian's real etcd 3.4 server
# (/usr/bin/etcd) and etcdctl, the reference kaname is compared against, and
# curl (tests/tls.rs fetches /health over HTTPS as users do), nft (kaname chaos partitions)
# and faketime (kaname chaos --faults clock: libfaketime under one member).
# Idempotent: does nothing when both are present. Needs root (or sudo).
set -euo pipefail

need=()
[ -x /usr/bin/etcdctl ] || need+=(etcd-client)
[ -x /usr/bin/etcd ] || need+=(etcd-server)
[ -x /usr/bin/curl ] || need+=(curl)
# kaname chaos --faults partition: nftables rules inside member network namespaces.
[ -x /usr/sbin/nft ] || need+=(nftables)
# kaname chaos --faults clock: libfaketime preloaded into one member to jump its wall clock.
faketime_lib=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
[ -e "$faketime_lib" ] || need+=(faketime)

if [ ${#need[@]} -eq 0 ]; then
    echo "install-test-deps: $(/usr/bin/etcd --version | head -1), etcdctl $(ETCDCTL_API=3 /usr/bin/etcdctl version | head -1 | awk '{print $3}') already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-test-deps: root is needed to install ${need[*]}" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only when apt does not know the packages yet.
if ! apt-cache show "${need[@]}" >/dev/null 2>&1; then
    $SUDO apt-get update -q
fi

# etcd-server ships an init script; the tests start their own members, so keep
# the package from starting a system etcd (Docker images already forbid it).
policy=/usr/sbin/policy-rc.d
added_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    added_policy=1
fi
cleanup() { if [ -n "$added_policy" ]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT

$SUDO apt-get install -y -q --no-install-recommends "${need[@]}"

[ -x /usr/bin/etcdctl ] || { echo "install-test-deps: /usr/bin/etcdctl still missing" >&2; exit 1; }
[ -x /usr/bin/etcd ] || { echo "install-test-deps: /usr/bin/etcd still missing" >&2; exit 1; }
[ -x /usr/bin/curl ] || { echo "install-test-deps: /usr/bin/curl still missing" >&2; exit 1; }
[ -e "$faketime_lib" ] || { echo "install-test-deps: $faketime_lib still missing" >&2; exit 1; }
echo "install-test-deps: installed $(/usr/bin/etcd --version | head -1)"
