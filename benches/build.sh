#!/usr/bin/env bash
# Overhead on a real build: compiling a generated C project of FILES source
# files (make -j NPROC) directly on the host, and the same build as an
# `airlock run` job (source read-only at /src, objects in the workspace), in
# ONE hyperfine run. Objects go to a tmpfs in both cases. Goal: at most 3%
# slower in the sandbox.
#
# Usage: benches/build.sh          (as root)
# Environment: FILES [400], RUNS [10], OUT [target/bench/build], AIRLOCK.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
files="${FILES:-400}"
runs="${RUNS:-10}"
out="${OUT:-target/bench/build}"
airlock="${AIRLOCK:-${CARGO_TARGET_DIR:-target}/release/airlock}"
[ -x "$airlock" ] || cargo build --release --quiet -p airlock
jobs="$(nproc)"

work="$(mktemp -d)"
# The job's workspace is a tmpfs; the host build writes to one too, so the
# comparison is the sandbox, not the file system.
hostout="$(mktemp -d -p /dev/shm)"
trap 'rm -rf "$work" "$hostout"' EXIT
src="$work/src"
mkdir -p "$src" "$out"

# A project of $files translation units, each with a little real work for
# the compiler (loops, a struct, inlining), and a main that calls them all.
python3 - "$src" "$files" <<'PY'
import sys, pathlib
src, n = pathlib.Path(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    (src / f"unit{i}.c").write_text(f"""
#include <stdint.h>
#include <string.h>
struct acc{i} {{ uint64_t sum; uint32_t xs[64]; }};
static inline uint64_t mix{i}(uint64_t x) {{ x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; return x ^ (x >> 29); }}
uint64_t unit{i}(uint64_t seed) {{
    struct acc{i} a; memset(&a, 0, sizeof a);
    for (int k = 0; k < 64; k++) a.xs[k] = (uint32_t)mix{i}(seed + k * {i + 1});
    for (int r = 0; r < 16; r++)
        for (int k = 0; k < 64; k++) a.sum += mix{i}(a.xs[k] ^ (uint64_t)r);
    return a.sum;
}}
""")
decls = "".join(f"unsigned long long unit{i}(unsigned long long);\n" for i in range(n))
calls = "".join(f"    s += unit{i}(s);\n" for i in range(n))
(src / "main.c").write_text(f"#include <stdio.h>\n{decls}int main(void) {{\n    unsigned long long s = 1;\n{calls}    printf(\"%llu\\n\", s);\n    return 0;\n}}\n")
objs = " ".join(f"$(OUT)/unit{i}.o" for i in range(n)) + " $(OUT)/main.o"
(src / "Makefile").write_text(f"""OUT ?= out
CFLAGS ?= -O2
$(OUT)/app: {objs}
\t$(CC) -o $@ $^
$(OUT)/%.o: $(dir $(lastword $(MAKEFILE_LIST)))%.c | $(OUT)
\t$(CC) $(CFLAGS) -c -o $@ $<
$(OUT):
\tmkdir -p $@
""")
PY

cat > "$work/build.yml" <<YML
version: 1
name: build-bench
jobs:
  build:
    source: $src
    resources: { disk: 2GiB, timeout: 30m }
    steps:
      - run: make -s -j$jobs -f /src/Makefile OUT=/workspace/out && /workspace/out/app >/dev/null
YML

home="$work/home"
hyperfine --warmup 1 --runs "$runs" \
    --export-json "$out/hyperfine.json" --export-markdown "$out/hyperfine.md" \
    --prepare "rm -rf $hostout/out" \
    -n host "make -s -j$jobs -f $src/Makefile OUT=$hostout/out && $hostout/out/app >/dev/null" \
    -n "airlock run" "$airlock --home $home run $work/build.yml >/dev/null"
