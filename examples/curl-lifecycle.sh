#!/usr/bin/env bash
# The WHIP HTTP lifecycle with curl: POST an SDP offer (201 + Location + answer), then DELETE the
# resource (200). Usage: examples/curl-lifecycle.sh [BASE_URL] [OFFER_FILE]
set -euo pipefail
base=${1:-http://localhost:8080}
offer=${2:-tests/data/offer.sdp}

headers=$(curl -sS --fail-with-body -o /dev/null -D - \
  -H 'Content-Type: application/sdp' --data-binary @"$offer" "$base/whip/demo")
location=$(printf '%s\n' "$headers" | tr -d '\r' | awk 'tolower($1) == "location:" { print $2 }')
echo "created $location"

curl -sS --fail-with-body -X DELETE -o /dev/null -w 'DELETE %{http_code}\n' "$base$location"
