#!/usr/bin/env bash
# Benchmarks `kaname apiserver` on a fresh single-member store of kaname etcd or real etcd:
# starts the store and the API server on loopback, runs `kaname bench apiserver` against it
# (extra arguments go to it), reports, and stops both by PID.
# usage: bench/apiserver.sh kaname|etcd [kaname bench apiserver flags...]
# Needs: a release build (cargo build --release -p kaname), etcd for the etcd flavour.
set -euo pipefail
flavor=${1:?usage: bench/apiserver.sh kaname|etcd [flags]}; shift
kaname=${KANAME:-$(dirname "$0")/../target/release/kaname}
base=${BASEPORT:-23400}
dir=$(mktemp -d /tmp/kaname-bench-apiserver.XXXXXX)
# 1,000 watchers are 1,000 TLS connections on each side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
client=http://127.0.0.1:$base peer=http://127.0.0.1:$((base + 1))
args=(--name m1 --data-dir "$dir/m1" --listen-client-urls "$client" --advertise-client-urls "$client"
      --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" --initial-cluster "m1=$peer"
      --initial-cluster-state new)
if [ "$flavor" = etcd ]; then
  etcd "${args[@]}" --logger zap --log-level error >"$dir/store.log" 2>&1 &
else
  "$kaname" etcd "${args[@]}" --log-level warn >"$dir/store.log" 2>&1 &
fi
pids+=($!)
for _ in $(seq 1 100); do
  ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$base" endpoint health >/dev/null 2>&1 && break
  sleep 0.2
done
"$kaname" apiserver --etcd-servers="$client" --bind-address=127.0.0.1 --secure-port=$((base + 2)) \
  --cert-dir="$dir/pki" >"$dir/apiserver.out" 2>"$dir/apiserver.log" &
apiserver=$!
pids+=($apiserver)
for _ in $(seq 1 100); do
  [ "$(curl -sk "https://127.0.0.1:$((base + 2))/readyz" 2>/dev/null)" = ok ] && [ -f "$dir/pki/admin.conf" ] && break
  sleep 0.2
done
echo "store: $flavor ($("$([ "$flavor" = etcd ] && echo etcd || echo "$kaname")" --version 2>/dev/null | head -1)); $(nproc) cores; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
"$kaname" bench apiserver --kubeconfig "$dir/pki/admin.conf" --apiserver-pid "$apiserver" "$@"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
