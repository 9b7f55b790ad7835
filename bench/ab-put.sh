#!/usr/bin/env bash
# Put throughput A/B, 3 members: for each round and each system (etcd, or the path of a kaname
# binary), a fresh cluster, then `kaname bench put` with 64 clients over all members and with
# one client against the leader. Systems alternate within a round, so machine noise hits all.
#
# usage: bench/ab-put.sh ROUNDS SYSTEM...    e.g. bench/ab-put.sh 2 etcd /tmp/kaname-old target/release/kaname
# needs: cargo build --release -p kaname; etcd installed (scripts/install-test-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=$1
shift
B=target/release/kaname
[ -x "$B" ] || cargo build --release -p kaname >&2
rps() { awk '/Requests\/sec/ {print $2}'; }
p99() { awk '/99% in/ {print $3}'; }
for _ in $(seq 1 "$rounds"); do
  for sys in "$@"; do
    dir=$(mktemp -d /tmp/kaname-ab.XXXXXX) base=$((20000 + RANDOM % 8000))
    if [ "$sys" = etcd ]; then eps=$(bench/cluster.sh start etcd "$dir" "$base"); else eps=$(KANAME=$sys bench/cluster.sh start kaname "$dir" "$base"); fi
    sleep 1
    leader=$(ETCDCTL_API=3 etcdctl --endpoints "$eps" endpoint status | awk -F', ' '$5=="true" {print $1}')
    o64=$("$B" bench put --endpoints "$eps" --conns 16 --clients 64 --total 30000 --val-size 256 --key-space-size 100000)
    o1=$("$B" bench put --endpoints "$leader" --conns 1 --clients 1 --total 3000 --val-size 256 --key-space-size 100000)
    printf "%-28s 64c=%s p99=%s   1c=%s p99=%s\n" "$sys" "$(echo "$o64" | rps)" "$(echo "$o64" | p99)" "$(echo "$o1" | rps)" "$(echo "$o1" | p99)"
    bench/cluster.sh stop "$dir" >/dev/null
    rm -rf "$dir"
  done
done
