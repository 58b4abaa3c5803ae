#!/usr/bin/env bash
# The async API against the batched API (and fio, when installed) on the same file, in one
# run: 4 KiB random reads at depth 64 (64 tasks for the async APIs), rounds in rotating order.
# async-rings is the async job with the rings installed as Swift's global executor.
#
# Usage: scripts/compare-async.sh [PATH] [ROUNDS] [RUNTIME_SECONDS]
#   PATH     file or block device (default ./.compare-fio.dat, 1 GiB, created if absent)
#   ROUNDS   runs per API (default 5)
#   RUNTIME  measured seconds per run (default 5, after a 1 s ramp)
# Reports median IOPS, p50 latency and CPU per I/O, and each API's ratios to batched taken
# pairwise within a round (the disk's speed drifts between rounds).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-./.compare-fio.dat}
rounds=${2:-5}
runtime=${3:-5}
swift build -c release --product dio >/dev/null
dio=.build/release/dio
[ -e "$target" ] || "$dio" bench "$target" --size 1g --rw read --runtime 0.2 --ramp 0 --json >/dev/null
size=$(( 1 << 30 ))
[ -f "$target" ] && size=$(stat -c %s "$target")
tools=(batched async async-rings async-executor async-scoped)
command -v fio >/dev/null && tools+=(fio)
results=$(mktemp)
trap 'rm -f "$results"' EXIT

run() {  # tool round
  local tool=$1 round=$2
  sleep 1
  if [ "$tool" = fio ]; then
    fio --name=job --filename="$target" --ioengine=io_uring --fixedbufs --registerfiles --direct=1 --rw=randread --bs=4k \
        --iodepth=64 --size="$size" --runtime="$runtime" --ramp_time=1 --time_based --lat_percentiles=1 --output-format=json 2>/dev/null \
      | python3 -c '
import json, sys
job = json.load(sys.stdin)["jobs"][0]; side = job["read"]
cpu = (job["usr_cpu"] + job["sys_cpu"]) / 100.0 * side["runtime"] / 1000.0
print(json.dumps({"tool": "fio", "round": int(sys.argv[1]), "iops": side["iops"], "p50": side["lat_ns"]["percentile"]["50.000000"], "cpu": cpu * 1e6 / max(1, side["total_ios"])}))
' "$round" >> "$results"
  else
    # async-rings: the async job with the runtime's rings installed as Swift's global executor.
    local api=(--api "$tool")
    [ "$tool" = async-rings ] && api=(--api async --global-executor rings)
    "$dio" bench "$target" --rw randread --bs 4k --iodepth 64 --size "$size" --runtime "$runtime" --ramp 1 "${api[@]}" --json \
      | python3 -c '
import json, sys
job = json.loads(sys.stdin.readline())
print(json.dumps({"tool": sys.argv[1], "round": int(sys.argv[2]), "iops": job["iops"], "p50": job["latencyNs"]["p50"], "cpu": job["cpuMicrosecondsPerIO"]}))
' "$tool" "$round" >> "$results"
  fi
}

for ((round = 0; round < rounds; round++)); do
  for ((i = 0; i < ${#tools[@]}; i++)); do run "${tools[$(( (i + round) % ${#tools[@]} ))]}" "$round"; done
  echo "  round $((round + 1)) of $rounds done" >&2
done

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
tools = []
for row in rows:
    if row["tool"] not in tools: tools.append(row["tool"])
base = {r["round"]: r for r in rows if r["tool"] == "batched"}
print("| API (4k randread, depth 64) | IOPS (median) | p50 µs (median) | CPU µs per I/O (median) | IOPS vs batched (median, min–max) | CPU per I/O vs batched (median, min–max) |")
print("| --- | ---: | ---: | ---: | --- | --- |")
for tool in tools:
    mine = [r for r in rows if r["tool"] == tool]
    iops = [r["iops"] / base[r["round"]]["iops"] for r in mine]
    cpu = [r["cpu"] / base[r["round"]]["cpu"] for r in mine]
    print("| %s | %.0f | %.0f | %.2f | %.2f (%.2f–%.2f) | %.2f (%.2f–%.2f) |" % (
        tool, statistics.median(r["iops"] for r in mine), statistics.median(r["p50"] for r in mine) / 1000,
        statistics.median(r["cpu"] for r in mine), statistics.median(iops), min(iops), max(iops),
        statistics.median(cpu), min(cpu), max(cpu)))
PY
