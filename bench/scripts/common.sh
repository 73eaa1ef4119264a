# Sourced by the bench scripts: builds edgerelay and edgebench into $out
# (OUT, default /tmp/edgerelay-bench) from the repository root, and
# defines wait_ready PORT (polls the relay's /readyz, at most 10 s) and
# wait_port PORT (until something listens on 127.0.0.1:PORT, at most 10 s:
# start the relay after its broker, or its consumer may begin seconds late).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=${OUT:-/tmp/edgerelay-bench}
mkdir -p "$out"
go build -o "$out/edgerelay" ./relay/cmd/edgerelay
go build -o "$out/edgebench" ./bench/cmd/edgebench

wait_ready() {
  for _ in $(seq 100); do curl -fs "127.0.0.1:$1/readyz" >/dev/null && return 0; sleep 0.1; done
  echo "relay on port $1 not ready after 10 s" >&2
  return 1
}

wait_port() {
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on port $1 after 10 s" >&2
  return 1
}
