#!/usr/bin/env bash
# The relay against a ceiling (issue 20): "edgebench ceiling", a bare
# writer that reads the same feed from Kafka and writes each record as the
# relay's push frame to every subscriber with one write(2), nothing else,
# and edgerelay, alternated (ceiling, relay, ceiling, relay ...), each
# pinned to core 0 with GOMAXPROCS=1 and started fresh for its run; broker
# and clients on core 1. The load is tail.sh's: 15,000 connections on 10
# channels, ~490 B JSON values, for each rate in RATES (records/s in).
# Prints, per rate, CPU seconds per million deliveries of both, the
# relay's efficiency (ceiling CPU / relay CPU; medians of the runs), and
# p50/p99/max of both.
#
#   bench/scripts/ceiling.sh                             # RATES="10 25" DURATION=60s RUNS=3
#   RELAY_ENV=EDGERELAY_WEBSOCKET_PING_INTERVAL=0 bench/scripts/ceiling.sh   # the relay without heartbeats
#   CONNS=400 RUNS=1 DURATION=3s bench/scripts/ceiling.sh                    # a quick try of the script
#   FANOUT_FLAGS=--delta RATES=10 bench/scripts/ceiling.sh   # fossil delta clients: both send patches
#
# Also: RAMP (connections/s per worker), KAFKA_PORT, RELAY_PORT,
# CEILING_PORT, OUT (results: <kind>-<rate>-<run>.json and .log, the
# ceiling's and relay's logs, ceiling-runs.tsv).
source "$(dirname "$0")/common.sh"

kport=${KAFKA_PORT:-29292}
hport=${RELAY_PORT:-28200}
cport=${CEILING_PORT:-28201}
runs=${RUNS:-3}
rates=${RATES:-10 25}
taskset -c 1 "$out/edgebench" broker --port "$kport" --topics odds,scores,bets >"$out/broker.log" 2>&1 &
broker=$!
pid=
trap 'kill $pid $broker 2>/dev/null; wait 2>/dev/null' EXIT
wait_port "$kport"

# run KIND RATE RUN PORT: one fanout run; a failed verdict is reported and
# its figures kept.
run() {
  # shellcheck disable=SC2086 # FANOUT_FLAGS is a list of flags
  taskset -c 1 "$out/edgebench" fanout --url "ws://127.0.0.1:$4/connection/websocket" --brokers "127.0.0.1:$kport" \
    --conns "${CONNS:-15000}" --procs 4 --channels 10 --rate "$2" --size 490 --duration "${DURATION:-60s}" --ramp "${RAMP:-2500}" ${FANOUT_FLAGS:-} \
    --out "$out/$1-$2-$3.json" >/dev/null 2>"$out/$1-$2-$3.log" || echo "$1, $2/s, run $3: $(tail -1 "$out/$1-$2-$3.log")" >&2
}

for i in $(seq "$runs"); do
  for r in $rates; do
    echo "== run $i, $r records/s: ceiling, then relay" >&2
    GOMAXPROCS=1 taskset -c 0 "$out/edgebench" ceiling --listen "127.0.0.1:$cport" --brokers "127.0.0.1:$kport" >>"$out/ceiling.log" 2>&1 &
    pid=$!
    wait_port "$cport"
    run ceiling "$r" "$i" "$cport"
    kill "$pid"; wait "$pid" || true
    # As tail.sh runs it; a drain without delays, so that it stops at once.
    env GOMAXPROCS=1 EDGERELAY_DEBUG=true EDGERELAY_OVERLOAD_CONFLATE_AFTER=1h \
      EDGERELAY_CLUSTER_DRAIN_LB_DELAY=0 EDGERELAY_CLUSTER_DRAIN_PERIOD=0 ${RELAY_ENV:-} \
      taskset -c 0 "$out/edgerelay" serve --listen "127.0.0.1:$hport" --brokers "127.0.0.1:$kport" >>"$out/relay.log" 2>&1 &
    pid=$!
    wait_ready "$hport"
    run relay "$r" "$i" "$hport"
    kill "$pid"; wait "$pid" || true
  done
done
pid=

# One line per run: kind rate run cpu_s deliveries p50 p99 max (ns) gaps
# clients-on-the-final-value.
for r in $rates; do
  for i in $(seq "$runs"); do
    for k in ceiling relay; do
      jq -r --arg k "$k" --arg r "$r" --arg i "$i" \
        '[$k, $r, $i, .relay_cpu_seconds, .clients.received, .p50, .p99, .max, .clients.gaps, .final_correct] | @tsv' "$out/$k-$r-$i.json"
    done
  done
done >"$out/ceiling-runs.tsv"

echo
echo "| records/s | run | ceiling CPU s/M deliveries | relay CPU s/M | efficiency (ceiling/relay) | ceiling p50 / p99 / max ms | relay p50 / p99 / max ms | gaps ceiling/relay | clients on the final value ceiling/relay |"
echo "|---|---|---|---|---|---|---|---|---|"
awk -F'\t' '
function med(a, n,   i, j, t) { for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
  return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }
function lat(k, r, i) { return sprintf("%.1f / %.1f / %.0f", p50[k,r,i]/1e6, p99[k,r,i]/1e6, mx[k,r,i]/1e6) }
{ k = $1; r = $2; i = $3; spm[k,r,i] = $5 > 0 ? $4 / $5 * 1e6 : 0; p50[k,r,i] = $6; p99[k,r,i] = $7; mx[k,r,i] = $8; gaps[k,r,i] = $9; final[k,r,i] = $10
  if (!(r in seen)) { seen[r] = 1; order[++nr] = r } if (i > runs) runs = i }
END {
  for (x = 1; x <= nr; x++) {
    r = order[x]
    for (i = 1; i <= runs; i++) {
      printf "| %s | %d | %.2f | %.2f | %.0f %% | %s | %s | %d/%d | %d/%d |\n", r, i, spm["ceiling",r,i], spm["relay",r,i],
        (spm["relay",r,i] > 0 ? 100 * spm["ceiling",r,i] / spm["relay",r,i] : 0), lat("ceiling",r,i), lat("relay",r,i), gaps["ceiling",r,i], gaps["relay",r,i],
        final["ceiling",r,i], final["relay",r,i]
      c[i] = spm["ceiling",r,i]; e[i] = spm["relay",r,i]
      c50[i] = p50["ceiling",r,i]/1e6; c99[i] = p99["ceiling",r,i]/1e6; cmx[i] = mx["ceiling",r,i]/1e6
      e50[i] = p50["relay",r,i]/1e6; e99[i] = p99["relay",r,i]/1e6; emx[i] = mx["relay",r,i]/1e6
    }
    mc = med(c, runs); me = med(e, runs)
    printf "| %s | median | %.2f | %.2f | **%.0f %%** | %.1f / %.1f / %.0f | %.1f / %.1f / %.0f | | |\n", r, mc, me, (me > 0 ? 100 * mc / me : 0),
      med(c50, runs), med(c99, runs), med(cmx, runs), med(e50, runs), med(e99, runs), med(emx, runs)
  }
}' "$out/ceiling-runs.tsv"
