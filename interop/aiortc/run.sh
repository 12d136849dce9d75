#!/usr/bin/env bash
# aiortc (PyPI, in target/bench-venv like the benchmarks' baseline) against the release binary, in a
# loopback-only network namespace of its own (127.0.0.2 on lo: aiortc never offers 127.0.0.1).
# Exits non-zero if any scenario of client.py fails. Usage: interop/aiortc/run.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cargo build --release --locked -p whip-echo --bin whip-echo
if [ ! -x target/bench-venv/bin/python ]; then python3 -m venv target/bench-venv; fi
target/bench-venv/bin/pip install -q -r bench/baseline/requirements.txt
if [ "$(id -u)" = 0 ]; then ns=(unshare --net); else ns=(unshare --user --map-root-user --net); fi
exec "${ns[@]}" bash -c '
  set -euo pipefail
  ip link set lo up && ip addr add 127.0.0.2/32 dev lo
  log=$(mktemp)
  . interop/lib.sh
  start_whip_echo "$log"
  trap "kill $server 2>/dev/null; rm -f $log" EXIT
  if ! timeout 120 target/bench-venv/bin/python interop/aiortc/client.py "http://$addr"; then
    tail -30 "$log"
    exit 1
  fi
'
