#!/usr/bin/env bash
# Tail latency at normal load (issue 20): the relay pinned to core 0 with
# GOMAXPROCS=1; broker and clients on core 1. 15,000 connections on 10
# channels (1,500 subscribers each), ~490 B JSON values, for each rate in
# RATES (records/s in), a feed long enough to pass the first round of
# server pings (websocket.ping_interval, 25 s).
#
#   bench/scripts/tail.sh                    # RATES="10 25" DURATION=60s RUNS=1
#   FANOUT_FLAGS=--delta bench/scripts/tail.sh
#
# RELAY_BIN runs another relay binary (bench/scripts/tail-compare.sh);
# results go to $out/$LABEL-RATE-N.json (LABEL default "tail", N from
# RUN_OFFSET+1).
source "$(dirname "$0")/common.sh"
relay_bin=${RELAY_BIN:-$out/edgerelay}

kport=${KAFKA_PORT:-29092}
hport=${RELAY_PORT:-28000}
taskset -c 1 "$out/edgebench" broker --port "$kport" >"$out/broker.log" 2>&1 &
broker=$!
wait_port "$kport"
GOMAXPROCS=1 EDGERELAY_DEBUG=true EDGERELAY_OVERLOAD_CONFLATE_AFTER=1h taskset -c 0 "$relay_bin" serve \
  --listen "127.0.0.1:$hport" --brokers "127.0.0.1:$kport" >"$out/relay.log" 2>&1 &
relay=$!
trap 'kill $relay $broker 2>/dev/null; wait 2>/dev/null' EXIT
wait_ready "$hport"

off=${RUN_OFFSET:-0}
for i in $(seq $((off + 1)) $((off + ${RUNS:-1}))); do
  for r in ${RATES:-10 25}; do
    echo "== run $i, $r records/s" >&2
    taskset -c 1 "$out/edgebench" fanout --url "ws://127.0.0.1:$hport/connection/websocket" --brokers "127.0.0.1:$kport" \
      --conns "${CONNS:-15000}" --procs 4 --channels 10 --rate "$r" --size 490 --duration "${DURATION:-60s}" --ramp "${RAMP:-2500}" \
      --out "$out/${LABEL:-tail}-$r-$i.json" ${FANOUT_FLAGS:-} | tail -3
  done
done
