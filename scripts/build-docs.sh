#!/usr/bin/env bash
# Builds DirectIO's DocC documentation offline with the toolchain's docc, failing on any
# warning (a broken symbol link, an undocumented parameter of a documented function).
#
# Usage: scripts/build-docs.sh [OUTPUT]   (default .build/docs; open OUTPUT/index.html through
#        `docc preview` or any static file server)
set -euo pipefail
cd "$(dirname "$0")/.."
output=${1:-.build/docs}
graphs=.build/symbol-graphs
rm -rf "$graphs"
mkdir -p "$graphs"
# Symbol graphs of every module, written afresh whatever the build's state.
dumped=$(swift package dump-symbol-graph --minimum-access-level public 2>&1 | sed -n 's/^Files written to //p' | tail -n 1)
[ -n "$dumped" ] || { echo "swift package dump-symbol-graph wrote no symbol graphs"; exit 1; }
# Only DirectIO's own symbols.
cp "$dumped"/DirectIO.symbols.json "$dumped"/DirectIO@*.symbols.json "$graphs"/ 2>/dev/null || cp "$dumped"/DirectIO.symbols.json "$graphs"/
docc convert Sources/DirectIO/DirectIO.docc --additional-symbol-graph-dir "$graphs" \
  --fallback-display-name DirectIO --fallback-bundle-identifier org.directio.DirectIO \
  --output-path "$output" --warnings-as-errors
echo "documentation in $output"
