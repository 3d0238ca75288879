#!/usr/bin/env bash
# Redaction end to end: wall time of `airlock run` on a job that writes
# 1 GiB of build-log text to stdout, with 0, 10 and 60 secrets leased (so
# redacted), measured with hyperfine in interleaved rounds. Goal (the
# secrets issue): at most 5% overhead with secrets against the same job
# without.
#
# Method: each round runs every command once, in an order rotated from
# round to round, so that drift (other work on the machine, the page
# cache, the disk) touches every command alike instead of the last one
# measured. Before each run, untimed: the previous run's 1 GiB log is
# deleted and `sync` waits until the disk has written everything, so no
# run pays for the writeback of another's log.
#
# Usage: benches/output.sh          (as root)
#
# Environment:
#   AIRLOCK   airlock binary [default: $CARGO_TARGET_DIR/release/airlock, else
#             target/release/airlock; built with cargo if missing]
#   RUNS      measured rounds, one run of each command per round [default: 10]
#   WARMUP    warmup rounds, untimed [default: 1]
#   SECRETS   secret counts to compare, space-separated; the first is the
#             baseline [default: "0 10 60"; a job may lease at most 63]
#   OUT       results directory [default: target/bench/output]
#   BEFORE    another airlock binary (say, a build of an earlier commit) to
#             run beside AIRLOCK in the same rounds, each of its commands
#             named "before: N secrets": a before/after comparison that the
#             drift between sessions cannot blur [default: none]
#
# Writes OUT/output.json (every run's time, per command, and the
# statistics), OUT/rounds/*.json (hyperfine's export of each round),
# OUT/summary.txt (the table printed at the end) and OUT/machine.txt.
# The job's output goes where a run's output goes (the terminal display,
# here to /dev/null, and the job's log file); each run's log (1 GiB) is
# removed before the next run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

runs="${RUNS:-10}"
warmup="${WARMUP:-1}"
counts="${SECRETS:-0 10 60}"
out="${OUT:-target/bench/output}"
airlock="${AIRLOCK:-${CARGO_TARGET_DIR:-target}/release/airlock}"
# The job writes the 1 MiB sample this many times.
repeat=1024
bytes=$((repeat * 1024 * 1024))

die() {
    echo "output.sh: $*" >&2
    exit 1
}

command -v hyperfine >/dev/null ||
    die "hyperfine not found; install it: apt-get install hyperfine (or cargo install hyperfine)"
command -v python3 >/dev/null ||
    die "python3 not found (needed for the sample log and the summary); install it: apt-get install python3"
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer, got '$runs'"
[[ "$warmup" =~ ^[0-9]+$ ]] || die "WARMUP must be a non-negative integer, got '$warmup'"
for n in $counts; do
    [[ "$n" =~ ^[0-9]+$ ]] && ((n <= 63)) ||
        die "SECRETS must be numbers from 0 to 63 (the most a job may lease), got '$n'"
done

if [[ ! -x "$airlock" ]]; then
    if [[ -n "${AIRLOCK:-}" ]]; then
        die "AIRLOCK=$AIRLOCK is not an executable file"
    fi
    echo "output.sh: $airlock missing; building it (cargo build --release -p airlock)" >&2
    cargo build --release -p airlock
    [[ -x "$airlock" ]] || die "cargo build did not produce $airlock"
fi
airlock="$(cd "$(dirname "$airlock")" && pwd)/$(basename "$airlock")"
before="${BEFORE:-}"
if [[ -n "$before" ]]; then
    [[ -x "$before" ]] || die "BEFORE=$before is not an executable file"
    before="$(cd "$(dirname "$before")" && pwd)/$(basename "$before")"
fi

# A fresh state directory (database, secret store and its key, run logs):
# nothing of this benchmark lands in the real one. Removed however the
# script ends.
work="$(mktemp -d "${TMPDIR:-/tmp}/airlock-bench-output.XXXXXX")"
trap 'rm -rf -- "$work"' EXIT
home="$work/home"
src="$work/src"
mkdir -p "$home" "$src" "$out"

# 1 MiB of build-log text, the same bytes every time (fixed seed):
# timestamps, compiler invocations and diagnostics, test results, paths,
# hex hashes, progress lines.
python3 - "$src/sample.log" <<'PY'
import random, sys

rng = random.Random(20261127)
size = 1 << 20
crates = ["serde", "tokio", "rustix", "memchr", "aho-corasick", "regex", "clap", "libc",
          "hashbrown", "syn", "quote", "proc-macro2", "thiserror", "anyhow", "tracing"]
dirs = ["src", "src/net", "src/fs", "src/io", "tests", "crates/core/src", "lib", "vendor/zlib"]
words = ["buffer", "config", "handler", "parser", "request", "session", "worker", "cache",
         "index", "stream", "token", "queue", "state", "reader", "writer", "client"]
levels = ["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"]

def ident():
    return "_".join(rng.choice(words) for _ in range(rng.randint(1, 3)))

def path():
    return f"{rng.choice(dirs)}/{ident()}.{rng.choice(['rs', 'c', 'h', 'py', 'go'])}"

def hexs(n):
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))

def line(t):
    stamp = f"2026-11-27T{t // 3600 % 24:02d}:{t // 60 % 60:02d}:{t % 60:02d}.{rng.randint(0, 999):03d}Z"
    kind = rng.randint(0, 9)
    if kind == 0:
        v = f"{rng.randint(0, 2)}.{rng.randint(0, 40)}.{rng.randint(0, 20)}"
        return f"{stamp}    Compiling {rng.choice(crates)} v{v}"
    if kind == 1:
        return (f"{stamp} cc -O2 -g -Wall -fPIC -I include -I {rng.choice(dirs)} "
                f"-c {path()} -o target/obj/{hexs(8)}.o")
    if kind == 2:
        return (f"{stamp} warning: unused variable `{ident()}` --> {path()}:"
                f"{rng.randint(1, 2000)}:{rng.randint(1, 80)}")
    if kind == 3:
        ok = rng.random() < 0.97
        return (f"{stamp} test {ident()}::{ident()} ... {'ok' if ok else 'FAILED'} "
                f"({rng.randint(0, 900)}ms)")
    if kind == 4:
        return f"{stamp} fetch {rng.choice(crates)} sha256:{hexs(64)}"
    if kind == 5:
        return f"{stamp} [{rng.randint(1, 400):>3}/400] building {path()}"
    if kind == 6:
        return (f"{stamp} {rng.choice(levels):<5} {ident()}: processed {rng.randint(1, 99999)} "
                f"items in {rng.random() * 9:.3f}s (cache hit {rng.randint(0, 100)}%)")
    if kind == 7:
        return f"{stamp} commit {hexs(40)} tree {hexs(40)}"
    if kind == 8:
        return f"{stamp}   at {ident()} ({path()}:{rng.randint(1, 900)})"
    return f"{stamp} Finished `release` profile [optimized] target(s) in {rng.random() * 90:.2f}s"

out, t = bytearray(), 3600 * 7
while len(out) < size:
    out += (line(t) + "\n").encode()
    t += rng.randint(0, 2)
# Exactly 1 MiB, ending in a line break.
del out[size - 1:]
out += b"\n"
open(sys.argv[1], "wb").write(out)
PY
[[ "$(stat -c %s "$src/sample.log")" == $((1024 * 1024)) ]] || die "the sample log is not 1 MiB"

# Random secrets, 24-40 random bytes each, base64 (what a token looks like),
# all scoped to this pipeline.
max=0
for n in $counts; do ((n > max)) && max=$n; done
names=()
for ((i = 1; i <= max; i++)); do
    name="$(printf 'BENCH_SECRET_%02d' "$i")"
    head -c "$((24 + RANDOM % 17))" /dev/urandom | base64 -w0 |
        "$airlock" --home "$home" secrets set "$name" --scope 'out/*' >/dev/null ||
        die "cannot store the secret $name"
    names+=("$name")
done

# One pipeline per secret count, the same job otherwise.
for n in $counts; do
    list="$(
        IFS=,
        echo "${names[*]:0:n}"
    )"
    cat >"$work/out-$n.yml" <<YML
# benches/output.sh: 1 GiB of build log to stdout, $n secrets leased.
version: 1
name: out
jobs:
  big:
    source: $src
    secrets: [$list]
    steps:
      - run: i=0; while [ \$i -lt $repeat ]; do cat /src/sample.log; i=\$((i+1)); done
YML
done

# Each job must work before it is timed (a failing one would measure an
# error path), and must really write 1 GiB.
for n in $counts; do
    "$airlock" --home "$home" run "$work/out-$n.yml" >/dev/null ||
        die "airlock failed on $work/out-$n.yml"
done
logged="$(find "$home/runs" -name big.log -printf '%s\n' | sort -n | head -1)"
((logged >= bytes)) || die "the job's log holds $logged bytes, expected at least $bytes"
rm -rf -- "$home/runs"

{
    echo "date:      $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "user:      $(id -un) (uid $(id -u))"
    echo "nproc:     $(nproc)"
    echo "kernel:    $(uname -r)"
    echo "cpu:       $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //')"
    echo "home fs:   $(stat -f -c %T "$home")"
    echo "hyperfine: $(hyperfine --version)"
    echo "airlock:   $("$airlock" --version) ($airlock)"
    [[ -z "$before" ]] || echo "before:    $("$before" --version) ($before)"
    echo "checkout:  $(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)${AIRLOCK:+ (the binary came from AIRLOCK and may be of another tree)}"
    echo "job:       $bytes bytes to stdout ($repeat x a 1 MiB sample); secrets: $counts"
    echo "runs:      $runs interleaved rounds (warmup $warmup), output to /dev/null"
    echo "load:      $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min, before the run)"
} >"$out/machine.txt"
cat "$out/machine.txt"
echo
# Other work on the machine (the job needs both cores: the job's `cat` and
# the runner) shifts every figure; sample the CPUs for a second and warn.
source "$root/benches/lib.sh"
busy=$(cpu_busy)
if ((busy > 20)); then
    echo "output.sh: warning: the CPUs are ${busy}% busy with other work; figures will be noisy" >&2
fi

# Warmup rounds (besides the check above), untimed.
for ((w = 0; w < warmup; w++)); do
    for n in $counts; do
        for bin in "$airlock" $before; do
            rm -rf -- "$home/runs"
            "$bin" --home "$home" run "$work/out-$n.yml" >/dev/null
        done
    done
done

# The measured rounds: hyperfine runs each command once, in an order
# rotated by one every round. --prepare (untimed): delete the previous
# run's log and wait for the disk.
# Each command as "NAME|BINARY|COUNT".
order=()
for n in $counts; do
    order+=("$n secrets|$airlock|$n")
    [[ -z "$before" ]] || order+=("before: $n secrets|$before|$n")
done
rm -rf -- "$out/rounds"
mkdir -p "$out/rounds"
: >"$out/load.txt"
for ((r = 0; r < runs; r++)); do
    busy=$(cpu_busy)
    commands=()
    k=${#order[@]}
    for ((i = 0; i < k; i++)); do
        IFS='|' read -r name bin n <<<"${order[$(((i + r) % k))]}"
        commands+=(-n "$name" "$bin --home $home run $work/out-$n.yml")
    done
    echo "round $((r + 1))/$runs (CPUs ${busy}% busy with other work before it)"
    echo "$((r + 1)) $busy $(cut -d' ' -f1 /proc/loadavg)" >>"$out/load.txt"
    hyperfine -N --runs 1 --output=null --style basic \
        --prepare "sh -c 'rm -rf -- $home/runs && sync'" \
        --export-json "$out/rounds/$r.json" \
        "${commands[@]}" | grep -E '^(Benchmark|  Time)'
done

echo
BENCHES="$root/benches" python3 - "$out" "$bytes" "$counts" "${before:+before}" <<'PY' | tee "$out/summary.txt"
import glob, json, os, statistics, sys

sys.path.insert(0, os.environ["BENCHES"])
import stats as bench_stats

out, size, counts = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
# The binaries compared: this one, and the one given as BEFORE.
groups = [""] + (["before: "] if sys.argv[4] else [])
names = [f"{g}{n} secrets" for g in groups for n in counts]
runs = {name: [] for name in names}
for path in sorted(glob.glob(os.path.join(out, "rounds", "*.json"))):
    for r in json.load(open(path))["results"]:
        runs[r["command"]].append(
            {"time": r["times"][0], "user": r["user"], "system": r["system"]})
loads = [line.split() for line in open(os.path.join(out, "load.txt"))]
busy = [int(l[1]) for l in loads]

def stats(name):
    t = [x["time"] for x in runs[name]]
    return {"command": name, "times": t, "mean": statistics.mean(t),
            "stddev": statistics.stdev(t) if len(t) > 1 else 0.0,
            "median": statistics.median(t), "min": min(t), "max": max(t),
            "user": statistics.mean(x["user"] for x in runs[name]),
            "system": statistics.mean(x["system"] for x in runs[name])}

rows = [stats(n) for n in names]
json.dump({"method": "interleaved rounds, rotated order, rm + sync before each run",
           "cpu_busy_before_rounds_percent": busy, "results": rows},
          open(os.path.join(out, "output.json"), "w"), indent=2)
by_name = {r["command"]: r for r in rows}
base = rows[0]
print(f"{'command':<20} {'mean s':>8} {'σ':>6} {'median':>8} {'min':>8} {'max':>8} {'MB/s':>7} "
      f"{'overhead':>9} {'user':>6} {'sys':>6}   ({len(base['times'])} rounds)")
def baseline(name):
    """The same binary's run with the first count of secrets."""
    group = name[: len(name) - len(name.split(": ")[-1])]
    return by_name[f"{group}{counts[0]} secrets"]

for r in rows:
    over = (r["mean"] / baseline(r["command"])["mean"] - 1) * 100
    print(f"{r['command']:<20} {r['mean']:8.3f} {r['stddev']:6.3f} {r['median']:8.3f} "
          f"{r['min']:8.3f} {r['max']:8.3f} {size / r['mean'] / 1e6:7.1f} {over:+8.1f}% "
          f"{r['user']:6.2f} {r['system']:6.2f}")
print()
print(f"CPUs busy with other work before the rounds: {min(busy)}-{max(busy)}% "
      f"(median {statistics.median(busy)}%)")
def compare(r, base, goal):
    """Prints `r` against `base`: overheads, interval, and the goal."""
    mean = (r["mean"] / base["mean"] - 1) * 100
    med = (r["median"] / base["median"] - 1) * 100
    # Paired: each round's run against the baseline's run of the same
    # round, which saw the same machine; less sensitive to drift.
    paired = statistics.median(t / b - 1 for t, b in zip(r["times"], base["times"])) * 100
    verdict = f" (goal: at most +5%) -> {'MET' if max(mean, med) <= 5 else 'NOT MET'}" if goal else ""
    print(f"{r['command']} vs {base['command']}: {mean:+.1f}% by mean, {med:+.1f}% by median, "
          f"{paired:+.1f}% by the median of the rounds' ratios{verdict}")
    ci = bench_stats.overhead_interval(r["times"], base["times"])
    if ci:
        print(f"  95% interval of the change by mean (bootstrap over rounds): "
              f"{ci[0]:+.1f}% to {ci[1]:+.1f}%" + (f"; {bench_stats.against(ci, 5)}" if goal else ""))

# Secrets against none, for each binary (the goal); then each count of
# this binary against the same count of BEFORE's.
for r in rows:
    if r is not baseline(r["command"]):
        compare(r, baseline(r["command"]), goal=True)
for n in counts:
    if len(groups) > 1:
        compare(by_name[f"{n} secrets"], by_name[f"before: {n} secrets"], goal=False)
PY
echo
echo "results: $out/output.json, $out/rounds/, $out/summary.txt, $out/machine.txt"
