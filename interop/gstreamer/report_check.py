"""Checks whip-echo's client report of a GStreamer whipsink publishing Opus and VP8 (issue 31):
the fields whipsink really produces are there, each right."""
import json
import sys

if sys.argv[1] == "--publisher":
    # The public id of the WHIP session in a `GET /api/sessions` answer.
    print(next(s["id"] for s in json.load(open(sys.argv[2]))["sessions"] if s["role"] == "whip"))
    sys.exit(0)

report = json.load(open(sys.argv[1]))
tracks = {t["kind"]: t for t in report["tracks"] if t["direction"] == "from_client"}
checks = {
    "a bundled offer": report["offer"]["bundled"],
    "an audio and a video section offered": [s["kind"] for s in report["offer"]["sections"]] == ["audio", "video"],
    "Opus and VP8 chosen": sorted(report["chosen"]) == ["audio/opus", "video/VP8"],
    "audio packets counted as audio": tracks.get("audio", {}).get("packets", 0) > 0,
    "video packets counted as video": tracks.get("video", {}).get("packets", 0) > 0,
    "its RTCP sender reports": report["rtcp"]["sender_reports"] > 0,
    "connected": report["connectivity"]["connected_ms"] is not None,
    "no failed finding": not [f for f in report["findings"] if f["level"] == "fail"],
}
for what, ok in checks.items():
    if not ok:
        print(f"gstreamer report: {what}: FAILED")
        sys.exit(1)
print(
    f"gstreamer report: audio {tracks['audio']['packets']} and video {tracks['video']['packets']} packets, "
    f"{report['rtcp']['sender_reports']} sender reports, connected in {report['connectivity']['connected_ms']} ms: ok"
)
