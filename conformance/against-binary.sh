#!/usr/bin/env bash
# The conformance checker as a user runs it: the release `whip-conformance` binary against the
# release `whip-echo` binary on loopback ports, inside a network namespace of its own (only `lo`).
# Exits non-zero if any run of the checker does (a failed MUST), or if the server does not stop
# cleanly on SIGTERM. Usage: conformance/against-binary.sh [RUNS] (default 3: the 10 MB check was
# timing-dependent once, so one run proves little).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
cargo build --release --locked -p whip-echo -p whip-conformance
if [ -z "${WHIP_ECHO_IN_NETNS:-}" ]; then
  if [ "$(id -u)" = 0 ]; then ns=(unshare --net); else ns=(unshare --user --map-root-user --net); fi
  exec env WHIP_ECHO_IN_NETNS=1 "${ns[@]}" bash -c 'ip link set lo up && exec "$0" "$@"' "$0" "$runs"
fi

log=$(mktemp)
target/release/whip-echo --listen 127.0.0.1:0 --udp-host 127.0.0.1 --udp-port 0 --tcp-port 0 \
  --log-format json --log info >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
addr=
for _ in $(seq 1 300); do
  addr=$(grep 'HTTP listening' "$log" | grep -o '"addr":"[^"]*"' | cut -d'"' -f4 || true)
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "whip-echo exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { cat "$log"; echo "whip-echo did not log its address" >&2; exit 1; }

for run in $(seq 1 "$runs"); do
  echo "== whip-conformance run $run/$runs against http://$addr"
  if ! target/release/whip-conformance --base-url "http://$addr" --echo-path '/echo/{stream}' \
      >"$log.report" 2>&1; then
    cat "$log.report"
    echo "whip-conformance failed (run $run)" >&2
    exit 1
  fi
  # The summary is indented and labelled so that it does not read as this script's own verdict
  # (the one deliberate SHOULD failure is expected; see the README).
  grep -E '^FAIL|passed' "$log.report" | sed 's/^/    the checker reports /' || true
done
rm -f "$log.report"

kill -TERM "$pid"
if ! wait "$pid"; then
  tail -20 "$log"
  echo "whip-echo did not exit cleanly on SIGTERM" >&2
  exit 1
fi
trap - EXIT
rm -f "$log"
echo "conformance against the release binary: $runs of $runs runs passed"
