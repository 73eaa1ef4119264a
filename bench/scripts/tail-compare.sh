#!/usr/bin/env bash
# Before/after for issue 20: bench/scripts/tail.sh with two relay builds,
# alternated (run 1: after, before; run 2: before, after; ...), a fresh
# broker and relay for every run, then the medians of each cell.
#
#   BEFORE=35f9213^ RUNS=3 bench/scripts/tail-compare.sh   # RATES="10 25" DURATION=40s
#   FANOUT_FLAGS=--delta RATES=10 bench/scripts/tail-compare.sh
#
# BEFORE is any git revision (default: the build before the ping spread);
# "after" is the working tree. Results: $out/{before,after}-RATE-N.json.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${OUT:-/tmp/edgerelay-bench}
mkdir -p "$out"
before=${BEFORE:-35f9213^}
tree=$(mktemp -d)
git -C "$repo" worktree add -q --detach "$tree" "$before"
(cd "$tree" && go build -o "$out/edgerelay-before" ./relay/cmd/edgerelay)
git -C "$repo" worktree remove --force "$tree"
(cd "$repo" && go build -o "$out/edgerelay-after" ./relay/cmd/edgerelay)

rm -f "$out"/before-*.json "$out"/after-*.json
export DURATION=${DURATION:-40s} OUT="$out"
for i in $(seq "${RUNS:-3}"); do
  builds="after before"
  [ $((i % 2)) -eq 0 ] && builds="before after"
  for r in ${RATES:-10 25}; do
    for b in $builds; do
      echo "== run $i, $r records/s, $b" >&2
      RELAY_BIN="$out/edgerelay-$b" LABEL="$b" RUN_OFFSET=$((i - 1)) RUNS=1 RATES="$r" "$here/tail.sh" >/dev/null
    done
  done
done
"$out/edgebench" report --medians "$out"/before-*.json "$out"/after-*.json | sed -n '/^| cell/,$p'
