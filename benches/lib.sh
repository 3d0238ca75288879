# Shared by the bench scripts: `source "$root/benches/lib.sh"`.

# Percent of the CPUs busy with other work over the next second, from
# /proc/stat. (The load average lags by minutes; this does not.)
cpu_busy() {
    local a b
    a=$(head -1 /proc/stat)
    sleep 1
    b=$(head -1 /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN {
        n = split(a, x); split(b, y); total = 0
        for (i = 2; i <= n; i++) total += y[i] - x[i]
        idle = (y[5] - x[5]) + (y[6] - x[6])
        printf "%d", (total > 0) ? 100 * (total - idle) / total : 0 }'
}
