#!/usr/bin/env bash
# Reproduces the bet-storm figures in docs/performance.md: builds edgerelay
# and edgebench, starts "edgerelay dev" (embedded Kafka and the odds
# simulator, so odds fan-out runs during the storm), then runs
# "edgebench bets" at rising rates and prints one Markdown row each, with
# the load generator's own CPU time (it shares the machine).
#
#   bench/scripts/bet-storm.sh                 # rates 2500 5000 10000 20000
#   RATES="20000" DURATION=30s bench/scripts/bet-storm.sh
source "$(dirname "$0")/common.sh"

kport=${KAFKA_PORT:-29192}
hport=${RELAY_PORT:-28100}
# --bookmaker=false: the relay alone (the simulated bookmaker would read
# every bet and write two results that the relay reads back).
"$out/edgerelay" dev --bookmaker=false --listen "127.0.0.1:$hport" --kafka-port "$kport" >"$out/dev.log" 2>&1 &
relay=$!
trap 'kill $relay 2>/dev/null; wait 2>/dev/null' EXIT
wait_ready "$hport"

echo "| clients | rate/s | accepted/s | sent | accepted | rejected | unanswered | p50 | p99 | max | odds pushes/s | relay CPU s | edgebench CPU s |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for r in ${RATES:-2500 5000 10000 20000}; do
  echo "== bets at $r/s" >&2
  # 4000 users, 0.6-5 bets/s each: under the default bets.rate_per_user (10/s).
  # TIMEFORMAT makes bash's time print the generator's CPU seconds.
  row=$( { TIMEFORMAT='%U %S'; time "$out/edgebench" bets \
      --url "ws://127.0.0.1:$hport/connection/websocket" --brokers "127.0.0.1:$kport" \
      --conns "${CONNS:-4000}" --rate "$r" --duration "${DURATION:-15s}" --out "$out/bets-$r.json" 2>>"$out/bets.log" || true; } 2>"$out/bets-$r.time" | tail -1)
  cpu=$(awk '{printf "%.1f", $1 + $2}' "$out/bets-$r.time")
  echo "$row $cpu |"
done
