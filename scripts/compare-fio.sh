#!/usr/bin/env bash
# Side-by-side benchmark of `dio bench` against fio on the same file, in pairs whose order
# alternates (fio dio, dio fio, fio dio, ...) with a pause before each run: on a virtual disk
# the host is still writing back the previous run's data for a while, and always running dio
# second would charge that to dio alone.
#
# Usage: scripts/compare-fio.sh [PATH] [PAIRS] [RUNTIME_SECONDS]
#   PATH     file to use (default ./.compare-fio.dat, 1 GiB, created and filled if absent)
#   PAIRS    fio/dio pairs per workload (default 3)
#   RUNTIME  measured seconds per run (default 5, after a 1 s ramp)
#
# fio is used only here; install it with the system package manager (apt-get install fio).
# fio runs with io_uring, --fixedbufs --registerfiles --direct=1, as DirectIO does. Latency is
# compared as submission to completion (fio's lat, not clat), which is what dio measures.
# DIO_BENCH_ARGS adds options to every dio run (e.g. "--hugepages none" for fio's page size).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-./.compare-fio.dat}
pairs=${2:-3}
runtime=${3:-5}
ramp=1

command -v fio >/dev/null || { echo "fio is not installed: apt-get install fio" >&2; exit 1; }
swift build -c release --product dio >/dev/null
dio=.build/release/dio
size=$(( 1 << 30 ))
if [ ! -e "$target" ]; then
  "$dio" bench "$target" --size 1g --rw read --runtime 0.2 --ramp 0 --json >/dev/null
elif [ -f "$target" ]; then
  size=$(stat -c %s "$target")
fi

results=$(mktemp)
trap 'rm -f "$results"' EXIT

pause=${COMPARE_PAUSE:-3}

run_fio() {  # name rw bs iodepth
  local name=$1 rw=$2 bs=$3 depth=$4
  sleep "$pause"
  fio --name=job --filename="$target" --ioengine=io_uring --fixedbufs --registerfiles --direct=1 \
        --rw="$rw" --bs="$bs" --iodepth="$depth" --size="$size" --runtime="$runtime" --ramp_time="$ramp" \
        --time_based --lat_percentiles=1 --output-format=json 2>/dev/null \
      | python3 -c '
import json, sys
job = json.load(sys.stdin)["jobs"][0]
side = job["write"] if sys.argv[2].endswith("write") else job["read"]
seconds = side["runtime"] / 1000.0
cpu = (job["usr_cpu"] + job["sys_cpu"]) / 100.0 * seconds
print(json.dumps({"tool": "fio", "workload": sys.argv[1], "iops": side["iops"], "bw": side["bw_bytes"],
                  "p50": side["lat_ns"]["percentile"]["50.000000"], "cpu_per_io_us": cpu * 1e6 / max(1, side["total_ios"])}))
' "$name" "$rw" >> "$results"
}

run_dio() {  # name rw bs iodepth
  local name=$1 rw=$2 bs=$3 depth=$4
  sleep "$pause"
  # shellcheck disable=SC2086
  "$dio" bench "$target" ${DIO_BENCH_ARGS:-} --rw "$rw" --bs "$bs" --iodepth "$depth" --size "$size" --runtime "$runtime" --ramp "$ramp" --json \
      | python3 -c '
import json, sys
job = json.loads(sys.stdin.readline())
print(json.dumps({"tool": "dio", "workload": sys.argv[1], "iops": job["iops"], "bw": job["bytesPerSecond"],
                  "p50": job["latencyNs"]["p50"], "cpu_per_io_us": job["cpuMicrosecondsPerIO"]}))
' "$name" >> "$results"
}

run_pair() {  # name rw bs iodepth
  for pair in $(seq 1 "$pairs"); do
    if [ $((pair % 2)) -eq 1 ]; then run_fio "$@"; run_dio "$@"; else run_dio "$@"; run_fio "$@"; fi
    echo "  $1: pair $pair done" >&2
  done
}

echo "compare-fio: $target ($size bytes), $pairs pairs per workload, ${runtime}s + ${ramp}s ramp per run" >&2
run_pair "randread 4k QD1"   randread  4k 1
run_pair "randread 4k QD32"  randread  4k 32
run_pair "randwrite 4k QD32" randwrite 4k 32
run_pair "read 1m QD8"       read      1m 8
run_pair "write 1m QD8"      write     1m 8

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
order = []
for row in rows:
    if row["workload"] not in order: order.append(row["workload"])
def fmt(values): return "%.2f / %.2f / %.2f" % (min(values), statistics.median(values), max(values))
print("| workload | fio IOPS (median) | dio IOPS (median) | IOPS ratio dio/fio min / median / max | p50 latency ratio | CPU per I/O ratio |")
print("| --- | ---: | ---: | --- | --- | --- |")
for name in order:
    fio = [r for r in rows if r["workload"] == name and r["tool"] == "fio"]
    dio = [r for r in rows if r["workload"] == name and r["tool"] == "dio"]
    iops = [d["iops"] / f["iops"] for f, d in zip(fio, dio)]
    p50 = [d["p50"] / f["p50"] for f, d in zip(fio, dio)]
    cpu = [d["cpu_per_io_us"] / f["cpu_per_io_us"] for f, d in zip(fio, dio)]
    print("| %s | %.0f | %.0f | %s | %s | %s |" % (name, statistics.median(r["iops"] for r in fio), statistics.median(r["iops"] for r in dio), fmt(iops), fmt(p50), fmt(cpu)))
PY
