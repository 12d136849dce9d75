#!/usr/bin/env bash
# aiortc as a client of whip-echo: POST -> connected, N sequential sessions, in a loopback-only
# network namespace (127.0.0.2 on lo for aiortc's candidates). Usage: bench/aiortc-connect.sh [N]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release --locked -p whip-echo --bin whip-echo
if [ ! -x target/bench-venv/bin/python ]; then python3 -m venv target/bench-venv; fi
target/bench-venv/bin/pip install -q -r bench/baseline/requirements.txt
if [ "$(id -u)" = 0 ]; then ns=(unshare --net); else ns=(unshare --user --map-root-user --net); fi
exec "${ns[@]}" bash -c '
  ip link set lo up && ip addr add 127.0.0.2/32 dev lo
  target/release/whip-echo --listen 127.0.0.1:0 --udp-host 127.0.0.1 --udp-port 0 --tcp-port 0 --log-format json --log warn,whip_echo::server=info > target/aiortc-connect.log &
  server=$!
  trap "kill $server" EXIT
  for _ in $(seq 100); do
    addr=$(grep -o "\"addr\":\"[^\"]*\"" target/aiortc-connect.log | head -1 | cut -d\" -f4) && [ -n "$addr" ] && break
    sleep 0.1
  done
  target/bench-venv/bin/python bench/baseline/aiortc_client.py "http://$addr" "${1:-20}"
' bash "$@"
