#!/usr/bin/env bash
# Sandbox benchmark: creating a sandbox with every layer and running one
# command in it, side by side with bubblewrap and unshare running the same
# command, in ONE hyperfine run; then Airlock's phases in-process (create,
# run, destroy, time to the command's first output), cold and with a spare
# prepared ahead (as the engine does).
#
# Usage: benches/sandbox.sh        (as root: cgroups and per-job host ids)
#
# Environment: RUNS [200], WARMUP [10], ITERATIONS [300], OUT
# [target/bench/sandbox], CARGO_TARGET_DIR.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
runs="${RUNS:-200}"
warmup="${WARMUP:-10}"
iterations="${ITERATIONS:-300}"
out="${OUT:-target/bench/sandbox}"
target="${CARGO_TARGET_DIR:-target}"

for tool in hyperfine bwrap unshare; do
    command -v "$tool" >/dev/null || {
        echo "sandbox.sh: $tool not found (apt-get install hyperfine bubblewrap util-linux)" >&2
        exit 1
    }
done
cargo build --release --quiet -p sandbox --example sandbox_run
bin="$target/release/examples/sandbox_run"
mkdir -p "$out"

# The same command everywhere: /bin/true, so the figure is the sandbox.
bwrap_cmd="bwrap --unshare-all --cap-drop ALL --die-with-parent --new-session \
--ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/lib /lib \
--symlink usr/lib64 /lib64 --symlink usr/sbin /sbin --proc /proc --dev /dev \
--tmpfs /tmp --tmpfs /workspace --chdir /workspace /bin/true"
unshare_cmd="unshare --user --map-root-user --pid --net --mount --ipc --uts --fork /bin/true"

hyperfine -N --warmup "$warmup" --runs "$runs" \
    --export-json "$out/hyperfine.json" --export-markdown "$out/hyperfine.md" \
    -n unshare "$unshare_cmd" \
    -n bwrap "$bwrap_cmd" \
    -n "airlock sandbox" "$bin /bin/true" \
    -n "airlock sandbox, no cgroup" "$bin --no-cgroup /bin/true"

# The job's command for the phases: a static binary that writes one byte
# as soon as it runs (benches/first.c), in the sandbox's source (/src).
bin="$(realpath "$bin")"
srcdir="$(mktemp -d)"
trap 'rm -rf "$srcdir"' EXIT
chmod 755 "$srcdir"
cc -O2 -static -o "$srcdir/first" benches/first.c
{
    echo "== cold: everything on the critical path"
    (cd "$srcdir" && AIRLOCK_BENCH_ITERATIONS="$iterations" "$bin" /src/first)
    echo "== warm: a spare prepared ahead, as the engine does"
    (cd "$srcdir" && AIRLOCK_BENCH_WARM=1 AIRLOCK_BENCH_ITERATIONS="$iterations" "$bin" /src/first)
} | tee "$out/phases.txt"
