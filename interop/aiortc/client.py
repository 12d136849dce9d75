"""aiortc (PyAV's Opus and VP8 encoders and decoders) as a real third-party client of whip-echo.

Scenarios, each with a sine tone of its own frequency and a video track:
  echo       one sendrecv session on /echo/{stream}: the tone and the video come back
  whip-whep  a WHIP publisher and a WHEP viewer of the same stream: the viewer gets both

Each decodes what it receives: the tone's frequency (zero crossings of the first channel) must be
within 3 % of what was sent, and at least 10 video frames must decode. Prints one line per scenario
and exits non-zero on the first failure. Usage: client.py BASE_URL
"""

import asyncio
import fractions
import math
import sys
import time
from array import array

import aiohttp
import av
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack, VideoStreamTrack

RATE = 48000
FRAME = 960  # 20 ms
WAIT = 15.0


class Tone(MediaStreamTrack):
    """A sine tone at `hz`, paced in real time like a microphone."""

    kind = "audio"

    def __init__(self, hz):
        super().__init__()
        self.hz = hz
        self.n = 0
        self.start = None

    async def recv(self):
        if self.start is None:
            self.start = time.time()
        wait = self.start + self.n / RATE - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        samples = array("h", (int(12000 * math.sin(2 * math.pi * self.hz * (self.n + i) / RATE)) for i in range(FRAME)))
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(samples.tobytes())
        frame.sample_rate = RATE
        frame.pts = self.n
        frame.time_base = fractions.Fraction(1, RATE)
        self.n += FRAME
        return frame


class Frames(VideoStreamTrack):
    """320x240 frames at 30 fps (content does not matter: whip-echo forwards, never decodes)."""

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(width=320, height=240, format="yuv420p")
        frame.pts = pts
        frame.time_base = time_base
        return frame


async def tone_frequency(track, seconds=1.0):
    """The frequency of the tone `track` carries, from `seconds` of it after the first half second."""
    collected, rate, channels, skipped = [], RATE, 1, 0.0
    while skipped < 0.5:
        frame = await asyncio.wait_for(track.recv(), WAIT)
        skipped += frame.samples / frame.sample_rate
    while len(collected) < seconds * rate:
        frame = await asyncio.wait_for(track.recv(), WAIT)
        rate, channels = frame.sample_rate, len(frame.layout.channels)
        samples = array("h", bytes(frame.planes[0]))
        collected.extend(samples[::channels][: frame.samples])
    crossings = sum(1 for a, b in zip(collected, collected[1:]) if (a < 0) != (b < 0))
    return crossings / 2 / (len(collected) / rate)


async def video_frames(track, count=10):
    for _ in range(count):
        frame = await asyncio.wait_for(track.recv(), WAIT)
    return frame.width, frame.height


async def post(http, url, pc):
    await pc.setLocalDescription(await pc.createOffer())
    async with http.post(url, data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}) as r:
        body = await r.text()
        if r.status != 201:
            raise RuntimeError(f"POST {url}: {r.status} {body.strip()}")
        resource = str(r.url.join(aiohttp.client.URL(r.headers["Location"])))
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    return resource


def received_tracks(pc):
    tracks = {}
    got = asyncio.Event()

    @pc.on("track")
    def on_track(track):
        tracks[track.kind] = track
        if len(tracks) == 2:
            got.set()

    return tracks, got


async def check(label, hz, tracks, got):
    await asyncio.wait_for(got.wait(), WAIT)
    heard = await tone_frequency(tracks["audio"])
    size = await video_frames(tracks["video"])
    ok = abs(heard - hz) <= 0.03 * hz and size == (320, 240)
    print(f"aiortc {label}: sent a {hz} Hz tone, heard {heard:.1f} Hz; video decoded at {size[0]}x{size[1]}: {'ok' if ok else 'FAILED'}")
    return ok


async def report(http, resource):
    """The session's client report (issue 31): what aiortc really produces is there."""
    async with http.get(f"{resource}/report") as r:
        if r.status != 200:
            print(f"aiortc report: {r.status}: FAILED")
            return False
        report = await r.json()
    kinds = sorted(t["kind"] for t in report["tracks"] if t["direction"] == "from_client" and t["packets"] > 0)
    rtcp = report["rtcp"]
    failed = [f["text"] for f in report["findings"] if f["level"] == "fail"]
    ok = (
        "aiohttp" in (report["http"]["user_agent"] or "")
        and report["offer"]["bundled"]
        and kinds == ["audio", "video"]
        and rtcp["sender_reports"] > 0
        and rtcp["receiver_reports"] > 0
        and report["connectivity"]["connected_ms"] is not None
        and not failed
    )
    print(
        f"aiortc report: user agent {report['http']['user_agent']!r}, tracks {kinds}, "
        f"{rtcp['sender_reports']} SR, {rtcp['receiver_reports']} RR, "
        f"connected in {report['connectivity']['connected_ms']} ms, failed findings {failed}: "
        f"{'ok' if ok else 'FAILED'}"
    )
    return ok


async def echo(http, base):
    pc = RTCPeerConnection()
    tracks, got = received_tracks(pc)
    pc.addTransceiver(Tone(440), direction="sendrecv")
    pc.addTransceiver(Frames(), direction="sendrecv")
    resource = await post(http, f"{base}/echo/aiortc-echo", pc)
    try:
        return await check("echo", 440, tracks, got) and await report(http, resource)
    finally:
        await http.delete(resource)
        await pc.close()


async def whip_whep(http, base):
    publisher = RTCPeerConnection()
    publisher.addTransceiver(Tone(660), direction="sendonly")
    publisher.addTransceiver(Frames(), direction="sendonly")
    published = await post(http, f"{base}/whip/aiortc-live", publisher)
    viewer = RTCPeerConnection()
    tracks, got = received_tracks(viewer)
    viewer.addTransceiver("audio", direction="recvonly")
    viewer.addTransceiver("video", direction="recvonly")
    played = await post(http, f"{base}/whep/aiortc-live", viewer)
    try:
        return await check("WHIP -> WHEP", 660, tracks, got)
    finally:
        for url in (played, published):
            await http.delete(url)
        await viewer.close()
        await publisher.close()


async def main(base):
    async with aiohttp.ClientSession() as http:
        for scenario in (echo, whip_whep):
            if not await scenario(http, base):
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1].rstrip("/"))))
