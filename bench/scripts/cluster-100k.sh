#!/usr/bin/env bash
# Reproduces "100,000 sockets on one box (cluster of 6)" in
# docs/performance.md: builds edgerelay and edgebench, starts a standalone
# broker (edgebench broker) and RELAYS relay processes that gossip into one
# cluster (cluster.bind 127.0.0.1:27101.., each seeded with the first),
# checks GET /v1/cluster on the first lists every relay alive, then runs
# one "edgebench fanout" over all relays: CONNS subscribed WebSocket
# clients from PROCS worker processes (127.0.0.10, .11, …), spread
# round-robin per connection over the relays, each worker opening RAMP
# connections/s, then a feed of RATE records/s over CHANNELS channels for
# DURATION. Every client must receive every update: 0 gaps, 0 duplicates
# (conflation off, as in fanout-matrix.sh), else the run exits 1.
# Prints the load average before and after, the fan-out table with one row
# per relay and the total, and the load generator's own CPU time.
#
#   bench/scripts/cluster-100k.sh                      # 100,000 clients, 6 relays, 8 workers
#   CONNS=30000 PROCS=3 bench/scripts/cluster-100k.sh  # smaller
#
# A process may open at most 20,000 files here: each relay holds
# CONNS/RELAYS sockets (websocket.max_connections is set to MAXCONN), each
# worker CONNS/PROCS.
source "$(dirname "$0")/common.sh"

conns=${CONNS:-100000}
relays=${RELAYS:-6}
procs=${PROCS:-8}
ramp=${RAMP:-150} # per worker: 8 × 150 = 1,200 connections/s in all
rate=${RATE:-10}
channels=${CHANNELS:-100}
duration=${DURATION:-60s}
maxconn=${MAXCONN:-18000}
kport=${KAFKA_PORT:-29392}
hbase=${RELAY_PORT_BASE:-28400} # relay i listens on 127.0.0.1:hbase+i
gbase=${GOSSIP_PORT_BASE:-27400} # and gossips on 127.0.0.1:gbase+i
if ((conns > relays * maxconn || conns > procs * 19000)); then
  echo "CONNS=$conns needs RELAYS × MAXCONN and PROCS × 19000 above it" >&2
  exit 2
fi

pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null' EXIT
"$out/edgebench" broker --port "$kport" --topics odds,scores,bets >"$out/cluster-broker.log" 2>&1 &
pids+=($!)
wait_port "$kport"
urls=()
for i in $(seq 1 "$relays"); do
  seeds=
  ((i > 1)) && seeds=127.0.0.1:$((gbase + 1))
  # history_size small: enough to recover a short gap, little memory.
  EDGERELAY_DEBUG=true EDGERELAY_OVERLOAD_CONFLATE_AFTER=1h EDGERELAY_NODE=relay-$i \
    EDGERELAY_CLUSTER_BIND=127.0.0.1:$((gbase + i)) EDGERELAY_CLUSTER_SEEDS=$seeds \
    EDGERELAY_CHANNELS_HISTORY_SIZE=16 EDGERELAY_WEBSOCKET_MAX_CONNECTIONS=$maxconn \
    "$out/edgerelay" serve --listen "127.0.0.1:$((hbase + i))" --brokers "127.0.0.1:$kport" --log-level warn \
    >"$out/cluster-relay-$i.log" 2>&1 &
  pids+=($!)
  wait_ready $((hbase + i))
  urls+=("ws://127.0.0.1:$((hbase + i))/connection/websocket")
done

alive() { curl -fs "127.0.0.1:$((hbase + 1))/v1/cluster" | jq '[.members[] | select(.state == "alive")] | length'; }
for _ in $(seq 300); do (($(alive) == relays)) && break; sleep 0.1; done
echo "cluster: $(alive) of $relays relays alive in GET /v1/cluster on relay-1" >&2
(($(alive) == relays)) || { curl -s "127.0.0.1:$((hbase + 1))/v1/cluster" >&2; exit 1; }

# The members' own view during the run (gossiped connection counts), and
# the relays' memory summed (RSS, Go heap in use, the heap size that
# triggers the next GC), every 5 s.
(while sleep 5; do curl -fs "127.0.0.1:$((hbase + 1))/v1/cluster" | jq -c . || true; done >"$out/cluster-view.jsonl") &
pids+=($!)
(while sleep 5; do
  for i in $(seq 1 "$relays"); do curl -fs "127.0.0.1:$((hbase + i))/metrics" || true; done |
    awk -v t="$(date +%T)" '/^process_resident_memory_bytes /{r+=$2} /^go_memstats_heap_inuse_bytes /{h+=$2}
      /^go_memstats_next_gc_bytes /{g+=$2} END{printf "%s %.0f %.0f %.0f\n", t, r/1048576, h/1048576, g/1048576}'
done >"$out/cluster-memory.txt") &
pids+=($!)
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "command: edgebench fanout --conns $conns --procs $procs --ramp $ramp --channels $channels --rate $rate --duration $duration --allow-skips=false --url <$relays relays>"
status=0
{ TIMEFORMAT='edgebench CPU s (parent and workers): user %U, system %S; wall %R s'; time "$out/edgebench" fanout \
    --url "$(IFS=,; echo "${urls[*]}")" --brokers "127.0.0.1:$kport" \
    --conns "$conns" --procs "$procs" --ramp "$ramp" --channels "$channels" --rate "$rate" --duration "$duration" \
    --allow-skips=false --out "$out/cluster-100k.json" 2>>"$out/cluster-100k.log" || status=$?; } 2>&1
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
# The view from relay-1 when the members gossiped the most connections.
echo "relays' memory summed, MB, every 15 s (time RSS heap-in-use next-GC-target):"
awk 'NR % 3 == 1 {printf "  %s\n", $0}' "$out/cluster-memory.txt"
echo "GET /v1/cluster on relay-1 at the most connections:"
jq -s -r 'max_by([.members[].connections] | add) | .members[] |
  "  \(.name) \(.state) connections=\(.connections) subscriptions=\(.subscriptions) load=\(.load)"' "$out/cluster-view.jsonl"
exit $status
