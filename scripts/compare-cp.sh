#!/usr/bin/env bash
# `dio copy` against coreutils `cp` on the same files, in the same run, in rotating order.
#
# Usage: scripts/compare-cp.sh [DIRECTORY] [SIZE] [ROUNDS]
#   DIRECTORY  where the source and copies go (default: .); needs 3 × SIZE free
#   SIZE       source size for dio bench's --size syntax (default 4g)
#   ROUNDS     copies per tool (default 3)
# With XFS=1 (root, xfsprogs) it also mounts an xfs loop filesystem in DIRECTORY and compares
# reflink copies of SIZE and of 64 MiB (a reflink's time does not depend on the size).
#
# Every copy is timed up to its data being on disk: `cp SRC DST && sync DST` against
# `dio copy`, which fsyncs before it renames. The page cache is dropped before each copy
# (root only), so every tool reads the source from the disk.
set -euo pipefail
cd "$(dirname "$0")/.."
directory=$(realpath "${1:-.}")
size=${2:-4g}
rounds=${3:-3}
swift build -c release --product dio >/dev/null
dio=$(pwd)/.build/release/dio

drop_caches() { sync; if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches; fi; sleep 1; }

# Seconds for one copy: time_copy TOOL SRC DST
time_copy() {
  local tool=$1 src=$2 dst=$3 start end
  rm -f "$dst"
  drop_caches
  start=$(date +%s.%N)
  case $tool in
    cp) cp "$src" "$dst" && sync "$dst" ;;
    dio-auto) "$dio" copy "$src" "$dst" --json > "$dst.json" ;;
    dio-*) "$dio" copy --strategy "${tool#dio-}" "$src" "$dst" --json > "$dst.json" ;;
  esac
  end=$(date +%s.%N)
  cmp -s "$src" "$dst" || { echo "copy by $tool differs from the source" >&2; exit 1; }
  local strategy=cp
  [ -f "$dst.json" ] && strategy=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["strategy"])' "$dst.json") && rm -f "$dst.json"
  echo "$tool $strategy $(python3 -c "print($end - $start)")"
}

# compare LABEL SRC TOOLS...: ROUNDS copies per tool, rotating the order, then a table.
compare() {
  local label=$1 src=$2; shift 2
  local tools=("$@") results
  results=$(mktemp)
  local bytes
  bytes=$(stat -c %s "$src")
  for ((round = 0; round < rounds; round++)); do
    for ((i = 0; i < ${#tools[@]}; i++)); do
      local tool=${tools[$(( (i + round) % ${#tools[@]} ))]}
      time_copy "$tool" "$src" "$(dirname "$src")/.compare-cp-dst" >> "$results"
    done
  done
  rm -f "$(dirname "$src")/.compare-cp-dst"
  python3 - "$label" "$bytes" "$results" <<'PY'
import sys, statistics
label, size, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
runs = {}
for line in open(path):
    tool, strategy, seconds = line.split()
    runs.setdefault((tool, strategy), []).append(float(seconds))
cp = statistics.median(next(v for (t, _), v in runs.items() if t == "cp"))
print(f"\n{label}: {size / 2**30:.2f} GiB, median of {len(next(iter(runs.values())))} copies each")
print(f"| tool | strategy | seconds (median) | GiB/s | vs cp |")
print(f"|---|---|---|---|---|")
for (tool, strategy), values in runs.items():
    median = statistics.median(values)
    print(f"| {tool} | {strategy} | {median:.2f} | {size / 2**30 / median:.2f} | {cp / median:.2f}x |")
PY
  rm -f "$results"
}

source_file=$directory/.compare-cp-src
[ -f "$source_file" ] || "$dio" bench "$source_file" --size "$size" --rw read --runtime 0.1 --ramp 0 --json > /dev/null
compare "ext4 (or whatever holds $directory)" "$source_file" cp dio-auto dio-direct

if [ "${XFS:-0}" = 1 ]; then
  image=$directory/.compare-cp-xfs.img
  mountpoint=$directory/.compare-cp-xfs
  truncate -s 0 "$image"; truncate -s 12g "$image"
  loop=$(losetup --find --show "$image")
  mkdir -p "$mountpoint"
  cleanup() { umount "$mountpoint" 2>/dev/null || true; losetup -d "$loop" 2>/dev/null || true; rm -rf "$image" "$mountpoint"; }
  trap cleanup EXIT
  mkfs.xfs -q -f "$loop" && mount "$loop" "$mountpoint"
  cp "$source_file" "$mountpoint/big" && sync
  head -c 64M "$source_file" > "$mountpoint/small" && sync
  compare "xfs on loop, reflink, $size" "$mountpoint/big" cp dio-auto
  compare "xfs on loop, reflink, 64 MiB" "$mountpoint/small" cp dio-auto
  compare "xfs on loop, --strategy direct, $size" "$mountpoint/big" cp dio-direct
fi
rm -f "$source_file"
