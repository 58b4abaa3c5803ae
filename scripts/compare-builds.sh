#!/usr/bin/env bash
# Builds (or APIs) side by side on one job: runs alternate within each round, and each run
# reports the machine's CPU per I/O beside the process's. The process's own figure leaves out
# work the kernel does for it on its own threads (a kworker completing a write), which the
# machine's busy time from /proc/stat includes.
#
# Usage: [TARGET=PATH] [RT=SECONDS] scripts/compare-builds.sh ROUNDS "JOB ARGS" DIO:API [DIO:API...]
#   e.g. scripts/compare-builds.sh 6 "--rw randwrite --bs 4k --iodepth 1" /tmp/dio-before:sync .build/release/dio:sync /tmp/dio-before:posix
#   TARGET  file or device (default /var/tmp/unal.dat); RT measured seconds per run (default 3,
#           after a 0.5 s ramp)
# Prints one line per run, then the median (min-max) IOPS, p50 latency, process CPU and
# machine CPU per I/O of each DIO:API.
set -euo pipefail
rounds=$1; job=$2; shift 2
target=${TARGET:-/var/tmp/unal.dat}
runtime=${RT:-3}
results=$(mktemp)
trap 'rm -f "$results"' EXIT
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
for round in $(seq 1 "$rounds"); do
  for spec in "$@"; do
    binary=${spec%%:*}; api=${spec#*:}
    sleep 0.3
    before=$(busy)
    # shellcheck disable=SC2086 # the job's arguments are words
    json=$("$binary" bench "$target" $job --api "$api" --runtime "$runtime" --ramp 0.5 --json 2>/dev/null)
    after=$(busy)
    python3 -c '
import json, os, sys
r = json.loads(sys.argv[1])
ios = r["iops"] * (float(sys.argv[5]) + 0.5)
ticks = os.sysconf("SC_CLK_TCK")
print(json.dumps({"who": sys.argv[2], "iops": r["iops"], "p50": r["latencyNs"]["p50"] / 1000, "cpu": r["cpuMicrosecondsPerIO"],
                  "machine": (int(sys.argv[4]) - int(sys.argv[3])) * 1e6 / ticks / max(ios, 1)}))
' "$json" "$spec" "$before" "$after" "$runtime" | tee -a "$results"
  done
done
python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for who in dict.fromkeys(r["who"] for r in rows):
    mine = [r for r in rows if r["who"] == who]
    iops = [r["iops"] for r in mine]
    print(f"{who:40} IOPS {statistics.median(iops):9.0f} ({min(iops):.0f}-{max(iops):.0f})  p50 µs {statistics.median(r['p50'] for r in mine):8.1f}"
          f"  CPU µs/IO process {statistics.median(r['cpu'] for r in mine):6.2f}  machine {statistics.median(r['machine'] for r in mine):6.2f}")
PY
