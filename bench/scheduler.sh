#!/usr/bin/env bash
# Scheduler throughput, scheduler_perf-style, end to end: a fresh single-member `kaname etcd`,
# one `kaname apiserver`, one `kaname scheduler` (default flags: it elects itself), all on
# loopback; then `kaname bench scheduler` creates the fake nodes and the pods through the API
# server and reports bound pods per second, created → bound latency and the scheduler's RSS.
# Everything is stopped by PID at the end.
#
# usage: bench/scheduler.sh [kaname bench scheduler flags...]
#   e.g. bench/scheduler.sh --workload basic --nodes 1000 --pods 10000
#        bench/scheduler.sh --workload spread --nodes 1000 --init-pods 1000 --pods 5000
#        bench/scheduler.sh --workload anti-affinity --nodes 1000 --init-pods 100 --pods 800
# needs: cargo build --release -p kaname
set -euo pipefail
cd "$(dirname "$0")/.."
kaname=${KANAME:-target/release/kaname}
[ -x "$kaname" ] || cargo build --release -p kaname >&2
dir=$(mktemp -d /tmp/kaname-bench-scheduler.XXXXXX)
base=${BASEPORT:-$((28000 + RANDOM % 2000))}
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] && echo "logs kept in $dir" || rm -rf "$dir"
}
trap cleanup EXIT
client=http://127.0.0.1:$base peer=http://127.0.0.1:$((base + 1))
"$kaname" etcd --name m1 --data-dir "$dir/m1" --listen-client-urls "$client" --advertise-client-urls "$client" \
  --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" --initial-cluster "m1=$peer" \
  --initial-cluster-state new --log-level warn >"$dir/store.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$base" endpoint health >/dev/null 2>&1 && break
  sleep 0.2
done
"$kaname" apiserver --etcd-servers="$client" --bind-address=127.0.0.1 --secure-port=$((base + 2)) \
  --cert-dir="$dir/pki" >"$dir/apiserver.out" 2>"$dir/apiserver.log" &
pids+=($!)
for _ in $(seq 1 100); do
  [ "$(curl -sk "https://127.0.0.1:$((base + 2))/readyz" 2>/dev/null)" = ok ] && [ -f "$dir/pki/admin.conf" ] && break
  sleep 0.2
done
"$kaname" scheduler --kubeconfig="$dir/pki/admin.conf" --bind-address=127.0.0.1 --secure-port=$((base + 3)) \
  >"$dir/scheduler.out" 2>"$dir/scheduler.log" &
scheduler=$!
pids+=($scheduler)
echo "kaname $("$kaname" --version 2>/dev/null | head -1); $(nproc) cores; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
"$kaname" bench scheduler --kubeconfig "$dir/pki/admin.conf" --scheduler-pid "$scheduler" "$@"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
