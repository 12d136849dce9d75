# Sourced by the interop scripts inside their network namespace.
# start_whip_echo LOG [ARGS...]: starts the release binary on ephemeral loopback ports with ARGS,
# logging JSON to LOG; sets `server` (its pid) and `addr` (its HTTP address), or exits non-zero
# with the log when it does not come up within 30 s.
start_whip_echo() {
  local log=$1
  shift
  target/release/whip-echo --listen 127.0.0.1:0 --udp-host 127.0.0.1 --udp-port 0 --tcp-port 0 \
    --log-format json --log info "$@" > "$log" 2>&1 &
  server=$!
  addr=
  for _ in $(seq 300); do
    addr=$(grep "HTTP listening" "$log" | grep -o "\"addr\":\"[^\"]*\"" | cut -d\" -f4 || true)
    [ -n "$addr" ] && return 0
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
  done
  cat "$log"
  echo "whip-echo did not come up" >&2
  exit 1
}
