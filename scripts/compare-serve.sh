#!/usr/bin/env bash
# The Hummingbird example server with DirectIO's file provider against Hummingbird's own
# LocalFileSystem, same files, same run, alternating; wrk on loopback.
#
# Usage: scripts/compare-serve.sh [DIRECTORY] [ROUNDS] [SECONDS]
#   DIRECTORY  where the served files go (default /var/tmp/directio-serve): one 1 GiB file and
#              10,000 files of 64 KiB, made once and kept
#   ROUNDS     rounds per provider (default 3)
#   SECONDS    wrk's duration per job (default 10)
# SERVER_FLAGS are passed to the server (e.g. "--chunk-kib 512 --read-ahead 8": the directio
# provider's reads; the local provider ignores them).
# Each job starts a fresh server and drops the page cache first (root only): every round is
# cold. Reported per job: wrk's requests and bytes per second, the server's CPU seconds per
# GiB sent (utime + stime from /proc), and how much the page cache grew (Cached in
# /proc/meminfo, kB).
set -euo pipefail
cd "$(dirname "$0")/.."
directory=${1:-/var/tmp/directio-serve}
rounds=${2:-3}
seconds=${3:-10}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
swift build -c release --package-path Integrations/DirectIOHummingbird --product directio-file-server >/dev/null
server=$(pwd)/Integrations/DirectIOHummingbird/.build/release/directio-file-server

mkdir -p "$directory/small"
if [ ! -f "$directory/big.bin" ]; then
  echo "making $directory/big.bin (1 GiB) and 10,000 files of 64 KiB"
  head -c $((1 << 30)) /dev/urandom > "$directory/big.bin"
  for i in $(seq 0 9999); do head -c 65536 /dev/urandom > "$directory/small/$i.bin"; done
fi
script=$(mktemp --suffix .lua)
big_script=$(mktemp --suffix .lua)
trap 'rm -f "$script" "$big_script"' EXIT
cat > "$script" <<'LUA'
math.randomseed(os.time())
request = function() return wrk.format("GET", "/small/" .. math.random(0, 9999) .. ".bin") end
LUA
echo 'request = function() return wrk.format("GET", "/big.bin") end' > "$big_script"

cached() { awk '/^Cached:/ { print $2 }' /proc/meminfo; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
drop_caches() { sync; if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches; fi; sleep 1; }

# run_job PROVIDER NAME WRK-ARGUMENTS...
run_job() {
  local provider=$1 name=$2; shift 2
  local port=$((20000 + RANDOM % 20000))
  "$server" --root "$directory" --port "$port" --provider "$provider" ${SERVER_FLAGS:-} >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/small/0.bin" && break; sleep 0.1; done
  drop_caches
  local cache_before ticks_before output ticks_after cache_after
  cache_before=$(cached); ticks_before=$(cpu_ticks "$pid")
  output=$(wrk --latency -d "${seconds}s" "$@" "http://127.0.0.1:$port/")
  ticks_after=$(cpu_ticks "$pid"); cache_after=$(cached)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local requests bytes
  requests=$(echo "$output" | awk '/^Requests\/sec:/ { print $2 }')
  bytes=$(echo "$output" | awk '/^Transfer\/sec:/ { v = $2; u = substr(v, length(v) - 1); n = substr(v, 1, length(v) - 2);
      if (u == "GB") n *= 1073741824; else if (u == "MB") n *= 1048576; else if (u == "KB") n *= 1024; print int(n) }')
  local tick=$(getconf CLK_TCK)
  awk -v p="$provider" -v j="$name" -v r="$requests" -v b="$bytes" -v s="$seconds" -v t=$((ticks_after - ticks_before)) -v hz="$tick" -v c=$((cache_after - cache_before)) \
    'BEGIN { gib = b * s / 1073741824; printf "%-9s %-12s %10.1f req/s %8.1f MiB/s  %6.2f CPU s/GiB  page cache %+9d kB\n", p, j, r, b / 1048576, (gib > 0 ? t / hz / gib : 0), c }'
}

for round in $(seq "$rounds"); do
  for provider in directio local; do
    run_job "$provider" "big-cold" -t 1 -c 1 --timeout 60s -s "$big_script"
    run_job "$provider" "64k-files" -t 2 -c 64 -s "$script"
  done
done
