"""aiortc as a *client* of whip-echo: N sequential echo sessions, each timed from POST to
"connected". aiortc nominates in its first connectivity check (aggressive nomination), which is the
case rtc-ice 0.21.1 mishandled (see vendor/rtc-ice/PATCH.md).

Usage: aiortc_client.py BASE_URL [N]. Prints one JSON object with the timings in ms.
"""

import asyncio
import json
import statistics
import sys
import time
import urllib.request

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack


def post(url: str, sdp: str) -> tuple[str, str]:
    request = urllib.request.Request(url, data=sdp.encode(), method="POST", headers={"Content-Type": "application/sdp"})
    with urllib.request.urlopen(request) as response:
        return response.read().decode(), response.headers["Location"]


def delete(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url, method="DELETE")).read()


async def one(base: str, i: int) -> float:
    pc = RTCPeerConnection()
    pc.addTrack(AudioStreamTrack())
    connected = asyncio.Event()

    @pc.on("connectionstatechange")
    def on_state():
        if pc.connectionState == "connected":
            connected.set()

    await pc.setLocalDescription(await pc.createOffer())
    started = time.perf_counter()
    answer, location = await asyncio.to_thread(post, f"{base}/echo/aiortc-{i}", pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.wait_for(connected.wait(), 15)
    elapsed = (time.perf_counter() - started) * 1000
    await pc.close()
    await asyncio.to_thread(delete, base + location)
    return elapsed


async def main(base: str, n: int) -> None:
    times = [await one(base, i) for i in range(n)]
    times.sort()
    print(json.dumps({
        "sessions": n,
        "post_to_connected_ms_p50": round(statistics.median(times), 1),
        "p90": round(times[int(0.9 * (n - 1))], 1),
        "min": round(times[0], 1),
        "max": round(times[-1], 1),
        "over_400_ms": sum(t > 400 for t in times),
    }))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 20))
