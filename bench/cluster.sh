#!/usr/bin/env bash
# Starts (or stops) a 3-member cluster of kaname or real etcd on loopback, for benchmarks.
# usage: bench/cluster.sh start kaname|etcd DIR BASEPORT  /  bench/cluster.sh stop DIR
set -euo pipefail
cmd=$1
if [ "$cmd" = stop ]; then
  dir=$2
  for p in "$dir"/pid*; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true; done
  sleep 0.5
  for p in "$dir"/pid*; do [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true; rm -f "$p"; done
  exit 0
fi
flavor=$2 dir=$3 base=$4
members=${MEMBERS:-3}
kaname=${KANAME:-$(dirname "$0")/../target/release/kaname}
mkdir -p "$dir"
ic=""
for i in $(seq 1 "$members"); do ic="$ic${ic:+,}m$i=http://127.0.0.1:$((base + 10*i + 1))"; done
for i in $(seq 1 "$members"); do
  cport=$((base + 10*i)) pport=$((base + 10*i + 1))
  args=(--name "m$i" --data-dir "$dir/m$i" --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport"
        --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport"
        --initial-cluster "$ic" --initial-cluster-state new --initial-cluster-token "bench-$base")
  if [ "$flavor" = etcd ]; then
    etcd "${args[@]}" --logger zap --log-level error >"$dir/log$i" 2>&1 &
  else
    "$kaname" etcd "${args[@]}" --log-level warn >"$dir/log$i" 2>&1 &
  fi
  echo $! >"$dir/pid$i"
done
eps=""
for i in $(seq 1 "$members"); do eps="$eps${eps:+,}127.0.0.1:$((base + 10*i))"; done
for _ in $(seq 1 100); do
  if ETCDCTL_API=3 etcdctl --endpoints "$eps" endpoint health >/dev/null 2>&1; then echo "$eps"; exit 0; fi
  sleep 0.2
done
echo "cluster did not become healthy" >&2; exit 1
