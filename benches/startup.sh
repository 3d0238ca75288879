#!/usr/bin/env bash
# Startup benchmark: wall time of `airlock run` on a one-job, one-step
# pipeline (`true`), side by side with bubblewrap running the same command,
# with bare unshare, and with a bare /bin/true -- all in ONE hyperfine run,
# so every figure comes from the same machine state.
#
# Usage: benches/startup.sh
#
# Environment:
#   AIRLOCK   airlock binary [default: $CARGO_TARGET_DIR/release/airlock, else
#             target/release/airlock; built with cargo if missing]
#   RUNS      measured runs per command [default: 200]
#   WARMUP    warmup runs per command [default: 10]
#   OUT       results directory [default: target/bench/startup]
#
# Writes OUT/startup.json and OUT/startup.md (hyperfine exports),
# OUT/summary.txt (the table printed at the end) and OUT/machine.txt.
# Run it as root for the privileged mode (what BENCHMARKS.md reports), or as
# an unprivileged user with user namespaces for the rootless mode.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

runs="${RUNS:-200}"
warmup="${WARMUP:-10}"
out="${OUT:-target/bench/startup}"
pipeline="benches/pipelines/true.yml"
airlock="${AIRLOCK:-${CARGO_TARGET_DIR:-target}/release/airlock}"

die() {
    echo "startup.sh: $*" >&2
    exit 1
}

command -v hyperfine >/dev/null ||
    die "hyperfine not found; install it: apt-get install hyperfine (or cargo install hyperfine)"
command -v bwrap >/dev/null ||
    die "bwrap not found; install it: apt-get install bubblewrap"
command -v unshare >/dev/null ||
    die "unshare not found; install it: apt-get install util-linux"
command -v python3 >/dev/null ||
    die "python3 not found (needed for the summary); install it: apt-get install python3"
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer, got '$runs'"
[[ "$warmup" =~ ^[0-9]+$ ]] || die "WARMUP must be a non-negative integer, got '$warmup'"

if [[ ! -x "$airlock" ]]; then
    if [[ -n "${AIRLOCK:-}" ]]; then
        die "AIRLOCK=$AIRLOCK is not an executable file"
    fi
    echo "startup.sh: $airlock missing; building it (cargo build --release -p airlock)" >&2
    cargo build --release -p airlock
    [[ -x "$airlock" ]] || die "cargo build did not produce $airlock"
fi
airlock="$(cd "$(dirname "$airlock")" && pwd)/$(basename "$airlock")"

# A fresh state directory: the SQLite database starts empty, and nothing of
# this benchmark lands in the real one. Removed however the script ends.
home="$(mktemp -d "${TMPDIR:-/tmp}/airlock-bench-home.XXXXXX")"
trap 'rm -rf -- "$home"' EXIT

mkdir -p "$out"

# hyperfine -N splits each command line like a POSIX shell would (without
# running one); quote every argument.
q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

# bwrap gets the same view of the host airlock builds: /usr read-only, the
# top-level merged-usr links (or read-only binds where the host has real
# directories), fresh /proc, minimal /dev, tmpfs /tmp and workspace, a new
# session, every capability dropped, all namespaces unshared; and it runs the
# step the way airlock does, as `/bin/sh -e -c SCRIPT`.
bwrap_cmd=(bwrap --unshare-all --cap-drop ALL --die-with-parent --new-session
    --ro-bind /usr /usr)
for d in bin lib lib64 sbin; do
    if [[ -L "/$d" ]]; then
        bwrap_cmd+=(--symlink "$(readlink "/$d")" "/$d")
    elif [[ -d "/$d" ]]; then
        bwrap_cmd+=(--ro-bind "/$d" "/$d")
    fi
done
bwrap_cmd+=(--proc /proc --dev /dev --tmpfs /tmp --tmpfs /workspace
    --chdir /workspace /bin/sh -e -c true)

unshare_cmd=(unshare --user --map-root-user --pid --net --mount --ipc --uts --fork /bin/true)
airlock_cmd=("$airlock" --home "$home" run "$pipeline")

join() {
    local s="" a
    for a in "$@"; do s+="${s:+ }$(q "$a")"; done
    printf '%s' "$s"
}

# Each command must work before it is timed (a failing one would measure an
# error path).
"${unshare_cmd[@]}" || die "unshare failed: ${unshare_cmd[*]}"
"${bwrap_cmd[@]}" || die "bwrap failed: ${bwrap_cmd[*]}"
if ! "${airlock_cmd[@]}" >/dev/null; then
    die "airlock failed: ${airlock_cmd[*]}"
fi

{
    echo "date:      $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "user:      $(id -un) (uid $(id -u))"
    echo "nproc:     $(nproc)"
    echo "kernel:    $(uname -r)"
    echo "cpu:       $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //')"
    if [[ "$(stat -f -c %T /sys/fs/cgroup 2>/dev/null)" == cgroup2fs ]]; then
        echo "cgroup:    v2 (unified)"
    elif [[ -d /sys/fs/cgroup/unified ]]; then
        echo "cgroup:    v1 hybrid (v1 controllers, cgroup2 at /sys/fs/cgroup/unified)"
    else
        echo "cgroup:    v1 (legacy)"
    fi
    echo "hyperfine: $(hyperfine --version)"
    echo "bwrap:     $(bwrap --version)"
    echo "unshare:   $(unshare --version)"
    echo "airlock:   $("$airlock" --version) ($airlock)"
    echo "checkout:  $(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)${AIRLOCK:+ (the binary came from AIRLOCK and may be of another tree)}"
    echo "runs:      $runs (warmup $warmup), hyperfine -N"
    echo "load:      $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min, before the run)"
} >"$out/machine.txt"
cat "$out/machine.txt"
echo
# Other work on the machine shows up as spread and shifts every figure; the
# ratio is more robust than the absolute numbers, but warn anyway. (The load
# average lags by minutes; sample the CPUs for a second instead.)
source "$root/benches/lib.sh"
busy=$(cpu_busy)
if ((busy > 20)); then
    echo "startup.sh: warning: the CPUs are ${busy}% busy with other work; figures will be noisy" >&2
fi

hyperfine -N --warmup "$warmup" --runs "$runs" \
    --export-json "$out/startup.json" \
    --export-markdown "$out/startup.md" \
    -n "/bin/true" "/bin/true" \
    -n "unshare" "$(join "${unshare_cmd[@]}")" \
    -n "bwrap" "$(join "${bwrap_cmd[@]}")" \
    -n "airlock run" "$(join "${airlock_cmd[@]}")"

echo
python3 - "$out/startup.json" <<'PY' | tee "$out/summary.txt"
import json, math, statistics, sys

doc = json.load(open(sys.argv[1]))
rows = {r["command"]: r for r in doc["results"]}

def pct(xs, p):
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)

ms = lambda s: s * 1000
print(f"{'command':<12} {'median':>8} {'mean':>8} {'σ':>7} {'min':>8} {'max':>8} {'p99':>8}   (ms, {len(next(iter(rows.values()))['times'])} runs)")
for name, r in rows.items():
    t = r["times"]
    print(f"{name:<12} {ms(r['median']):8.2f} {ms(r['mean']):8.2f} {ms(r['stddev'] or 0):7.2f} "
          f"{ms(r['min']):8.2f} {ms(r['max']):8.2f} {ms(pct(t, 99)):8.2f}")

a, b = rows["airlock run"], rows["bwrap"]
ratio = a["median"] / b["median"]
print()
print(f"airlock run / bwrap: {ratio:.2f}x by median, {a['mean'] / b['mean']:.2f}x by mean "
      f"(goal: within 3x) -> {'MET' if ratio <= 3 else 'NOT MET'}")
print(f"airlock run - bwrap: {ms(a['median'] - b['median']):+.2f} ms by median")

# The state database grows by one run per invocation; show whether that
# drifts the time (first vs last quarter of the measured runs).
t = a["times"]
q = max(1, len(t) // 4)
print(f"airlock run, median of the first {q} runs: {ms(statistics.median(t[:q])):.2f} ms, "
      f"of the last {q}: {ms(statistics.median(t[-q:])):.2f} ms")
PY
echo
echo "results: $out/startup.json, $out/startup.md, $out/summary.txt, $out/machine.txt"
