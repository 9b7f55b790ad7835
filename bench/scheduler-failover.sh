#!/usr/bin/env bash
# Scheduler failover, measured: three `kaname scheduler` copies on one API server over a
# single-member `kaname etcd`; N times, kill -9 the copy holding kube-system/kube-scheduler,
# create a pod at once, and time kill → pod bound (polled every ~50 ms through kubectl, so
# add up to that much). The killed copy is restarted before the next round. Prints each round,
# then p50/p99/max beside upstream's worst case for a crash (lease + 2.2 × retry, polling only).
#
# usage: bench/scheduler-failover.sh ROUNDS LEASE RENEW RETRY     e.g. 10 15s 10s 2s  or  10 3s 2s 500ms
# needs: cargo build --release -p kaname; kubectl
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=$1 lease=$2 renew=$3 retry=$4
kaname=${KANAME:-target/release/kaname}
[ -x "$kaname" ] || cargo build --release -p kaname >&2
dir=$(mktemp -d /tmp/kaname-failover.XXXXXX)
base=$((24000 + RANDOM % 4000))
pids=()
cleanup() {
  for p in "${pids[@]}" ${sched[@]+"${sched[@]}"}; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
client=http://127.0.0.1:$base peer=http://127.0.0.1:$((base + 1))
"$kaname" etcd --name m1 --data-dir "$dir/m1" --listen-client-urls "$client" --advertise-client-urls "$client" \
  --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" --initial-cluster "m1=$peer" \
  --log-level warn >"$dir/store.log" 2>&1 &
pids+=($!)
disown $!
"$kaname" apiserver --etcd-servers="$client" --bind-address=127.0.0.1 --secure-port=$((base + 2)) \
  --cert-dir="$dir/pki" >"$dir/apiserver.out" 2>"$dir/apiserver.log" &
pids+=($!)
disown $!
for _ in $(seq 1 150); do
  [ "$(curl -sk "https://127.0.0.1:$((base + 2))/readyz" 2>/dev/null)" = ok ] && [ -f "$dir/pki/admin.conf" ] && break
  sleep 0.2
done
k() { kubectl --kubeconfig "$dir/pki/admin.conf" "$@"; }
for _ in $(seq 1 50); do k get ns default >/dev/null 2>&1 && break; sleep 0.2; done
for n in n1 n2; do
  k create -f - >/dev/null <<JSON
{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "$n"},
 "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"}}}
JSON
done
sched=()
start_copy() {
  "$kaname" scheduler --kubeconfig "$dir/pki/admin.conf" --secure-port=0 --leader-elect-lease-duration="$lease" \
    --leader-elect-renew-deadline="$renew" --leader-elect-retry-period="$retry" >"$dir/sched-$1.log" 2>&1 &
  sched[$1]=$!
  disown "${sched[$1]}"   # no job notice when it is killed
}
identity() { grep -o 'identity=[^ ]*' "$dir/sched-$1.log" 2>/dev/null | head -1 | cut -d= -f2; }
for i in 0 1 2; do start_copy $i; done
holder() { k -n kube-system get lease kube-scheduler -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true; }
secs() { awk -v d="$1" 'BEGIN { if (d ~ /ms$/) { sub(/ms$/, "", d); print d / 1000 } else { sub(/s$/, "", d); print d } }'; }
settle=$(awk -v r="$(secs "$retry")" 'BEGIN { print 3 * r + 1 }')
times=()
for round in $(seq 1 "$rounds"); do
  for _ in $(seq 1 600); do h=$(holder); [ -n "$h" ] && break; sleep 0.1; done
  victim=
  for i in 0 1 2; do [ "$(identity $i)" = "$h" ] && victim=$i; done
  [ -n "$victim" ] || { echo "holder $h is none of the copies" >&2; exit 1; }
  sleep "$settle"   # the standbys have seen the current leader renew
  t0=$(date +%s.%N)
  kill -9 "${sched[$victim]}"
  k run "p$round" --image=registry.k8s.io/pause:3.10 --restart=Never >/dev/null
  until [ -n "$(k get pod "p$round" -o jsonpath='{.spec.nodeName}')" ]; do sleep 0.05; done
  t1=$(date +%s.%N)
  d=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  times+=("$d")
  echo "round $round: killed copy $victim, next pod bound after ${d}s"
  start_copy "$victim"
  for _ in $(seq 1 100); do [ -n "$(identity "$victim")" ] && break; sleep 0.1; done
done
printf '%s\n' "${times[@]}" | sort -n | awk -v lease="$(secs "$lease")" -v retry="$(secs "$retry")" '
  { t[NR] = $1 }
  END {
    p50 = t[int((NR + 1) / 2)]; p99 = t[int(NR * 0.99 + 0.99)]; if (p99 == "") p99 = t[NR]
    printf "rounds %d: p50 %.2fs p99 %.2fs max %.2fs; target <= lease + retry = %.2fs; upstream worst case lease + 2.2 x retry = %.2fs\n", NR, p50, p99, t[NR], lease + retry, lease + 2.2 * retry
  }'
