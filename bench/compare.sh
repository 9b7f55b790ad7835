#!/usr/bin/env bash
# Side-by-side put benchmark: kaname etcd vs Debian's etcd 3.4 on this machine, same client
# (`kaname bench`), same flags, alternating systems over several rounds to spread noise.
# Prints a markdown table for docs/benchmarks.md.
#
# usage: bench/compare.sh [ROUNDS]      (needs: cargo build --release -p kaname; etcd installed)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
K=target/release/kaname
[ -x "$K" ] || cargo build --release -p kaname >&2
work=$(mktemp -d /tmp/kaname-bench.XXXXXX)
trap 'for d in "$work"/*/; do bench/cluster.sh stop "$d" >/dev/null 2>&1 || true; done; rm -rf "$work"' EXIT

leader_of() { # endpoints -> the leader's endpoint
  for ep in ${1//,/ }; do
    if ETCDCTL_API=3 etcdctl --endpoints "$ep" endpoint status 2>/dev/null | grep -q ", true, false,"; then echo "$ep"; return; fi
  done
}
rps() { awk '/Requests\/sec/ {print $2}'; }
p99() { awk '/99% in/ {print $3}'; }

declare -A results
run_case() { # system members label bench-args...
  local sys=$1 members=$2 label=$3; shift 3
  local dir="$work/$sys-$members-$RANDOM" base=$((20000 + RANDOM % 8000))
  local eps; eps=$(MEMBERS=$members bench/cluster.sh start "$sys" "$dir" "$base")
  local target=$eps
  [ "$label" = "put-1client-leader" ] && target=$(leader_of "$eps")
  local out; out=$("$K" bench put --endpoints "$target" "$@")
  results["$sys|$members|$label"]+="$(echo "$out" | rps)/$(echo "$out" | p99) "
  bench/cluster.sh stop "$dir" >/dev/null
}

for r in $(seq 1 "$rounds"); do
  for sys in etcd kaname; do
    run_case "$sys" 3 put-64clients --conns 16 --clients 64 --total 30000 --val-size 256 --key-space-size 100000
    run_case "$sys" 3 put-1client-leader --conns 1 --clients 1 --total 3000 --val-size 256 --key-space-size 100000
    run_case "$sys" 1 put-64clients --conns 16 --clients 64 --total 30000 --val-size 256 --key-space-size 100000
  done
  echo "round $r done" >&2
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "| members | workload | etcd 3.4 req/s | kaname req/s | ratio | etcd p99 (s) | kaname p99 (s) |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for key in "3|put-64clients" "3|put-1client-leader" "1|put-64clients"; do
  m=${key%%|*} label=${key#*|}
  e=${results["etcd|$m|$label"]} k=${results["kaname|$m|$label"]}
  er=$(echo "$e" | tr ' ' '\n' | cut -d/ -f1 | median) kr=$(echo "$k" | tr ' ' '\n' | cut -d/ -f1 | median)
  ep=$(echo "$e" | tr ' ' '\n' | cut -d/ -f2 | median) kp=$(echo "$k" | tr ' ' '\n' | cut -d/ -f2 | median)
  ratio=$(awk -v a="$kr" -v b="$er" 'BEGIN {printf "%.2f", a/b}')
  printf '| %s | %s | %.0f | %.0f | %s | %s | %s |\n' "$m" "$label" "$er" "$kr" "$ratio" "$ep" "$kp"
done
