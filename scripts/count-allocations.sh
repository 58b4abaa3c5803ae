#!/usr/bin/env bash
# Heap allocations per I/O of `dio bench` jobs: malloc, calloc, realloc, posix_memalign and
# aligned_alloc calls counted by a small LD_PRELOAD library, in a 1 s and a 3 s run of each
# job; the difference divided by the difference in I/Os leaves out set-up and tear-down.
#
# Usage: scripts/count-allocations.sh [PATH] [DIO]
#   PATH  file to use (default ./.compare-fio.dat, 1 GiB, created if absent)
#   DIO   dio binary (default .build/release/dio, built if absent)
# Needs a C compiler (cc) for the counting library; nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-./.compare-fio.dat}
dio=${2:-.build/release/dio}
[ -x "$dio" ] || swift build -c release --product dio >/dev/null
[ -e "$target" ] || "$dio" bench "$target" --size 1g --rw read --runtime 0.2 --ramp 0 --json >/dev/null

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/count.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
static atomic_long calls;
static void *(*next_malloc)(size_t);
static void *(*next_calloc)(size_t, size_t);
static void *(*next_realloc)(void *, size_t);
static int (*next_memalign)(void **, size_t, size_t);
static void *(*next_aligned)(size_t, size_t);
/* dlsym may call calloc before next_calloc is known: serve it from here. */
static char early[4096];
static int resolving;
void *malloc(size_t n) { if (!next_malloc) next_malloc = dlsym(RTLD_NEXT, "malloc"); calls++; return next_malloc(n); }
void *calloc(size_t a, size_t b) {
  if (!next_calloc) {
    if (resolving) return early;
    resolving = 1;
    next_calloc = dlsym(RTLD_NEXT, "calloc");
  }
  calls++;
  return next_calloc(a, b);
}
void *realloc(void *p, size_t n) { if (!next_realloc) next_realloc = dlsym(RTLD_NEXT, "realloc"); calls++; return next_realloc(p, n); }
int posix_memalign(void **p, size_t a, size_t n) { if (!next_memalign) next_memalign = dlsym(RTLD_NEXT, "posix_memalign"); calls++; return next_memalign(p, a, n); }
void *aligned_alloc(size_t a, size_t n) { if (!next_aligned) next_aligned = dlsym(RTLD_NEXT, "aligned_alloc"); calls++; return next_aligned(a, n); }
__attribute__((destructor)) static void report(void) {
  char line[64];
  int length = snprintf(line, sizeof line, "allocations=%ld\n", (long)calls);
  if (write(2, line, length) < 0) {}
}
EOF
cc -O2 -shared -fPIC -o "$work/count.so" "$work/count.c" -ldl

run() {  # seconds job-args...: prints "allocations ios"
  local seconds=$1; shift
  LD_PRELOAD="$work/count.so" "$dio" bench "$target" "$@" --runtime "$seconds" --ramp 0 --json 2>"$work/err" >"$work/out"
  python3 -c '
import json, re, sys
r = json.load(open(sys.argv[1]))
a = re.search(r"allocations=(\d+)", open(sys.argv[2]).read()).group(1)
print(a, r["ios"])
' "$work/out" "$work/err"
}

jobs=(
  "--api sync --iodepth 1 --rw randwrite --bs 4000 --blockalign 1"
  "--api sync --iodepth 1 --rw randread --bs 100 --blockalign 1"
  "--api batched --iodepth 32 --rw randwrite --bs 4000 --blockalign 1"
  "--api batched --iodepth 32 --rw randread --bs 4000 --blockalign 1"
  "--api async-executor --iodepth 1 --rw randwrite --bs 4000 --blockalign 1"
  "--api async-executor --iodepth 1 --rw randread --bs 4k"
)
printf '%-70s %12s\n' job "allocs/IO"
for job in "${jobs[@]}"; do
  read -r a1 n1 < <(run 1 $job)
  read -r a3 n3 < <(run 3 $job)
  printf '%-70s %12s\n' "$job" "$(python3 -c "print(f'{($a3 - $a1) / max(1, $n3 - $n1):.2f}')")"
done
