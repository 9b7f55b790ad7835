#!/usr/bin/env bash
# Builds the release binary and splits its debug info off: what users download is
# target/release/kaname (no DWARF, ~40 MB instead of ~200 MB), and target/release/kaname.debug
# holds the line tables (zlib compressed) for whoever wants file:line in backtraces.
#
# The binary keeps its symbol table, so a panic's backtrace (RUST_BACKTRACE=1) names the
# functions even without the symbols file. With kaname.debug beside the binary (or in a
# `.debug/` directory beside it, or under /usr/lib/debug/ at the binary's path, or as
# /usr/lib/debug/.build-id/xx/yyyy.debug), the standard library's backtrace finds it through
# the binary's .gnu_debuglink (or build ID) and prints file:line as an unsplit build does.
# (zlib, not zstd: std's backtrace reads zlib-compressed debug sections only.)
#
# Needs binutils' objcopy. Cargo's `split-debuginfo = "packed"` does not do this on Linux: a
# split-DWARF binary keeps its line tables (.debug_line stays with the skeleton units), which
# are most of the size.
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/release
bin=$out/kaname
# A previous run left a stripped binary here: removed, cargo links the build's own file again.
rm -f "$bin"
cargo build --release -p kaname "$@"
if ! readelf -S -W "$bin" | grep -q '\.debug_line'; then
    echo "$bin has no line tables to split off" >&2
    exit 1
fi
# Cargo's target/release/kaname is a hard link into deps/: work on copies, then move them in,
# so the build's own file is left as cargo wrote it.
objcopy --only-keep-debug --compress-debug-sections=zlib "$bin" "$out/kaname.debug.tmp"
mv "$out/kaname.debug.tmp" "$out/kaname.debug"
# The link records kaname.debug's CRC, so it is added once the symbols file is final.
(cd "$out" && objcopy --strip-debug --add-gnu-debuglink=kaname.debug kaname kaname.stripped.tmp)
mv "$out/kaname.stripped.tmp" "$bin"
ls -l "$bin" "$out/kaname.debug"
