#!/usr/bin/env bash
# Runs the whole test suite: unit tests plus the integration tests that judge
# `kaname etcd` against real etcd 3.4 through etcdctl (crates/kaname/tests).
#
# Narrower runs:
#   cargo test -p kaname --test etcdctl_compat _etcd     # harness self-test, etcd vs etcd
#   cargo test -p kaname --test etcdctl_compat _kaname   # etcd (expected) vs kaname
#   cargo test -p kaname --test durability _etcd         # kill -9 scenarios on etcd
#   cargo test -p kaname --test durability _kaname       # the same on kaname
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
cargo test --workspace --no-fail-fast "$@"
