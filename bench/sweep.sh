#!/usr/bin/env bash
# Issue 4's side-by-side sweep: kaname etcd vs Debian's etcd 3.4 on this machine, 1 and 3
# members, 1/16/64/256 clients, put and range (linearizable and serializable), 256-byte values,
# fsync on for both, the same client (`kaname bench`). The systems alternate over ROUNDS rounds
# (a fresh cluster per system, member count and round); medians are printed as a markdown table.
#
# usage: bench/sweep.sh [ROUNDS] [CLIENTS...]    e.g. bench/sweep.sh 3   or   bench/sweep.sh 1 1 64
# needs: cargo build --release -p kaname; etcd installed (scripts/install-test-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
shift || true
clients=("$@")
[ ${#clients[@]} -gt 0 ] || clients=(1 16 64 256)
K=target/release/kaname
[ -x "$K" ] || cargo build --release -p kaname >&2
work=$(mktemp -d /tmp/kaname-sweep.XXXXXX)
trap 'for d in "$work"/*/; do bench/cluster.sh stop "$d" >/dev/null 2>&1 || true; done; rm -rf "$work"' EXIT

rps() { awk '/Requests\/sec/ {print $2}'; }
p99() { awk '/99% in/ {print $3}'; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Enough requests for a few seconds of load at each client count, fewer for one client.
total_for() { if [ "$1" -eq 1 ]; then echo 5000; else echo 20000; fi; }
conns_for() { if [ "$1" -lt 16 ]; then echo "$1"; else echo 16; fi; }

declare -A results
cases=()
for r in $(seq 1 "$rounds"); do
  for members in 3 1; do
    for sys in etcd kaname; do
      dir="$work/$sys-$members-$r" base=$((20000 + RANDOM % 8000))
      eps=$(MEMBERS=$members bench/cluster.sh start "$sys" "$dir" "$base")
      # The range workloads read one 256-byte key, as etcd's `benchmark range KEY` does.
      ETCDCTL_API=3 etcdctl --endpoints "$eps" put sweep-key "$(head -c 256 /dev/zero | tr '\0' v)" >/dev/null
      # One client talks to one member: the leader, for both systems, so that the one-client
      # rows compare the same path (a follower adds a hop to the leader for writes and for
      # linearizable reads; which member leads differs between clusters).
      leader=$(ETCDCTL_API=3 etcdctl --endpoints "$eps" endpoint status | awk -F', ' '$5=="true" {print $1}')
      for c in "${clients[@]}"; do
        targets=$eps
        [ "$c" -eq 1 ] && targets=$leader
        common=(--endpoints "$targets" --conns "$(conns_for "$c")" --clients "$c" --total "$(total_for "$c")")
        for wl in put range-l range-s; do
          case $wl in
            put) out=$("$K" bench put "${common[@]}" --val-size 256 --key-space-size 100000) ;;
            range-l) out=$("$K" bench range "${common[@]}" --consistency l sweep-key) ;;
            range-s) out=$("$K" bench range "${common[@]}" --consistency s sweep-key) ;;
          esac
          key="$members|$wl|$c"
          [ "$r" -eq 1 ] && [ "$sys" = etcd ] && cases+=("$key")
          results["$sys|$key"]+="$(echo "$out" | rps)/$(echo "$out" | p99) "
        done
      done
      bench/cluster.sh stop "$dir" >/dev/null
    done
  done
  echo "round $r done" >&2
done

echo "| members | workload | clients | etcd 3.4 req/s | kaname req/s | ratio | etcd p99 (s) | kaname p99 (s) |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for key in "${cases[@]}"; do
  IFS='|' read -r m wl c <<<"$key"
  e=${results["etcd|$key"]} k=${results["kaname|$key"]}
  er=$(echo "$e" | tr ' ' '\n' | cut -d/ -f1 | median) kr=$(echo "$k" | tr ' ' '\n' | cut -d/ -f1 | median)
  ep=$(echo "$e" | tr ' ' '\n' | cut -d/ -f2 | median) kp=$(echo "$k" | tr ' ' '\n' | cut -d/ -f2 | median)
  ratio=$(awk -v a="$kr" -v b="$er" 'BEGIN {printf "%.2f", a/b}')
  printf '| %s | %s | %s | %.0f | %.0f | %s | %s | %s |\n' "$m" "$wl" "$c" "$er" "$kr" "$ratio" "$ep" "$kp"
done
