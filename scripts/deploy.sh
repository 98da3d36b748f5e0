#!/usr/bin/env bash
# Starts or stops a development mesh of local node processes on loopback.
# Each node serves its API over HTTPS with its certificate from the mesh CA
# in DIR/ca; clients verify it with that CA: agent-mesh status --ca DIR/ca.
#
#   scripts/deploy.sh development [N]   CA, keys, certificates and N nodes (default 5)
#   scripts/deploy.sh stop              stops the nodes it started (by recorded PID)
#   scripts/deploy.sh status            prints each node's /v1/status
#
# Environment:
#   AGENT_MESH_BIN         the binary (default: target/debug/agent-mesh, built if missing)
#   AGENT_MESH_DEPLOY_DIR  where keys, configs, data and logs go (default: ./deploy-dev)
#   AGENT_MESH_BASE_PORT   node i listens on TCP and QUIC port BASE+i (default: 7100)
#   AGENT_MESH_WAIT_S      how long to wait for the mesh to connect (default: 60)
#   AGENT_MESH_DEPLOY_DATA MNIST IDX folder, or builtin:mnist-10k (the default: the subset built
#                          into the binary); node i trains on shard i of N
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${AGENT_MESH_DEPLOY_DIR:-$PWD/deploy-dev}"
BIN="${AGENT_MESH_BIN:-$ROOT/target/debug/agent-mesh}"
BASE_PORT="${AGENT_MESH_BASE_PORT:-7100}"
WAIT_S="${AGENT_MESH_WAIT_S:-60}"
DATA="${AGENT_MESH_DEPLOY_DATA:-builtin:mnist-10k}"
MESH_ID="dev"

die() { echo "deploy.sh: $*" >&2; exit 1; }

ensure_binary() {
  if [[ ! -x "$BIN" ]]; then
    echo "building agent-mesh ..."
    (cd "$ROOT" && cargo build -p agent-mesh) || die "build failed"
  fi
}

# zone_of I -> node I's zone: dev-a, dev-b, dev-c in turn (the committee
# and the final aggregators spread across them)
zone_of() {
  local zones=(a b c)
  echo "dev-${zones[$(( ($1 - 1) % 3 ))]}"
}

# node_config I -> writes DIR/node-I/node.toml
node_config() {
  local i="$1" port=$((BASE_PORT + $1))
  local bootstrap=""
  if [[ "$i" -ne 1 ]]; then
    bootstrap="\"/ip4/127.0.0.1/tcp/$((BASE_PORT + 1))\""
  fi
  cat > "$DIR/node-$i/node.toml" <<TOML
mesh_id = "$MESH_ID"
data_dir = "data"
zone = "$(zone_of "$i")"

[identity]
key = "node.key.pem"
cert = "node.cert.pem"
ca_cert = "../ca/ca.cert.pem"
ca_pin = "../ca/ca.pin"

[network]
listen = ["/ip4/127.0.0.1/tcp/$port", "/ip4/127.0.0.1/udp/$port/quic-v1"]
bootstrap = [$bootstrap]
mdns = false
seed = $i

[http]
addr = "127.0.0.1:0"

[consensus]
bootstrap_expect = $(( N < 3 ? N : 3 ))

[data]
dir = "$DATA"
shards = $N
shard = $((i - 1))
TOML
}

http_url() {
  local info="$DIR/node-$1/data/node.json"
  [[ -f "$info" ]] || return 1
  sed -n 's/.*"http_url": *"\([^"]*\)".*/\1/p' "$info"
}

development() {
  N="${1:-5}"
  [[ "$N" =~ ^[0-9]+$ && "$N" -ge 1 && "$N" -le 64 ]] || die "N must be 1 to 64, got '$N'"
  [[ -f "$DIR/pids" ]] && die "a mesh is already running from $DIR (run: $0 stop)"
  ensure_binary
  mkdir -p "$DIR"
  if [[ ! -f "$DIR/ca/ca.cert.pem" ]]; then
    "$BIN" ca init --out "$DIR/ca" --name "agent-mesh $MESH_ID CA" >/dev/null
  fi
  if [[ ! -f "$DIR/admin/node.key.pem" ]]; then
    "$BIN" keygen --out "$DIR/admin" >/dev/null
    "$BIN" ca issue --ca "$DIR/ca" --node "$DIR/admin" --roles admin,observer \
      --out "$DIR/admin/node.cert.pem" >/dev/null
  fi
  for i in $(seq 1 "$N"); do
    if [[ ! -f "$DIR/node-$i/node.key.pem" ]]; then
      "$BIN" keygen --out "$DIR/node-$i" >/dev/null
      "$BIN" ca issue --ca "$DIR/ca" --node "$DIR/node-$i" \
        --roles committee,aggregator,trainer,observer --out "$DIR/node-$i/node.cert.pem" >/dev/null
    fi
    node_config "$i"
  done
  : > "$DIR/pids"
  for i in $(seq 1 "$N"); do
    rm -f "$DIR/node-$i/data/node.json"
    "$BIN" node --config "$DIR/node-$i/node.toml" > "$DIR/node-$i/node.log" 2>&1 &
    echo "$!" >> "$DIR/pids"
  done
  echo "started $N nodes; waiting for every node to see the others ..."
  local deadline=$((SECONDS + WAIT_S))
  for i in $(seq 1 "$N"); do
    until url="$(http_url "$i")" && [[ -n "$url" ]] &&
      "$BIN" status --api "$url" --ca "$DIR/ca" --wait-peers $((N - 1)) --timeout-s 1 >/dev/null 2>&1; do
      if (( SECONDS >= deadline )); then
        echo "node $i did not connect to the others within ${WAIT_S}s; its log:" >&2
        tail -n 20 "$DIR/node-$i/node.log" >&2
        die "mesh not ready (nodes are still running; $0 stop)"
      fi
      sleep 0.5
    done
  done
  echo "mesh ready. Admin credentials: $DIR/admin; the APIs' CA: $DIR/ca (--ca or AGENT_MESH_CA)"
  for i in $(seq 1 "$N"); do
    echo "node $i: $(http_url "$i")"
  done
}

stop() {
  [[ -f "$DIR/pids" ]] || die "no $DIR/pids: nothing started from $DIR"
  while read -r pid; do
    kill "$pid" 2>/dev/null || true
  done < "$DIR/pids"
  for _ in $(seq 1 50); do
    local alive=0
    while read -r pid; do kill -0 "$pid" 2>/dev/null && alive=1; done < "$DIR/pids"
    (( alive == 0 )) && break
    sleep 0.2
  done
  while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done < "$DIR/pids"
  rm -f "$DIR/pids"
  echo "stopped"
}

status() {
  for info in "$DIR"/node-*/data/node.json; do
    [[ -f "$info" ]] || continue
    local url; url="$(sed -n 's/.*"http_url": *"\([^"]*\)".*/\1/p' "$info")"
    echo "== $url"
    "$BIN" status --api "$url" --ca "$DIR/ca" || true
  done
}

case "${1:-}" in
  development) shift; development "$@" ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 development [N] | stop | status" >&2; exit 2 ;;
esac
