#!/usr/bin/env bash
# Reproduces the overload figures in docs/performance.md: 15,000 subscribers
# over 100 channels, the feed at 1x, 2x and 4x the node's saturation rate
# (11,000 records/s = ~1.6 million deliveries/s queued on the 2-core
# development machine), 1 % of records priority; the relay once with
# conflation under overload (the default) and once with it off
# (overload.conflate_after: 1h, i.e. queue everything). edgebench fails the
# run if a priority publication or a final value did not reach every client.
#
#   bench/scripts/overload.sh                 # rates 11000 22000 44000, 20 s each
#   RATES="300 1200" DURATION=30s bench/scripts/overload.sh   # below saturation
#   POLICIES=conflate RATES=44000 bench/scripts/overload.sh   # one policy only
#   FANOUT_FLAGS="--delta --deflate" bench/scripts/overload.sh  # delta clients check every patch
source "$(dirname "$0")/common.sh"

kport=${KAFKA_PORT:-29092}
hport=${RELAY_PORT:-28000}
"$out/edgebench" broker --port "$kport" >"$out/broker.log" 2>&1 &
broker=$!
wait_port "$kport"
relay=
trap 'kill $relay $broker 2>/dev/null; wait 2>/dev/null' EXIT

echo "| policy | rate/s | conns | mode | deliveries/s | expected | p50 | p99 | max | gaps | out of order | bad deltas | wire B/delivery | relay B/conn idle | relay CPU s | closes | skipped | priority read | final values | relay RSS MB start/max/end | relay age p50/p99 |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for policy in ${POLICIES:-conflate queue}; do
  after=20ms
  [[ $policy == queue ]] && after=1h
  EDGERELAY_DEBUG=true EDGERELAY_OVERLOAD_CONFLATE_AFTER=$after "$out/edgerelay" serve \
    --listen "127.0.0.1:$hport" --brokers "127.0.0.1:$kport" >"$out/relay-$policy.log" 2>&1 &
  relay=$!
  wait_ready "$hport"
  for r in ${RATES:-11000 22000 44000}; do
    echo "== $policy at $r records/s" >&2
    row=$("$out/edgebench" fanout --url "ws://127.0.0.1:$hport/connection/websocket" --brokers "127.0.0.1:$kport" \
      --ramp 2500 --conns 15000 --procs 4 --channels 100 --rate "$r" --priority-every 100 ${FANOUT_FLAGS:-} \
      --duration "${DURATION:-20s}" --out "$out/overload-$policy-$r.json" 2>>"$out/overload.log" | tail -1) || true
    # drop the columns the policy and rate already say (conns..size)
    echo "| $policy | $r |$(echo "$row" | cut -d'|' -f2,7-)"
  done
  kill $relay; wait $relay 2>/dev/null || true
done
