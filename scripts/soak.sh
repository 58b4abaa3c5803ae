#!/usr/bin/env bash
# Soak: `dio verify` round after round across ext4, tmpfs, xfs on a loop device and a raw
# 4 KiB-sector loop device, with misaligned buffers and jittered offsets on both engines, and
# `dio copy` killed with SIGKILL at random moments; prints bytes verified and mismatches.
# Exits non-zero on any mismatch, any partial copy or any leftover temporary file.
#
# Usage: scripts/soak.sh [SECONDS] [DIRECTORY]
#   SECONDS    how long to run (default 1800); every target runs at least once
#   DIRECTORY  where the ext4 files and loop images go (default /var/tmp)
# Loop devices and mounts need root and xfsprogs; without them those targets are skipped
# with the reason printed.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-1800}
base=$(realpath "${2:-/var/tmp}")
dio=${DIO:-}
if [ -z "$dio" ]; then
  swift build -c release --product dio >/dev/null
  dio=$(pwd)/.build/release/dio
fi

work=$(mktemp -d "$base/dio-soak.XXXXXX")
loops=()
mounts=()
cleanup() {
  for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || true; done
  for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

targets=("ext4:$work/ext4.dat")
if [ "$(id -u)" = 0 ] && command -v losetup >/dev/null; then
  mkdir -p "$work/tmpfs" && mount -t tmpfs -o size=200m tmpfs "$work/tmpfs" && mounts+=("$work/tmpfs")
  targets+=("tmpfs:$work/tmpfs/verify.dat")
  truncate -s 160m "$work/raw4k.img"
  raw=$(losetup --find --show --sector-size 4096 "$work/raw4k.img") && loops+=("$raw")
  targets+=("4k-sector-device:$raw")
  if command -v mkfs.xfs >/dev/null; then
    truncate -s 400m "$work/xfs.img"
    xfsdev=$(losetup --find --show "$work/xfs.img") && loops+=("$xfsdev")
    mkfs.xfs -q -f "$xfsdev" && mkdir -p "$work/xfs" && mount "$xfsdev" "$work/xfs" && mounts+=("$work/xfs")
    targets+=("xfs:$work/xfs/verify.dat")
  else
    echo "soak: skipping xfs: mkfs.xfs not installed (apt-get install xfsprogs)"
  fi
else
  echo "soak: skipping tmpfs, xfs and the 4 KiB-sector device: they need root and losetup"
fi

verified=0; written=0; mismatches=0; runs=0; kills=0; bad_copies=0
declare -A per_target
layouts=("0 0 64k" "8 0 64k" "0 100 16k" "8 100 16k" "512 4095 64k" "3 1 4k")
copy_source=$work/copy-source
"$dio" bench "$copy_source" --size 96m --rw read --runtime 0.1 --ramp 0 --json >/dev/null
start=$(date +%s)
round=0
while :; do
  for entry in "${targets[@]}"; do
    name=${entry%%:*}; path=${entry#*:}
    read -r offset jitter bs <<< "${layouts[$(( (round + ${#name}) % ${#layouts[@]} ))]}"
    engine=$([ $((round % 2)) = 0 ] && echo uring || echo blocking)
    result=$("$dio" verify "$path" --size 48m --bs "$bs" --iodepth 16 --buffer-offset "$offset" --offset-jitter "$jitter" \
               --seed $((round * 7919 + ${#name})) --sequence $((round + 1)) --engine "$engine" --json || true)
    read -r v w m <<< "$(python3 -c 'import json,sys
try:
    d = json.loads(sys.argv[1]); print(d["bytesVerified"], d["bytesWritten"], d["mismatches"])
except Exception:
    print(0, 0, 1)' "$result")"
    if [ "$m" != 0 ]; then echo "soak: MISMATCH on $name (buffer offset $offset, jitter $jitter, bs $bs, $engine): $result"; fi
    verified=$((verified + v)); written=$((written + w)); mismatches=$((mismatches + m)); runs=$((runs + 1))
    per_target[$name]=$(( ${per_target[$name]:-0} + v ))
  done
  # kill -9 during dio copy: the destination is the old file or a complete copy, never partial.
  strategies=(direct buffered splice copy-range)
  strategy=${strategies[$((round % ${#strategies[@]}))]}
  destination=$work/copy-destination
  printf 'old contents' > "$destination"
  "$dio" copy --strategy "$strategy" --buffers 2 --buffer-size 64k "$copy_source" "$destination" >/dev/null 2>&1 &
  pid=$!
  sleep "0.0$((RANDOM % 9 + 1))"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  kills=$((kills + 1))
  if ! { [ "$(cat "$destination")" = "old contents" ] 2>/dev/null || cmp -s "$copy_source" "$destination"; }; then
    echo "soak: PARTIAL destination after kill -9 of dio copy --strategy $strategy"
    bad_copies=$((bad_copies + 1))
  fi
  leftovers=$(find "$work" -maxdepth 1 -name '.copy-destination.dio-*' | wc -l)
  if [ "$leftovers" != 0 ]; then echo "soak: $leftovers temporary files left after kill -9"; bad_copies=$((bad_copies + 1)); fi
  round=$((round + 1))
  [ $(( $(date +%s) - start )) -ge "$duration" ] && break
done

elapsed=$(( $(date +%s) - start ))
echo "soak: $elapsed s, $runs verify runs over ${#targets[@]} targets, $kills kill -9 copies"
for name in "${!per_target[@]}"; do echo "  $name: $(( per_target[$name] >> 20 )) MiB verified"; done
echo "soak: bytes written $written, bytes verified $verified, mismatches $mismatches, partial copies $bad_copies"
[ "$mismatches" = 0 ] && [ "$bad_copies" = 0 ]
