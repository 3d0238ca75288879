#!/usr/bin/env bash
# Audit log benchmark: durable append throughput with group commit
# (8 threads, ~300-byte events, fdatasync on), the engine's shape (one
# producer, one writer thread appending what is queued), verification
# speed over 1M entries (5 runs, median), and proof sizes. Each part also
# prints CPU time per event, steadier than rates on a shared machine.
# Goals: >= 100k events/s appended, >= 1M entries/s verified.
#
# Usage: benches/audit.sh [audit_bench flags...]
#        e.g. --parts verify (append1,append,pipeline,verify,proof)
# Environment: DIR (where the logs go; must be a real disk, not tmpfs)
#              [default: target/bench/audit], OUT [target/bench/audit].
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${OUT:-target/bench/audit}"
dir="${DIR:-$out}"
mkdir -p "$out" "$dir"
fs="$(df -T "$dir" | awk 'NR==2 {print $2}')"
if [ "$fs" = tmpfs ]; then
    echo "warning: $dir is on tmpfs; fsync costs nothing there" >&2
fi
{
    echo "date: $(date -u +%FT%TZ)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs) x $(nproc)"
    echo "fs: $fs ($(df "$dir" | awk 'NR==2 {print $1}'))"
    echo "kernel: $(uname -r)"
} > "$out/machine.txt"
cargo run --release --quiet -p audit --example audit_bench -- --dir "$dir" "$@" | tee "$out/summary.txt"
