#!/usr/bin/env bash
# Runs the benchmarks: builds whip-echo and the load generator (release), installs the aiortc
# baseline into target/bench-venv, and runs everything inside a fresh network namespace that has
# only loopback (plus 127.0.0.2 on lo, which aiortc needs: it never offers 127.0.0.1), so no packet
# leaves the machine. Arguments go to whip-echo-bench (e.g. --smoke, --servers whip-echo).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release --locked -p whip-echo --bin whip-echo
cargo build --release --locked -p whip-echo-bench
if [[ " $* " != *" --servers whip-echo "* ]]; then
  if [ ! -x target/bench-venv/bin/python ]; then python3 -m venv target/bench-venv; fi
  target/bench-venv/bin/pip install -q -r bench/baseline/requirements.txt
fi
ulimit -n "$(ulimit -Hn)"
if [ "$(id -u)" = 0 ]; then ns=(unshare --net); else ns=(unshare --user --map-root-user --net); fi
exec "${ns[@]}" bash -c 'ip link set lo up && ip addr add 127.0.0.2/32 dev lo && exec "$0" "$@"' \
  target/release/whip-echo-bench "$@"
