#!/usr/bin/env bash
# Map subscriptions (issue 18) through the relay: subscribe time and wire
# bytes of a 1,000- and a 10,000-key map (the relay's default page, 100,
# and a page of 25; JSON and Protobuf; 3 subscribes each, median), relay
# memory per map entry against channels in no map, and the fan-out of map
# updates against the same updates on ordinary channels: 1,000 clients
# with one map subscription each to a 20-key map, 1,000 with 20 ordinary
# subscriptions each to the 20 channels of a second map of that shape, 100
# updates/s round robin over the keys (100,000 deliveries/s to the set
# whose map is updated), 5 s windows alternating map / channels, 3 rounds.
# (The small page is 25: the relay raises a limit under 20 on a
# 10,000-key map, docs/protocol.md, "Map subscriptions".)
#
# A standalone broker and the relay (debug: true for the memory figures,
# conflation off so that both sets get every update) as separate
# processes, RUNS times against the same relay (each run makes its own
# maps).
#
#   bench/scripts/maps.sh                       # RUNS=3
#   SUBSCRIBERS=2000 KEYS=50 RATE=50 bench/scripts/maps.sh
#   SIZES=1000 PAGES=0 SUBSCRIBES=1 MAPS_FLAGS=--fanout-protobuf bench/scripts/maps.sh   # Protobuf fan-out
source "$(dirname "$0")/common.sh"

kport=${KAFKA_PORT:-29692}
hport=${RELAY_PORT:-28600}
cat >"$out/maps.yaml" <<YAML
debug: true
channels:
  maps:
    rules: [{prefix: "bench:map:", depth: 1}]
    max_maps: 10000
    max_entries: 10000
YAML
"$out/edgebench" broker --port "$kport" --topics odds,scores,bets >"$out/broker.log" 2>&1 &
broker=$!
wait_port "$kport"
EDGERELAY_OVERLOAD_CONFLATE_AFTER=1h "$out/edgerelay" serve --config "$out/maps.yaml" \
  --listen "127.0.0.1:$hport" --brokers "127.0.0.1:$kport" >"$out/relay.log" 2>&1 &
relay=$!
trap 'kill $relay $broker 2>/dev/null; wait 2>/dev/null' EXIT
wait_ready "$hport"
# Something else on these ports (another run) would answer in their place.
sleep 0.5; kill -0 $broker $relay 2>/dev/null || { echo "broker or relay exited (ports $kport, $hport taken?):" >&2; cat "$out/broker.log" "$out/relay.log" >&2; exit 1; }

for i in $(seq "${RUNS:-3}"); do
  echo "== run $i" >&2
  "$out/edgebench" maps --url "ws://127.0.0.1:$hport/connection/websocket" --brokers "127.0.0.1:$kport" \
    --sizes "${SIZES:-1000,10000}" --pages "${PAGES:-0,25}" --encodings "${ENCODINGS:-json,protobuf}" --runs "${SUBSCRIBES:-3}" \
    --subscribers "${SUBSCRIBERS:-1000}" --keys "${KEYS:-20}" --rate "${RATE:-100}" --window "${WINDOW:-5s}" --rounds "${ROUNDS:-3}" \
    --out "$out/maps-$i.json" ${MAPS_FLAGS:-}
done
