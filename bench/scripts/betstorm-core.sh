#!/usr/bin/env bash
# The bet path under storm on one core (issue 20): the relay pinned to core
# 0 with GOMAXPROCS=1; the broker, the odds fan-out clients and the bet
# generator on core 1 (taskset), so the CPU figure is the relay's alone.
# Odds fan-out runs throughout (FANOUT_CONNS connections on 10 channels,
# 10 records/s of ~490 B JSON). First a quiet window of DURATION with the
# fan-out only (its relay CPU is subtracted below), then "edgebench bets"
# at each rate of RATES. One Markdown row per rate:
#
#   accepted/CPU-s     accepted bets per relay CPU-second, fan-out included
#   net accepted/CPU-s accepted bets per relay CPU-second above the quiet
#                      window's fan-out CPU rate
#   relay reply p50/p99 the relay's own bet read → reply queued time
#                      (edgerelay_bet_reply_seconds, over the run)
#   Kafka ack p50/p99  the relay's own produce → acknowledgement time
#                      (edgerelay_bet_kafka_ack_seconds); most of the reply
#                      time (a bet the dedup reader read back first is
#                      answered before its ack)
#   steal ms/s         CPU time the hypervisor took from this machine's
#                      CPUs during the bets, all together (0 on bare metal)
#
#   bench/scripts/betstorm-core.sh                  # RATES="10000 20000" DURATION=15s RUNS=1
#   RELAY_BIN=/tmp/base/edgerelay bench/scripts/betstorm-core.sh   # another build of the relay
#   RELAY_ENV="EDGERELAY_BETS_LINGER=2ms" bench/scripts/betstorm-core.sh
#   BETS_ENV= bench/scripts/betstorm-core.sh   # the generator with its default GC
#   PROFILE=1 RATES=10000 DURATION=30s bench/scripts/betstorm-core.sh
#
# The generator runs with GOGC=off GOMEMLIMIT=2GiB (BETS_ENV): it shares
# core 1 with the broker and the fan-out clients, and its collections
# there delayed its reading of replies by tens of ms, which the figure
# then charged to the relay (docs/performance.md, "Bet storm on one core").
#
# PROFILE=1: during the first bet run, a CPU profile of the relay (6 s,
# $out/bs-cpu.prof) and then "strace -c -f" for 4 s ($out/bs-strace.txt,
# with the bets accepted meanwhile, for syscalls per bet). strace slows
# the relay several times over: that run's latency is not comparable.
source "$(dirname "$0")/common.sh"

kport=${KAFKA_PORT:-29492}
hport=${RELAY_PORT:-28400}
relay_bin=${RELAY_BIN:-$out/edgerelay}
dur=${DURATION:-15s}
d=${dur%s}
rates=${RATES:-10000 20000}
fconns=${FANOUT_CONNS:-6000}
secret=betstorm-core-secret-0123456789abcdef

taskset -c 1 "$out/edgebench" broker --port "$kport" --topics odds,scores,bets >"$out/bs-broker.log" 2>&1 &
broker=$!
wait_port "$kport"
# shellcheck disable=SC2086 # RELAY_ENV is a list of VAR=value words
env GOMAXPROCS=1 EDGERELAY_DEBUG=true EDGERELAY_AUTH_HMAC_SECRETS=$secret ${RELAY_ENV:-} \
  taskset -c 0 "$relay_bin" serve --listen "127.0.0.1:$hport" --brokers "127.0.0.1:$kport" >"$out/bs-relay.log" 2>&1 &
relay=$!
fan=
trap 'kill $fan $relay $broker 2>/dev/null; wait 2>/dev/null' EXIT
wait_ready "$hport"

cpu() { curl -fs "127.0.0.1:$hport/metrics" | awk '$1 == "process_cpu_seconds_total" {print $2}'; }
metric() { curl -fs "127.0.0.1:$hport/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

nr=$(wc -w <<<"$rates")
runs=${RUNS:-1}
# The feed outlasts the quiet window and every bet run (each ~10 s of setup).
fdur=$(( (d + 15) * (nr * runs + 1) + 10 ))
taskset -c 1 "$out/edgebench" fanout --url "ws://127.0.0.1:$hport/connection/websocket" --brokers "127.0.0.1:$kport" \
  --conns "$fconns" --procs 2 --channels 10 --rate 10 --size 490 --duration "${fdur}s" --ramp 2500 \
  --out "$out/bs-fanout.json" >"$out/bs-fanout.log" 2>&1 &
fan=$!
for _ in $(seq 300); do
  [ "$(metric edgerelay_connections)" = "$fconns" ] && break
  sleep 0.1
done
sleep 3 # the feed has started
c0=$(cpu); sleep "$d"; c1=$(cpu)
quiet=$(awk -v a="$c0" -v b="$c1" -v d="$d" 'BEGIN {printf "%.3f", (b - a) / d}')
echo "fan-out alone: $fconns connections, relay CPU $quiet s/s" >&2

echo "| rate/s | sent | accepted | p50 | p99 | max | relay reply p50/p99 | Kafka ack p50/p99 | relay CPU s | accepted/CPU-s | net accepted/CPU-s | steal ms/s |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for i in $(seq "$runs"); do
  for r in $rates; do
    echo "== run $i, bets at $r/s" >&2
    f="$out/bs-$r-$i.json"
    if [ -n "${PROFILE:-}" ] && [ "$i.$r" = "1.${rates%% *}" ]; then
      touch "$out/bs-bets.log"
      n0=$(grep -c 'clients connected' "$out/bs-bets.log" || true)
      (
        # from 3 s after the clients are connected and the bets begin
        until [ "$(grep -c 'clients connected' "$out/bs-bets.log" || true)" -gt "${n0:-0}" ]; do sleep 0.2; done
        sleep 3
        curl -fs -o "$out/bs-cpu.prof" "127.0.0.1:$hport/debug/pprof/profile?seconds=6"
        a0=$(metric 'edgerelay_bets_total{result="accepted"}')
        timeout -s INT 4 strace -c -f -p "$relay" -o "$out/bs-strace.txt" >/dev/null 2>&1 || true
        a1=$(metric 'edgerelay_bets_total{result="accepted"}')
        echo "bets accepted during strace: $(awk -v a="$a0" -v b="$a1" 'BEGIN {print b - a}')" >>"$out/bs-strace.txt"
      ) &
    fi
    # shellcheck disable=SC2086 # BETS_ENV is a list of VAR=value words
    env ${BETS_ENV-GOGC=off GOMEMLIMIT=2GiB} taskset -c 1 "$out/edgebench" bets --url "ws://127.0.0.1:$hport/connection/websocket" --brokers "127.0.0.1:$kport" \
      --secret "$secret" --watch "" --conns "${CONNS:-4000}" --rate "$r" --duration "$dur" --out "$f" \
      >>"$out/bs-bets.log" 2>&1 || echo "edgebench bets: not every bet accepted (see $out/bs-bets.log)" >&2
    jq -r --argjson q "$quiet" --argjson d "$d" '
      def ms: . / 1e6 | . * 10 | round / 10 | tostring + " ms";
      "| \(.config.Rate) | \(.sent) | \(.accepted) | \(.p50 | ms) | \(.p99 | ms) | \(.max | ms) | \(.relay_reply_p50 | ms) / \(.relay_reply_p99 | ms) | \(.kafka_ack_p50 | ms) / \(.kafka_ack_p99 | ms) | \(.relay_cpu_seconds * 10 | round / 10) | \(.accepted / .relay_cpu_seconds | round) | \(.accepted / (.relay_cpu_seconds - $q * $d) | round) | \(.steal.per_cpu_ms_per_s // [] | add // 0 | . * 10 | round / 10) |"' "$f"
  done
done
