#!/usr/bin/env bash
# Monitoring benchmark (issue #7, acceptance point 4): what watching a job's
# execs costs an exec-heavy job, and how long from an exec to its alert.
# Goals: at most 5% overhead, exec-to-alert p50 at most 50 ms.
#
# 1. Overhead. One job whose step runs EXECS short processes
#    (`i=0; while [ $i -lt EXECS ]; do /bin/true; i=$((i+1)); done`), under
#    `airlock run` with monitoring on (the default: the exec watch, the
#    shipped rules, samples) and with `--no-monitor`; side by side, in the
#    same rounds, the same loop as a bare `sh -e -c` (no runner), under
#    `strace -f -e trace=execve` (what a ptrace-based exec monitor costs
#    the same loop) and under `bwrap --unshare-all --ro-bind / /` (a
#    sandbox without monitoring). Interleaved rounds, as in output.sh:
#    each round is one hyperfine call (`-N --runs 1`) that runs every
#    command once, in an order rotated by one from round to round, so that
#    drift (other work, the page cache) touches every command alike.
#    hyperfine rather than our own clock: it gives each run's user and
#    system CPU (of the whole process tree: the sandbox's processes are
#    waited for by its init, the init by airlock), and its `-N` adds no
#    shell. After each round the monitored run's record says how many
#    execs the watch reported (`runs show latest --json`: `execs`).
# 2. Exec-to-alert latency. An operator rule directory (`--rules`) with one
#    rule per ten samples (a rule raises at most 10 alerts per job, see
#    MAX_ALERTS_PER_RULE in crates/engine/src/watch.rs), each matching
#    `argv` containing `airlock-bench-marker-K-`. The job (bash) takes the
#    time ($EPOCHREALTIME, microseconds, no exec) and then forks and execs
#    `sleep HOLD` with argv[0] `airlock-bench-marker-K-N` (`exec -a`), then
#    prints `T N TIME` and pauses GAP seconds. Two times of each alert:
#      - terminal: airlock's stdout goes through a pipe to a reader that
#        stamps each chunk as it arrives (nanosecond clock); the terminal
#        writes an alert line as the alert event reaches it, right after
#        the run record has stored it;
#      - record: the alert's `at` in `runs show RUN --json`, stamped when
#        the run record receives the event, truncated to the millisecond.
#    Latency = alert time - T. T is taken before the fork, so the figures
#    include the job's own fork and exec. Two scenarios: an idle job, and
#    a busy one (a background loop of /bin/true in the same job).
#
# Usage: benches/monitor.sh          (as root: the exec watch needs the
#                                     kernel's process events connector)
#
# Environment:
#   AIRLOCK   airlock binary [default: $CARGO_TARGET_DIR/release/airlock, else
#             target/release/airlock; built with cargo if missing]
#   RUNS      measured overhead rounds, one run of each command per round
#             [default: 10]
#   WARMUP    warmup rounds, untimed [default: 1]
#   EXECS     processes the overhead job runs [default: 10000]
#   SAMPLES   latency samples per scenario [default: 100]
#   HOLD      seconds each marker process lives [default: 0.1]
#   GAP       seconds between latency samples [default: 0.1]
#   PARTS     what to measure: "overhead", "latency" or both [default: both]
#   OUT       results directory [default: target/bench/monitor]
#
# Writes OUT/monitor.json (every run's time and CPU, the CPUs' busy share
# before each round, the execs seen, every latency sample, the statistics),
# OUT/rounds/*.json (hyperfine's export of each round), OUT/latency-*.txt
# (airlock's stamped stdout and the job's log, per scenario),
# OUT/summary.txt (the tables printed at the end) and OUT/machine.txt.
# Every airlock invocation uses a fresh temporary --home, removed at exit.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

runs="${RUNS:-10}"
warmup="${WARMUP:-1}"
execs="${EXECS:-10000}"
samples="${SAMPLES:-100}"
hold="${HOLD:-0.1}"
gap="${GAP:-0.1}"
parts="${PARTS:-overhead latency}"
out="${OUT:-target/bench/monitor}"
airlock="${AIRLOCK:-${CARGO_TARGET_DIR:-target}/release/airlock}"

die() {
    echo "monitor.sh: $*" >&2
    exit 1
}

command -v hyperfine >/dev/null ||
    die "hyperfine not found; install it: apt-get install hyperfine (or cargo install hyperfine)"
command -v strace >/dev/null || die "strace not found; install it: apt-get install strace"
command -v bwrap >/dev/null || die "bwrap not found; install it: apt-get install bubblewrap"
command -v bash >/dev/null || die "bash not found (the latency job runs in it)"
command -v python3 >/dev/null ||
    die "python3 not found (needed for the stamps and the summary); install it: apt-get install python3"
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer, got '$runs'"
[[ "$warmup" =~ ^[0-9]+$ ]] || die "WARMUP must be a non-negative integer, got '$warmup'"
[[ "$execs" =~ ^[1-9][0-9]*$ ]] || die "EXECS must be a positive integer, got '$execs'"
[[ "$samples" =~ ^[1-9][0-9]*$ ]] || die "SAMPLES must be a positive integer, got '$samples'"
[[ "$hold" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "HOLD must be a number of seconds, got '$hold'"
[[ "$gap" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "GAP must be a number of seconds, got '$gap'"
do_overhead=false
do_latency=false
for p in $parts; do
    case "$p" in
        overhead) do_overhead=true ;;
        latency) do_latency=true ;;
        *) die "PARTS takes overhead and/or latency, got '$p'" ;;
    esac
done
(($(id -u) == 0)) ||
    echo "monitor.sh: warning: not root; the exec watch falls back to polling /proc (ExecSource::Polling)" >&2

if [[ ! -x "$airlock" ]]; then
    if [[ -n "${AIRLOCK:-}" ]]; then
        die "AIRLOCK=$AIRLOCK is not an executable file"
    fi
    echo "monitor.sh: $airlock missing; building it (cargo build --release -p airlock --locked)" >&2
    cargo build --release -p airlock --locked
    [[ -x "$airlock" ]] || die "cargo build did not produce $airlock"
fi
airlock="$(cd "$(dirname "$airlock")" && pwd)/$(basename "$airlock")"

# shellcheck source=benches/lib.sh
source "$root/benches/lib.sh"

# Fresh state directories (one for monitored runs, one for --no-monitor
# runs, so `runs show latest` in the first is always the last monitored
# run; one for the latency runs), the pipelines, the latency job's script
# and rules. Removed however the script ends.
work="$(mktemp -d "${TMPDIR:-/tmp}/airlock-bench-monitor.XXXXXX")"
trap 'rm -rf -- "$work"' EXIT
mkdir -p "$work/home-on" "$work/home-off" "$work/home-lat" "$work/src" "$work/rules" "$out"

loop="i=0; while [ \$i -lt $execs ]; do /bin/true; i=\$((i+1)); done"
cat >"$work/loop.yml" <<YML
# benches/monitor.sh: $execs short processes, one after the other.
version: 1
name: bench-monitor
jobs:
  execs:
    steps:
      - run: $loop
YML

# hyperfine -N splits each command line like a POSIX shell would (without
# running one); quote every argument.
q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
join() {
    local s="" a
    for a in "$@"; do s+="${s:+ }$(q "$a")"; done
    printf '%s' "$s"
}
names=("bare sh" "strace" "bwrap" "airlock --no-monitor" "airlock")
cmds=(
    "$(join sh -e -c "$loop")"
    "$(join strace -f -qq -e trace=execve -o /dev/null sh -e -c "$loop")"
    "$(join bwrap --unshare-all --ro-bind / / sh -e -c "$loop")"
    "$(join "$airlock" --home "$work/home-off" run --no-monitor "$work/loop.yml")"
    "$(join "$airlock" --home "$work/home-on" run "$work/loop.yml")"
)

# The execs the last monitored run's watch reported, and how many of the
# processes recorded one by one (at most 1,000) had their path read (not
# just a command name or `?`: the program was gone before the watch read
# it): "EXECS RESOLVED RECORDED".
execs_seen() {
    "$airlock" --home "$work/home-on" runs show latest --json | python3 -c '
import json, sys
job = json.load(sys.stdin)["jobs"][0]
procs = job["processes"]
print(job["execs"], sum(p["path"].startswith("/") for p in procs), len(procs))'
}

{
    echo "date:      $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "user:      $(id -un) (uid $(id -u))"
    echo "nproc:     $(nproc)"
    echo "kernel:    $(uname -r)"
    echo "cpu:       $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //')"
    echo "hyperfine: $(hyperfine --version)"
    echo "strace:    $(strace -V | head -1)"
    echo "bwrap:     $(bwrap --version)"
    echo "bash:      $(bash --version | head -1)"
    echo "airlock:   $("$airlock" --version) ($airlock)"
    echo "checkout:  $(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)${AIRLOCK:+ (the binary came from AIRLOCK and may be of another tree)}"
    echo "overhead:  $execs execs per run; $runs interleaved rounds (warmup $warmup), hyperfine -N --runs 1, output to /dev/null"
    echo "latency:   $samples samples per scenario (idle, busy), marker lives ${hold}s, ${gap}s between samples"
    echo "load:      $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min, before the run)"
    echo "busy:      $(cpu_busy)% of the CPUs with other work, just before measuring"
} >"$out/machine.txt"
cat "$out/machine.txt"
echo

: >"$out/load.txt"
: >"$out/execs.txt"
rm -rf -- "$out/rounds"
mkdir -p "$out/rounds"

if $do_overhead; then
    # Each command must work before it is timed (a failing one would
    # measure an error path), and the watch must see the loop.
    sh -e -c "$loop" || die "the loop fails as a bare sh"
    "$airlock" --home "$work/home-on" run "$work/loop.yml" >/dev/null ||
        die "airlock failed on $work/loop.yml"
    read -r seen _ <<<"$(execs_seen)"
    ((seen >= execs)) ||
        echo "monitor.sh: warning: the watch reported $seen execs of at least $execs" >&2
    "$airlock" --home "$work/home-off" run --no-monitor "$work/loop.yml" >/dev/null 2>&1 ||
        die "airlock --no-monitor failed on $work/loop.yml"

    busy=$(cpu_busy)
    if ((busy > 20)); then
        echo "monitor.sh: warning: the CPUs are ${busy}% busy with other work; figures will be noisy" >&2
    fi

    for ((w = 0; w < warmup; w++)); do
        echo "warmup round $((w + 1))/$warmup"
        hyperfine -N --runs 1 --output=null --style none \
            -n "${names[0]}" "${cmds[0]}" -n "${names[1]}" "${cmds[1]}" \
            -n "${names[2]}" "${cmds[2]}" -n "${names[3]}" "${cmds[3]}" \
            -n "${names[4]}" "${cmds[4]}" >/dev/null
    done

    k=${#names[@]}
    for ((r = 0; r < runs; r++)); do
        busy=$(cpu_busy)
        args=()
        for ((i = 0; i < k; i++)); do
            j=$(((i + r) % k))
            args+=(-n "${names[$j]}" "${cmds[$j]}")
        done
        echo "round $((r + 1))/$runs (CPUs ${busy}% busy with other work before it)"
        echo "$((r + 1)) $busy $(cut -d' ' -f1 /proc/loadavg)" >>"$out/load.txt"
        hyperfine -N --runs 1 --output=null --style basic \
            --export-json "$out/rounds/$r.json" "${args[@]}" | grep -E '^(Benchmark|  Time)'
        echo "$((r + 1)) $(execs_seen)" >>"$out/execs.txt"
    done
fi

if $do_latency; then
    # One rule per ten samples: a rule raises at most 10 alerts per job.
    rules=$(((samples + 9) / 10))
    for ((k = 0; k < rules; k++)); do
        cat <<YAML
- id: bench-marker-$k
  severity: info
  description: benches/monitor.sh exec-to-alert latency marker $k
  on: exec
  when:
    argv: { contains: "airlock-bench-marker-$k-" }
YAML
    done >"$work/rules/bench.yaml"

    # The job. The marker is built at run time, so no argv of the job but
    # the marker processes' holds it. `exec -a` in a subshell: one fork,
    # one exec (of sleep, argv[0] the marker), nothing that could exec
    # again before the watch reads the command line.
    cat >"$work/src/latency.sh" <<'SH'
# benches/monitor.sh: exec-to-alert latency samples.
samples=$1 hold=$2 gap=$3 mode=$4
if [ "$mode" = busy ]; then
    (while :; do /bin/true; done) &
    load=$!
fi
# Settle: the reader of airlock's stdout and the background loop start.
sleep 0.5
for ((n = 0; n < samples; n++)); do
    t=$EPOCHREALTIME
    (exec -a "airlock-bench-marker-$((n / 10))-$n" sleep "$hold")
    echo "T $n $t"
    sleep "$gap"
done
if [ -n "${load:-}" ]; then
    kill "$load"
fi
SH
    for mode in idle busy; do
        cat >"$work/latency-$mode.yml" <<YML
# benches/monitor.sh: exec-to-alert latency, $mode job.
version: 1
name: bench-latency-$mode
jobs:
  latency:
    source: $work/src
    steps:
      - run: bash /src/latency.sh $samples $hold $gap $mode
YML
    done

    # Stamps each chunk of airlock's stdout as it arrives (CLOCK_REALTIME,
    # the clock of the job's $EPOCHREALTIME): "NANOSECONDS LINE".
    cat >"$work/stamp.py" <<'PY'
import os, sys, time
out, rest = sys.stdout.buffer, b""
while True:
    chunk = os.read(0, 1 << 16)
    now = time.time_ns()
    if not chunk:
        break
    *lines, rest = (rest + chunk).split(b"\n")
    for line in lines:
        out.write(b"%d %s\n" % (now, line))
if rest:
    out.write(b"%d %s\n" % (time.time_ns(), rest))
PY

    for mode in idle busy; do
        busy=$(cpu_busy)
        echo "latency, $mode job: $samples samples (CPUs ${busy}% busy with other work before it)"
        echo "latency-$mode $busy $(cut -d' ' -f1 /proc/loadavg)" >>"$out/load.txt"
        "$airlock" --home "$work/home-lat" run --rules "$work/rules" "$work/latency-$mode.yml" |
            python3 "$work/stamp.py" >"$out/latency-$mode-stdout.txt" ||
            die "airlock failed on $work/latency-$mode.yml"
        "$airlock" --home "$work/home-lat" runs show latest --json >"$out/latency-$mode-run.json"
        "$airlock" --home "$work/home-lat" logs latest/latency >"$out/latency-$mode-log.txt"
    done
fi

echo
BENCHES="$root/benches" python3 - "$out" "$runs" "$execs" "$samples" "$do_overhead" "$do_latency" "${names[@]}" <<'PY' |
import datetime, glob, json, math, os, re, statistics, sys

sys.path.insert(0, os.environ["BENCHES"])
import stats as bench_stats

out, nrounds, execs, samples = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
do_overhead, do_latency = sys.argv[5] == "true", sys.argv[6] == "true"
names = sys.argv[7:]
doc = {"method": "benches/monitor.sh: interleaved rounds (hyperfine -N --runs 1, order rotated); "
                 "latency = alert time - time taken in the job before the marker's fork"}
loads = {l.split()[0]: int(l.split()[1]) for l in open(os.path.join(out, "load.txt"))}

def pct(xs, p):
    """Nearest-rank percentile."""
    xs = sorted(xs)
    return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)]

if do_overhead:
    runs = {n: [] for n in names}
    for path in sorted(glob.glob(os.path.join(out, "rounds", "*.json")),
                       key=lambda p: int(os.path.basename(p).split(".")[0])):
        for r in json.load(open(path))["results"]:
            runs[r["command"]].append(
                {"time": r["times"][0], "user": r["user"], "system": r["system"]})
    seen = [l.split() for l in open(os.path.join(out, "execs.txt"))]
    seen = [{"round": int(s[0]), "execs": int(s[1]), "resolved": int(s[2]), "recorded": int(s[3])}
            for s in seen]
    busy = [v for k, v in loads.items() if not k.startswith("latency")]

    def stats(name):
        t = [x["time"] for x in runs[name]]
        return {"command": name, "times": t, "user_each": [x["user"] for x in runs[name]],
                "system_each": [x["system"] for x in runs[name]],
                "mean": statistics.mean(t), "stddev": statistics.stdev(t) if len(t) > 1 else 0.0,
                "median": statistics.median(t), "min": min(t), "max": max(t),
                "user": statistics.mean(x["user"] for x in runs[name]),
                "system": statistics.mean(x["system"] for x in runs[name])}

    rows = {n: stats(n) for n in names}

    def over(a, b):
        ra, rb = rows[a], rows[b]
        paired = statistics.median(x / y - 1 for x, y in zip(ra["times"], rb["times"])) * 100
        return {"subject": a, "baseline": b,
                "mean_pct": (ra["mean"] / rb["mean"] - 1) * 100,
                "median_pct": (ra["median"] / rb["median"] - 1) * 100,
                "paired_median_pct": paired,
                "cpu_pct": ((ra["user"] + ra["system"]) / (rb["user"] + rb["system"]) - 1) * 100
                if rb["user"] + rb["system"] > 0 else None}

    pairs = [over("airlock", "airlock --no-monitor"), over("strace", "bare sh"),
             over("bwrap", "bare sh"), over("airlock --no-monitor", "bare sh")]
    doc["overhead"] = {"execs_per_run": execs, "cpu_busy_before_rounds_percent": busy,
                       "results": list(rows.values()), "execs_seen": seen, "overheads": pairs}

    print(f"Overhead: {execs} short processes per run, {nrounds} interleaved rounds; "
          f"CPUs busy with other work before the rounds: {min(busy)}-{max(busy)}% "
          f"(median {statistics.median(busy)}%)")
    print()
    print(f"{'command':<22} {'mean s':>7} {'σ':>6} {'median':>7} {'min':>7} {'max':>7} "
          f"{'user s':>7} {'sys s':>6} {'µs/exec':>8}")
    for r in rows.values():
        cpu = f"{r['user']:7.2f} {r['system']:6.2f}"
        if r["command"] == "bwrap":
            cpu = f"{'n/a':>7} {'n/a':>6}"  # bwrap's init is not waited for: no rusage
        print(f"{r['command']:<22} {r['mean']:7.3f} {r['stddev']:6.3f} {r['median']:7.3f} "
              f"{r['min']:7.3f} {r['max']:7.3f} {cpu} {r['median'] / execs * 1e6:8.1f}")
    print()
    print(f"{'subject vs baseline':<42} {'mean':>7} {'median':>7} {'paired':>7} {'CPU':>7}")
    for p in pairs:
        cpu = f"{p['cpu_pct']:+6.1f}%" if p["cpu_pct"] is not None and p["subject"] != "bwrap" else f"{'n/a':>7}"
        print(f"{p['subject'] + ' vs ' + p['baseline']:<42} {p['mean_pct']:+6.1f}% "
              f"{p['median_pct']:+6.1f}% {p['paired_median_pct']:+6.1f}% {cpu}")
    print("(paired: the median of the rounds' own ratios; CPU: user + system, mean)")
    print()
    e = [s["execs"] for s in seen]
    res = [s["resolved"] / s["recorded"] * 100 for s in seen if s["recorded"]]
    print(f"execs the watch reported per monitored run: min {min(e)}, median {statistics.median(e)}, "
          f"max {max(e)} (the loop runs {execs}, plus the step's sh: {execs + 1}); "
          f"{'kept up' if min(e) >= execs else 'MISSED SOME'}")
    if res:
        print(f"recorded processes with their path read (of the first {seen[0]['recorded']} per run): "
              f"{min(res):.1f}-{max(res):.1f}%")
    a = pairs[0]
    verdict = "MET" if max(a["mean_pct"], a["median_pct"]) <= 5 else "NOT MET"
    print(f"monitoring overhead: {a['mean_pct']:+.1f}% by mean, {a['median_pct']:+.1f}% by median, "
          f"{a['paired_median_pct']:+.1f}% paired (goal: at most +5%) -> {verdict}")
    ci = bench_stats.overhead_interval(rows["airlock"]["times"], rows["airlock --no-monitor"]["times"])
    if ci:
        a["mean_pct_interval_95"] = list(ci)
        print(f"  95% interval of the overhead by mean (bootstrap over rounds): "
              f"{ci[0]:+.1f}% to {ci[1]:+.1f}%; {bench_stats.against(ci, 5)}")
    s = pairs[1]
    print(f"peer: strace -f -e trace=execve over bare sh: {s['mean_pct']:+.1f}% by mean, "
          f"{s['median_pct']:+.1f}% by median, {s['paired_median_pct']:+.1f}% paired")
    print()

def rfc3339_ns(s):
    d = datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    return round(d.timestamp() * 1000) * 1_000_000

if do_latency:
    doc["latency"] = {}
    marker = re.compile(r"airlock-bench-marker-\d+-(\d+)\b")
    for mode in ("idle", "busy"):
        t0 = {}
        for line in open(os.path.join(out, f"latency-{mode}-log.txt")):
            m = re.match(r"T (\d+) (\d+)\.(\d{6})$", line.strip())
            if m:
                t0[int(m[1])] = int(m[2]) * 1_000_000_000 + int(m[3]) * 1000
        terminal = {}
        for line in open(os.path.join(out, f"latency-{mode}-stdout.txt")):
            stamp, _, text = line.partition(" ")
            m = marker.search(text)
            if "alert [" in text and m and int(m[1]) not in terminal:
                terminal[int(m[1])] = int(stamp)
        record = {}
        run = json.load(open(os.path.join(out, f"latency-{mode}-run.json")))
        for a in run["jobs"][0]["alerts"]:
            m = marker.search(a["summary"])
            if m and a["rule"].startswith("bench-marker-"):
                record[int(m[1])] = rfc3339_ns(a["at"])
        rows = []
        for n in sorted(t0):
            rows.append({"n": n, "t_ns": t0[n],
                         "terminal_ms": (terminal[n] - t0[n]) / 1e6 if n in terminal else None,
                         "record_ms": (record[n] - t0[n]) / 1e6 if n in record else None})
        doc["latency"][mode] = {"cpu_busy_before_percent": loads.get(f"latency-{mode}"),
                                "samples": rows}
        print(f"Exec-to-alert latency, {mode} job ({len(t0)} samples of {samples}; CPUs "
              f"{loads.get(f'latency-{mode}')}% busy with other work before it), ms:")
        print(f"  {'alert time':<44} {'n':>4} {'min':>7} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7}")
        for key, what in (("terminal_ms", "terminal (stdout line arrives, ns clock)"),
                          ("record_ms", "record (`at`, truncated to the ms)")):
            xs = [r[key] for r in rows if r[key] is not None]
            if not xs:
                print(f"  {what:<44} no alerts matched")
                continue
            st = {"n": len(xs), "min": min(xs), "p50": pct(xs, 50), "p90": pct(xs, 90),
                  "p99": pct(xs, 99), "max": max(xs)}
            doc["latency"][mode][key.replace("_ms", "")] = st
            print(f"  {what:<44} {st['n']:4d} {st['min']:7.2f} {st['p50']:7.2f} {st['p90']:7.2f} "
                  f"{st['p99']:7.2f} {st['max']:7.2f}")
        st = doc["latency"][mode].get("terminal") or doc["latency"][mode].get("record")
        if st:
            print(f"  p50 {st['p50']:.2f} ms (goal: at most 50 ms) -> "
                  f"{'MET' if st['p50'] <= 50 and st['n'] >= len(t0) else 'NOT MET'}")
        print()

json.dump(doc, open(os.path.join(out, "monitor.json"), "w"), indent=2)
PY
    tee "$out/summary.txt"
echo "results: $out/monitor.json, $out/rounds/, $out/latency-*.txt, $out/summary.txt, $out/machine.txt"
