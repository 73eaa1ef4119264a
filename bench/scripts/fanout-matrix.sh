#!/usr/bin/env bash
# Reproduces the fan-out figures in docs/performance.md on one machine:
# builds edgerelay and edgebench, starts a standalone broker and the relay
# (each its own process, so the relay's RSS and CPU are its own), then runs
# the edgebench fanout scenarios and prints one Markdown row each.
#
#   bench/scripts/fanout-matrix.sh            # all scenarios (~10 minutes)
#   bench/scripts/fanout-matrix.sh idle       # one group: idle, rate, latency, stalled, modes, protobuf
#   RUNS=3 bench/scripts/fanout-matrix.sh protobuf   # JSON vs Protobuf clients, alternated, 3 rounds (default 1)
source "$(dirname "$0")/common.sh"

kport=${KAFKA_PORT:-29092}
hport=${RELAY_PORT:-28000}
"$out/edgebench" broker --port "$kport" >"$out/broker.log" 2>&1 &
broker=$!
wait_port "$kport"
# Conflation off: these scenarios measure raw delivery capacity and latency
# with every update delivered (overload.sh measures conflation).
EDGERELAY_DEBUG=true EDGERELAY_OVERLOAD_CONFLATE_AFTER=1h "$out/edgerelay" serve --listen "127.0.0.1:$hport" --brokers "127.0.0.1:$kport" >"$out/relay.log" 2>&1 &
relay=$!
trap 'kill $relay $broker 2>/dev/null; wait 2>/dev/null' EXIT
wait_ready "$hport"

run() { # name, then edgebench fanout flags
  local name=$1; shift
  echo "== $name: $*" >&2
  "$out/edgebench" fanout --url "ws://127.0.0.1:$hport/connection/websocket" --brokers "127.0.0.1:$kport" --ramp "${RAMP:-2500}" \
    --out "$out/$name.json" "$@" | tail -1 | sed "s/^/| $name /"
}

group=${1:-all}
echo "| scenario | conns | stalled | channels | rate/s | size B | mode | deliveries/s | expected | p50 | p99 | max | gaps | out of order | bad deltas | wire B/delivery | relay B/conn idle | relay CPU s | closes | skipped | priority read | final values | relay RSS MB start/max/end | relay age p50/p99 |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
if [[ $group == all || $group == idle ]]; then
  for i in 1 2 3; do run idle-15k-$i --conns 15000 --procs 4 --rate 1 --duration 3s; done
fi
if [[ $group == all || $group == rate ]]; then
  for r in 10 20 30; do run rate-1ch-$r --conns 15000 --procs 4 --channels 1 --rate "$r" --duration 15s; done
fi
if [[ $group == all || $group == latency ]]; then
  for r in 100 200 400; do run latency-100ch-$r --conns 15000 --procs 4 --channels 100 --rate "$r" --duration 15s; done
fi
if [[ $group == all || $group == stalled ]]; then
  for s in 0 0.1; do run stalled-$s --conns 15000 --procs 4 --channels 100 --rate 200 --stalled "$s" --duration 20s; done
fi
if [[ $group == all || $group == modes ]]; then
  # The same load with clients on full JSON and on fossil delta + deflate,
  # alternated so that both see the same machine.
  for i in 1 2; do
    run rate-1ch-20-full-$i --conns 15000 --procs 4 --channels 1 --rate 20 --duration 15s
    run rate-1ch-20-delta-deflate-$i --conns 15000 --procs 4 --channels 1 --rate 20 --duration 15s --delta --deflate
    run latency-100ch-200-full-$i --conns 15000 --procs 4 --channels 100 --rate 200 --duration 15s
    run latency-100ch-200-delta-deflate-$i --conns 15000 --procs 4 --channels 100 --rate 200 --duration 15s --delta --deflate
  done
fi
if [[ $group == all || $group == protobuf ]]; then
  # JSON and Protobuf clients (edgebench fanout --protobuf), full and
  # delta + deflate, alternated so that both see the same machine: memory
  # per idle connection, then the two fan-out loads of "modes".
  for i in $(seq "${RUNS:-1}"); do
    run idle-15k-json-$i --conns 15000 --procs 4 --rate 1 --duration 3s
    run idle-15k-protobuf-$i --conns 15000 --procs 4 --rate 1 --duration 3s --protobuf
    for load in "rate-1ch-20 --channels 1 --rate 20" "latency-100ch-200 --channels 100 --rate 200"; do
      set -- $load
      name=$1; shift
      run $name-json-$i --conns 15000 --procs 4 --duration 15s "$@"
      run $name-protobuf-$i --conns 15000 --procs 4 --duration 15s "$@" --protobuf
      run $name-json-delta-deflate-$i --conns 15000 --procs 4 --duration 15s "$@" --delta --deflate
      run $name-protobuf-delta-deflate-$i --conns 15000 --procs 4 --duration 15s "$@" --protobuf --delta --deflate
    done
  done
fi
