#!/usr/bin/env bash
# GStreamer 1.22 (Debian's webrtcbin and libnice) with gst-plugins-rs's WHIP/WHEP elements
# (crates.io gst-plugin-webrtchttp 0.15.4, built here once into target/gst-webrtchttp: about 6
# minutes on 2 cores) against the release binary, in a network namespace of its own. libnice skips
# interfaces flagged LOOPBACK, so the namespace also has a veth pair holding 127.0.0.2 (no route
# leaves it). Scenarios:
#   1. audiotestsrc ! opusenc ! whipsink publishes; whepsrc plays it: decoded audio at a level RMS
#      above -50 dBFS;
#   2. whipsink publishes audio + VP8 video (both payloaders on payload type 96, as GStreamer's
#      defaults are); a video-only whepsrc plays it: decoded frames counted.
# Needs the apt packages .ci/run installs. Usage: interop/gstreamer/run.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cargo build --release --locked -p whip-echo --bin whip-echo
plugin=target/gst-webrtchttp/release/libgstwebrtchttp.so
if [ ! -f "$plugin" ]; then
  cargo fetch --locked --manifest-path interop/gstreamer/fetch/Cargo.toml
  src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/gst-plugin-webrtchttp-0.15.4 | head -1)
  rm -rf target/gst-webrtchttp-src
  cp -r "$src" target/gst-webrtchttp-src
  cp interop/gstreamer/plugin.lock target/gst-webrtchttp-src/Cargo.lock
  # Its own workspace: it sits under this repository's directory.
  printf '\n[workspace]\n' >> target/gst-webrtchttp-src/Cargo.toml
  cargo build --release --locked --no-default-features --features rustls-ring \
    --manifest-path target/gst-webrtchttp-src/Cargo.toml --target-dir target/gst-webrtchttp
fi
export GST_PLUGIN_PATH="$root/target/gst-webrtchttp/release"
gst-inspect-1.0 whipsink >/dev/null && gst-inspect-1.0 whepsrc >/dev/null
if [ "$(id -u)" = 0 ]; then ns=(unshare --net); else ns=(unshare --user --map-root-user --net); fi
exec "${ns[@]}" bash -c '
  set -euo pipefail
  ip link set lo up
  ip link add v0 type veth peer name v1
  ip addr add 127.0.0.2/32 dev v0
  ip link set v0 up && ip link set v1 up
  dir=$(mktemp -d)
  . interop/lib.sh
  # A short ICE timeout: the elements do not always DELETE, and scenario 2 starts from no session.
  start_whip_echo "$dir/server.log" --ice-timeout 3
  trap "kill $server 2>/dev/null || true; rm -rf $dir" EXIT
  base="http://$addr"
  fail() {
    echo "gstreamer: $1" >&2
    for log in "$dir"/*.log; do echo "--- $log" >&2; tail -n 20 "$log" >&2; done
    exit 1
  }

  # 1. whipsink publishes a tone, whepsrc plays it through the level element.
  timeout 30 gst-launch-1.0 -e audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample \
    ! opusenc ! rtpopuspay ! whipsink whip-endpoint="$base/whip/gst-audio" > "$dir/pub-audio.log" 2>&1 &
  pub=$!
  timeout -s INT 12 gst-launch-1.0 -e -m whepsrc whep-endpoint="$base/whep/gst-audio" \
    ! rtpopusdepay ! opusdec ! audioconvert ! level post-messages=true ! fakesink > "$dir/play-audio.log" 2>&1 || true
  # SIGINT with -e: EOS, and whipsink DELETEs its session.
  kill -INT $pub 2>/dev/null || true; wait $pub 2>/dev/null || true
  loudest=$(grep -o "rms=(GValueArray)< [-0-9.]*" "$dir/play-audio.log" | awk "{print \$2}" | sort -g | tail -1 || true)
  [ -n "$loudest" ] || fail "whepsrc decoded no audio"
  awk -v l="$loudest" "BEGIN { exit !(l > -50) }" || fail "audio RMS $loudest dBFS, not above -50"
  echo "gstreamer whipsink -> whepsrc (Opus): decoded audio, loudest RMS $loudest dBFS: ok"

  sessions() { curl -s "$base/healthz" | head -1 | grep -o "sessions=[0-9]*"; }
  for _ in $(seq 200); do [ "$(sessions)" = sessions=0 ] && break; sleep 0.1; done
  [ "$(sessions)" = sessions=0 ] || fail "sessions left after the audio scenario: $(sessions)"

  # 2. whipsink publishes audio + VP8 video; once its session is up, a video-only whepsrc plays.
  timeout 30 gst-launch-1.0 -e whipsink name=ws whip-endpoint="$base/whip/gst-video" \
    audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! opusenc ! rtpopuspay ! ws. \
    videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1 \
    ! vp8enc deadline=1 ! rtpvp8pay ! ws. > "$dir/pub-video.log" 2>&1 &
  pub=$!
  for _ in $(seq 100); do
    [ "$(sessions)" = sessions=1 ] && break
    sleep 0.1
  done
  timeout -s INT 12 gst-launch-1.0 -e -v whepsrc whep-endpoint="$base/whep/gst-video" audio-caps=\"\" \
    ! rtpvp8depay ! vp8dec ! fakesink name=video silent=false > "$dir/play-video.log" 2>&1 || true
  # The client report of the publisher (issue 31), read while it publishes: what whipsink really
  # produces (audio and video alike on payload type 96, told apart by SSRC; its sender reports).
  curl -s "$base/api/sessions" > "$dir/sessions.json"
  id=$(python3 interop/gstreamer/report_check.py --publisher "$dir/sessions.json") \
    || fail "whipsink session not listed: $(cat "$dir/sessions.json")"
  curl -s "$base/api/sessions/$id/report" > "$dir/report.json"
  python3 interop/gstreamer/report_check.py "$dir/report.json" || fail "its report: $(cat "$dir/report.json")"
  kill -INT $pub 2>/dev/null || true; wait $pub 2>/dev/null || true
  frames=$(grep -c "video: last-message = chain" "$dir/play-video.log" || true)
  [ "$frames" -ge 10 ] || fail "whepsrc decoded $frames video frames, fewer than 10"
  echo "gstreamer whipsink -> whepsrc (VP8 beside Opus): $frames video frames decoded: ok"

'
