#!/usr/bin/env bash
# Egress proxy benchmark: Airlock's allowlist proxy (crates/net, run as the
# `egress_proxy` example) side by side with tinyproxy and with no proxy at
# all, in ONE run, on 127.0.0.1 only:
#   - throughput of a 1 GiB download through CONNECT (RUNS times, median),
#   - requests/s of small plain-HTTP GETs (absolute URI), a new connection
#     per request, CONCURRENCY at once, for SECONDS_RPS, ROUNDS rounds,
#   - latency per connection: connect to first response byte, sequential,
#     SAMPLES each (p50, p99; added = proxy p50 - direct p50), for the small
#     plain-HTTP GET and for the same GET in a CONNECT tunnel.
# Targets are interleaved (run by run, round by round, sample by sample) so
# that other work on the machine disturbs all of them alike. The upstream
# and the load generator are `crates/net/examples/egress_load.rs` (release).
# Goals (the network issue): >= 2x tinyproxy on throughput and on
# requests/s, added latency p50 <= 100 us.
#
# Usage: benches/egress.sh
#
# Environment:
#   BYTES        bytes per CONNECT transfer [default: 1073741824]
#   RUNS         transfers per target [default: 5]
#   SECONDS_RPS  seconds per requests/s round [default: 5]
#   ROUNDS       requests/s rounds per target [default: 3]
#   CONCURRENCY  requests in flight for requests/s [default: 16]
#   SAMPLES      latency samples per target [default: 2000]
#   GAP_US       pause before each latency sample, in us [default: 0: back
#                to back; the order of the targets is shuffled either way]
#   UPSTREAM_CLOSE  1: the upstream closes after every response, as servers
#                that refuse persistent connections do [default: it keeps
#                connections unless the request says Connection: close]
#   PORT         first of three loopback ports: upstream, tinyproxy, airlock
#                [default: 18180]
#   OUT          results directory [default: target/bench/egress]
#
# Writes OUT/bulk.csv, OUT/rps.csv, OUT/latency.csv, OUT/tunnel.csv (every single figure),
# OUT/results.json (per target: medians, percentiles, and the CPU time the
# proxy, the upstream, the client and other work used), OUT/summary.txt (the tables and
# the verdict on each goal, printed at the end) and OUT/machine.txt.
# Needs tinyproxy (Debian: apt-get install tinyproxy; the package also
# enables a system service on port 8888, which this script does not use).
# Run as root or as a user: tinyproxy runs as the invoking user, or as
# nobody when invoked by root. On 2 CPUs the upstream, the proxy and the
# client share the cores: run it on an idle machine, and read the "other
# work" columns before trusting a rate.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bytes="${BYTES:-1073741824}"
runs="${RUNS:-5}"
seconds="${SECONDS_RPS:-5}"
rounds="${ROUNDS:-3}"
concurrency="${CONCURRENCY:-16}"
samples="${SAMPLES:-2000}"
gap="${GAP_US:-0}"
port="${PORT:-18180}"
out="${OUT:-target/bench/egress}"

die() {
    echo "egress.sh: $*" >&2
    exit 1
}

command -v tinyproxy >/dev/null ||
    die "tinyproxy not found; install it: apt-get install tinyproxy"
for v in bytes runs rounds concurrency samples port; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "${v^^} must be a positive integer, got '${!v}'"
done
[[ "$gap" =~ ^[0-9]+$ ]] || die "GAP_US must be a non-negative integer, got '$gap'"
[[ "$seconds" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "SECONDS_RPS must be a number, got '$seconds'"

echo "egress.sh: building the examples (cargo build --release -p net --examples)" >&2
cargo build --release --quiet -p net --examples
bin="${CARGO_TARGET_DIR:-target}/release/examples"
[[ -x "$bin/egress_load" && -x "$bin/egress_proxy" ]] || die "cargo build did not produce $bin"

up_port=$port
tp_port=$((port + 1))
al_port=$((port + 2))
up="127.0.0.1:$up_port"

# Everything started here is stopped, by its pid, however the script ends.
tmp="$(mktemp -d "${TMPDIR:-/tmp}/airlock-bench-egress.XXXXXX")"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf -- "$tmp"
}
trap cleanup EXIT

# tinyproxy: the upstream's port only, loopback only, enough clients for
# the requests/s part, logging only critical events to a file in $tmp.
tp_user=$(id -un)
tp_group=$(id -gn)
if (($(id -u) == 0)); then
    tp_user=nobody
    tp_group=$(id -gn nobody)
    chmod 755 "$tmp"
fi
touch "$tmp/tinyproxy.log"
chown "$tp_user:$tp_group" "$tmp/tinyproxy.log"
cat >"$tmp/tinyproxy.conf" <<EOF
User $tp_user
Group $tp_group
Port $tp_port
Listen 127.0.0.1
Timeout 600
MaxClients 1024
Allow 127.0.0.1
ConnectPort $up_port
LogFile "$tmp/tinyproxy.log"
LogLevel Critical
EOF

"$bin/egress_load" upstream "$up" ${UPSTREAM_CLOSE:+--close} &
pids+=($!)
up_pid=$!
tinyproxy -d -c "$tmp/tinyproxy.conf" &
pids+=($!)
tp_pid=$!
# The proxy refuses loopback unless the exact address is listed literally.
AIRLOCK_NET_MAX_CONNECTIONS=1024 "$bin/egress_proxy" "127.0.0.1:$al_port" "$up" &
pids+=($!)
al_pid=$!

wait_port() {
    local i
    for ((i = 0; i < 100; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    die "nothing listens on 127.0.0.1:$1 ($2)"
}
wait_port "$up_port" upstream
wait_port "$tp_port" tinyproxy
wait_port "$al_port" egress_proxy

mkdir -p "$out"
{
    echo "date:      $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "user:      $(id -un) (uid $(id -u))"
    echo "nproc:     $(nproc)"
    echo "kernel:    $(uname -r)"
    echo "cpu:       $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //')"
    echo "tinyproxy: $(tinyproxy -v 2>&1 | head -1) (threads: one per connection; runs as $tp_user)"
    echo "airlock:   egress_proxy example, allowlist $up, max connections 1024"
    echo "checkout:  $(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)"
    echo "params:    bytes $bytes, runs $runs, rps $seconds s x $rounds rounds at concurrency $concurrency, latency $samples samples, gap $gap us"
    echo "ports:     upstream $up_port, tinyproxy $tp_port, airlock $al_port (127.0.0.1)"
    echo "sysctl:    tcp_tw_reuse $(cat /proc/sys/net/ipv4/tcp_tw_reuse), ports $(tr '\t' - </proc/sys/net/ipv4/ip_local_port_range), pipe-max-size $(cat /proc/sys/fs/pipe-max-size)"
    echo "load:      $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min, before the run)"
} >"$out/machine.txt"
cat "$out/machine.txt"
echo

# Upstream, proxy and client share the CPUs: on 2 cores, all three are busy
# at once, so other work shifts every figure. (The load average lags by
# minutes; sample the CPUs for a second instead.)
source "$root/benches/lib.sh"
busy=$(cpu_busy)
echo "busy:      ${busy}% of the CPUs with other work, just before measuring" >>"$out/machine.txt"
if ((busy > 20)); then
    echo "egress.sh: warning: the CPUs are ${busy}% busy with other work; figures will be noisy" >&2
fi

"$bin/egress_load" measure --upstream "$up" --upstream-pid "$up_pid" \
    --proxy "tinyproxy=127.0.0.1:$tp_port,$tp_pid" \
    --proxy "airlock=127.0.0.1:$al_port,$al_pid" \
    --subject airlock --peer tinyproxy \
    --bytes "$bytes" --runs "$runs" --seconds "$seconds" --rounds "$rounds" \
    --concurrency "$concurrency" --samples "$samples" --gap-us "$gap" --out "$out" |
    tee "$out/summary.txt"
echo
echo "results: $out/bulk.csv, $out/rps.csv, $out/latency.csv, $out/tunnel.csv, $out/results.json, $out/summary.txt, $out/machine.txt"
