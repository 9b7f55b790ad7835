#!/usr/bin/env bash
# Issue 4's resource figures, kaname etcd vs Debian's etcd 3.4 side by side on this machine,
# 3 members each, the systems alternating:
#   - RSS of each member after loading 100k and then 1M keys (256-byte values);
#   - restart-to-serving with 1M keys: kill -9 every member, start them again, time until a
#     linearizable read answers;
#   - leader failover: kill -9 the leader while a client writes through the followers, time
#     from the kill to the first acknowledgement of a write issued after it.
# Prints markdown tables for docs/benchmarks.md.
#
# usage: bench/resources.sh [KEYS] [FAILOVER_ROUNDS]    defaults: 1000000 5
#        (bench/resources.sh 100000 3 for a quick run; the 100k RSS row is measured on the way)
# needs: cargo build --release -p kaname; etcd installed (scripts/install-test-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
keys=${1:-1000000}
failover_rounds=${2:-5}
K=target/release/kaname
[ -x "$K" ] || cargo build --release -p kaname >&2
work=$(mktemp -d /tmp/kaname-resources.XXXXXX)
trap 'for d in "$work"/*/; do bench/cluster.sh stop "$d" >/dev/null 2>&1 || true; done; rm -rf "$work"' EXIT
ctl() { ETCDCTL_API=3 etcdctl "$@"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# RSS of each member in MiB, "a / b / c".
rss() {
  local dir=$1 out=""
  for p in "$dir"/pid*; do
    out="$out${out:+ / }$(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$(cat "$p")/status")"
  done
  echo "$out"
}

# Loads keys [from, to) as key-space positions of `kaname bench put --sequential-keys`.
load() {
  local eps=$1 n=$2
  "$K" bench put --endpoints "$eps" --conns 16 --clients 64 --total "$n" --val-size 256 \
    --key-space-size "$n" --sequential-keys >/dev/null
}

leader_of() {
  for ep in ${1//,/ }; do
    if ctl --endpoints "$ep" endpoint status 2>/dev/null | grep -q ", true, false,"; then echo "$ep"; return; fi
  done
}

wait_serving() { # endpoints -> ms until a linearizable get answers
  local start; start=$(now_ms)
  until ctl --endpoints "$1" --command-timeout=1s get probe >/dev/null 2>&1; do sleep 0.02; done
  echo $(($(now_ms) - start))
}

declare -A res
for sys in etcd kaname; do
  dir="$work/$sys" base=$((20000 + RANDOM % 8000))
  eps=$(bench/cluster.sh start "$sys" "$dir" "$base")
  load "$eps" $((keys < 100000 ? keys : 100000))
  sleep 2
  res["$sys|rss100k"]=$(rss "$dir")
  if [ "$keys" -gt 100000 ]; then
    load "$eps" "$keys"
    sleep 2
    res["$sys|rssN"]=$(rss "$dir")
  fi
  res["$sys|db"]=$(du -sh "$dir/m1" | cut -f1)

  # Restart to serving: kill -9 all, start again on the same data dirs.
  for p in "$dir"/pid*; do kill -9 "$(cat "$p")"; done
  sleep 0.5
  start=$(now_ms)
  bench/cluster.sh start "$sys" "$dir" "$base" >/dev/null &
  starter=$!
  until ctl --endpoints "$eps" --command-timeout=1s get probe >/dev/null 2>&1; do sleep 0.02; done
  res["$sys|restart"]=$(($(now_ms) - start))
  wait "$starter" || true
  sleep 1
  res["$sys|rssRestart"]=$(rss "$dir")
  bench/cluster.sh stop "$dir" >/dev/null
  rm -rf "$dir"
  echo "$sys: load, RSS and restart done" >&2
done

# Failover on small fresh clusters, the systems alternating.
for r in $(seq 1 "$failover_rounds"); do
  for sys in etcd kaname; do
    dir="$work/fo-$sys-$r" base=$((20000 + RANDOM % 8000))
    eps=$(bench/cluster.sh start "$sys" "$dir" "$base")
    leader=$(leader_of "$eps")
    followers=$(echo "${eps//,/ }" | tr ' ' '\n' | grep -vx "$leader" | paste -sd,)
    # Find the leader's pid by its client port.
    lport=${leader##*:}
    lpid=""
    for i in 1 2 3; do [ $((base + 10 * i)) -eq "$lport" ] && lpid=$(cat "$dir/pid$i"); done
    # A writer through the followers, one put at a time, each given 500 ms; it logs when each
    # acknowledged put was issued and when it was acknowledged. Only puts issued after the
    # kill count: one in flight before it may still be acknowledged by the old leader.
    (
      while :; do
        issued=$(now_ms)
        if ctl --endpoints "$followers" --command-timeout=500ms put failover v >/dev/null 2>&1; then
          echo "$issued $(now_ms)" >>"$dir/acks"
        fi
      done
    ) &
    writer=$!
    sleep 1
    killed=$(now_ms)
    kill -9 "$lpid"
    while :; do
      first=$(awk -v k="$killed" '$1 >= k {print $2; exit}' "$dir/acks" 2>/dev/null || true)
      [ -n "$first" ] && break
      [ $(($(now_ms) - killed)) -gt 20000 ] && { first=$((killed + 20000)); break; }
      sleep 0.05
    done
    kill "$writer" 2>/dev/null || true
    wait "$writer" 2>/dev/null || true
    res["$sys|failover"]+="$((first - killed)) "
    bench/cluster.sh stop "$dir" >/dev/null
  done
  echo "failover round $r done" >&2
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "| measure (3 members) | etcd 3.4 | kaname |"
echo "| --- | --- | --- |"
echo "| RSS per member after 100k keys (MiB) | ${res[etcd|rss100k]} | ${res[kaname|rss100k]} |"
if [ "$keys" -gt 100000 ]; then
  echo "| RSS per member after $keys keys (MiB) | ${res[etcd|rssN]} | ${res[kaname|rssN]} |"
fi
echo "| data dir of one member after loading | ${res[etcd|db]} | ${res[kaname|db]} |"
echo "| restart to serving, kill -9 all, $keys keys (ms) | ${res[etcd|restart]} | ${res[kaname|restart]} |"
echo "| RSS per member after the restart (MiB) | ${res[etcd|rssRestart]} | ${res[kaname|rssRestart]} |"
echo "| leader failover, kill -9 to first ack, median of $failover_rounds (ms) | $(echo "${res[etcd|failover]}" | median) (${res[etcd|failover]% }) | $(echo "${res[kaname|failover]}" | median) (${res[kaname|failover]% }) |"
