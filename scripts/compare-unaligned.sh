#!/usr/bin/env bash
# Unaligned I/O at QD1 through DirectFile (`--api sync`) and AsyncFile (`--api async`, one
# task on the global executor) against the floor, plain O_DIRECT
# pread/pwrite doing the least read-modify-write (`--api posix`), and against aligned 4 KiB
# I/O, on the same file in one run, rounds in rotating order.
#
# Usage: [IODEPTH=N] [APIS="sync async"] scripts/compare-unaligned.sh [PATH] [ROUNDS] [RUNTIME_SECONDS] [DIO...]
#   IODEPTH  callers at once (default 1): posix and sync run that many threads, the async APIs
#            that many tasks, and the aligned references run through the batched API at that
#            depth (through sync at depth 1)
#   APIS     the DirectIO APIs to run on the first binary besides sync (default: async;
#            e.g. "async async-executor async-rings", the last being async with the rings
#            installed as Swift's global executor)
#   PATH     file or block device (default ./.compare-fio.dat, 1 GiB, created if absent)
#   ROUNDS   runs per job (default 5)
#   RUNTIME  measured seconds per run (default 3, after a 0.5 s ramp)
#   DIO...   dio binaries to compare (default .build/release/dio); each runs the sync jobs, the
#            first also the posix floor and the aligned jobs
# Prints median IOPS, p50 latency and CPU per I/O per job and binary, and ratios to the floor
# taken pairwise within a round (the disk's speed drifts between rounds).
set -euo pipefail
cd "$(dirname "$0")/.."
iodepth=${IODEPTH:-1}
apis=(${APIS:-async})
reference=$([ "$iodepth" = 1 ] && echo sync || echo batched)
target=${1:-./.compare-fio.dat}
rounds=${2:-5}
runtime=${3:-3}
shift $(( $# < 3 ? $# : 3 ))
binaries=("$@")
if [ ${#binaries[@]} = 0 ]; then
  swift build -c release --product dio >/dev/null
  binaries=(.build/release/dio)
fi
[ -e "$target" ] || "${binaries[0]}" bench "$target" --size 1g --rw read --runtime 0.2 --ramp 0 --json >/dev/null
results=$(mktemp)
trap 'rm -f "$results"' EXIT

jobs=(
  "randwrite-4000|--rw randwrite --bs 4000 --blockalign 1"
  "randread-4000|--rw randread --bs 4000 --blockalign 1"
  "randread-100|--rw randread --bs 100 --blockalign 1"
  "append-1-9000|--rw write --bsrange 1-9000 --bs-unaligned --fdatasync 64"
)

run() {  # label binary api job-name job-args round
  sleep 0.5
  local json
  # An API that refuses a job (the batched loop has no --fdatasync) is left out of that row.
  # async-rings: the async job with the rings installed as Swift's global executor.
  local api=(--api "$3")
  [ "$3" = async-rings ] && api=(--api async --global-executor rings)
  if ! json=$("$2" bench "$target" $5 --iodepth "$iodepth" --runtime "$runtime" --ramp 0.5 "${api[@]}" --json 2>/dev/null); then return 0; fi
  python3 -c '
import json, sys
r = json.loads(sys.argv[4])
print(json.dumps({"who": sys.argv[1], "job": sys.argv[2], "round": int(sys.argv[3]), "iops": r["iops"],
                  "p50": r["latencyNs"]["p50"] / 1000, "cpu": r["cpuMicrosecondsPerIO"]}))
' "$1" "$4" "$6" "$json" >> "$results"
}

for round in $(seq 1 "$rounds"); do
  for spec in "${jobs[@]}"; do
    name=${spec%%|*}; args=${spec#*|}
    order=("posix|${binaries[0]}|posix")
    for index in "${!binaries[@]}"; do order+=("sync#$index|${binaries[$index]}|sync"); done
    for api in "${apis[@]}"; do order+=("$api|${binaries[0]}|$api"); done
    # Rotate the order each round so no one always runs first.
    for step in $(seq 0 $(( ${#order[@]} - 1 ))); do
      entry=${order[$(( (step + round) % ${#order[@]} ))]}
      IFS='|' read -r who binary api <<<"$entry"
      run "$who" "$binary" "$api" "$name" "$args" "$round"
    done
  done
  # Aligned 4 KiB, the reference the issue's ratios start from.
  run "aligned" "${binaries[0]}" "$reference" "randwrite-4k-aligned" "--rw randwrite --bs 4k" "$round"
  run "aligned" "${binaries[0]}" "$reference" "randread-4k-aligned" "--rw randread --bs 4k" "$round"
done

python3 - "$results" "${binaries[@]}" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print("binaries: " + ", ".join(f"sync#{i} = {b}" for i, b in enumerate(sys.argv[2:])))
print(f"{'job':<22} {'who':<15} {'IOPS':>8} {'p50 µs':>8} {'CPU µs/IO':>10} {'IOPS / posix':>17} {'IOPS / aligned':>17}")
def paired(mine, job, who):
    ratios = []
    for r in mine:
        floor = [p for p in rows if p["job"] == job and p["who"] == who and p["round"] == r["round"]]
        if floor and floor[0]["iops"] > 0: ratios.append(r["iops"] / floor[0]["iops"])
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})" if ratios else ""
for job in dict.fromkeys(r["job"] for r in rows):
    aligned = "randread-4k-aligned" if "read" in job else "randwrite-4k-aligned"
    for who in dict.fromkeys(r["who"] for r in rows if r["job"] == job):
        mine = [r for r in rows if r["job"] == job and r["who"] == who]
        to_posix = paired(mine, job, "posix") if who not in ("posix", "aligned") else ""
        to_aligned = paired(mine, aligned, "aligned") if who != "aligned" and not job.startswith("append") else ""
        print(f"{job:<22} {who:<15} {statistics.median(r['iops'] for r in mine):>8.0f} {statistics.median(r['p50'] for r in mine):>8.1f} "
              f"{statistics.median(r['cpu'] for r in mine):>10.2f} {to_posix:>17} {to_aligned:>17}")
EOF
