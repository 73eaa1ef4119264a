#!/usr/bin/env bash
# Reproduces "Drain and node kill (cluster of 3)" in docs/performance.md:
# builds edgerelay and edgebench, starts a standalone broker (edgebench
# broker) and 3 relays gossiping into one cluster, each with history
# (channels.history_size HISTORY), cluster.drain.lb_delay 1s and
# cluster.drain.period 5s, and an operator token. Then one "edgebench fanout
# --reconnect" over the three: CONNS clients round-robin per connection,
# a feed of RATE records/s over CHANNELS channels for DURATION, and AT into
# the feed either (MODE=drain) POST /v1/drain to relay 1 or (MODE=kill)
# kill -9 relay 1. Relay 1's clients (close 3001, or the dropped TCP
# connection) reconnect to relay 2 and resubscribe with recover:true from
# the epoch and offset they last read. Prints the reconnect table (clients
# moved, reconnect p50/p99/max from losing the socket to the subscribe
# reply, publications recovered, missed updates (gaps), duplicates): the
# run exits 1 unless every client got every update once (0 gaps, 0
# duplicates, every final value, every moved client back).
#
#   MODE=drain bench/scripts/cluster-drain.sh
#   MODE=kill  bench/scripts/cluster-drain.sh
#   CONNS=3000 PROCS=2 MODE=kill bench/scripts/cluster-drain.sh   # smaller
source "$(dirname "$0")/common.sh"

mode=${MODE:-drain}
conns=${CONNS:-15000}
procs=${PROCS:-3}
ramp=${RAMP:-1500} # per worker
rate=${RATE:-200}
channels=${CHANNELS:-100}
duration=${DURATION:-20s}
at=${AT:-5} # seconds into the feed
history=${HISTORY:-100}
kport=${KAFKA_PORT:-29492}
hbase=${RELAY_PORT_BASE:-28500}
gbase=${GOSSIP_PORT_BASE:-27500}
token=edgebench-operator-token-0123456789
case $mode in drain | kill) ;; *) echo "MODE must be drain or kill" >&2; exit 2 ;; esac

pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null' EXIT
"$out/edgebench" broker --port "$kport" --topics odds,scores,bets >"$out/drain-broker.log" 2>&1 &
pids+=($!)
wait_port "$kport"
urls=()
relay_pids=()
for i in 1 2 3; do
  seeds=
  ((i > 1)) && seeds=127.0.0.1:$((gbase + 1))
  EDGERELAY_DEBUG=true EDGERELAY_OVERLOAD_CONFLATE_AFTER=1h EDGERELAY_NODE=relay-$i \
    EDGERELAY_CLUSTER_BIND=127.0.0.1:$((gbase + i)) EDGERELAY_CLUSTER_SEEDS=$seeds \
    EDGERELAY_CHANNELS_HISTORY_SIZE=$history EDGERELAY_WEBSOCKET_MAX_CONNECTIONS=$conns \
    EDGERELAY_CLUSTER_DRAIN_LB_DELAY=1s EDGERELAY_CLUSTER_DRAIN_PERIOD=5s EDGERELAY_HTTP_OPERATOR_TOKEN=$token \
    "$out/edgerelay" serve --listen "127.0.0.1:$((hbase + i))" --brokers "127.0.0.1:$kport" --log-level warn \
    >"$out/drain-relay-$i.log" 2>&1 &
  pids+=($!)
  relay_pids+=($!)
  wait_ready $((hbase + i))
  urls+=("ws://127.0.0.1:$((hbase + i))/connection/websocket")
done
alive() { curl -fs "127.0.0.1:$((hbase + 2))/v1/cluster" | jq '[.members[] | select(.state == "alive")] | length'; }
for _ in $(seq 300); do (($(alive) == 3)) && break; sleep 0.1; done
echo "cluster: $(alive) of 3 relays alive" >&2

# AT seconds after the feed starts (edgebench's log says so), act on relay 1.
log=$out/cluster-drain-$mode.log
: >"$log"
(
  until grep -q 'feeding' "$log" 2>/dev/null; do sleep 0.1; done
  sleep "$at"
  echo "$(date +%T.%N | cut -c1-12) $mode relay-1" >&2
  if [[ $mode == drain ]]; then
    curl -fsS -X POST -H "Authorization: Bearer $token" "127.0.0.1:$((hbase + 1))/v1/drain" >&2
  else
    kill -9 "${relay_pids[0]}"
  fi
) &
pids+=($!)
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "command: MODE=$mode edgebench fanout --reconnect --conns $conns --procs $procs --ramp $ramp --channels $channels --rate $rate --duration $duration --allow-skips=false --url <3 relays>; relay 1 ${mode}ed ${at}s into the feed"
status=0
"$out/edgebench" fanout --reconnect --url "$(IFS=,; echo "${urls[*]}")" --brokers "127.0.0.1:$kport" \
  --conns "$conns" --procs "$procs" --ramp "$ramp" --channels "$channels" --rate "$rate" --duration "$duration" \
  --allow-skips=false --out "$out/cluster-drain-$mode.json" 2>>"$log" || status=$?
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
grep -E 'drain|kill|verdict' "$log" | tail -5 || true
exit $status
