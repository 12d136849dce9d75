"""The baseline: a small aiortc + aiohttp echo server with whip-echo's resources, built the way the
server whip-echo replaces was (aiortc's media pipeline echoes the track: decode, re-encode; each
peer connection binds its own sockets and gathers candidates before answering).

POST /echo/{stream} (application/sdp, sendrecv offer) -> 201 + Location + answer; DELETE /resource/{id}.
Prints {"message":"HTTP listening","addr":"HOST:PORT"} once listening, like whip-echo's JSON log.
"""

import argparse
import asyncio
import json
import uuid

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription

sessions: dict[str, RTCPeerConnection] = {}


async def close(rid: str) -> bool:
    pc = sessions.pop(rid, None)
    if pc is None:
        return False
    await pc.close()
    return True


async def post_echo(request: web.Request) -> web.Response:
    if request.content_type != "application/sdp":
        return web.Response(status=415, text="Content-Type must be application/sdp\n")
    offer = RTCSessionDescription(sdp=await request.text(), type="offer")
    pc = RTCPeerConnection()
    rid = uuid.uuid4().hex
    sessions[rid] = pc

    @pc.on("track")
    def on_track(track):
        pc.addTrack(track)  # echo: aiortc decodes and re-encodes every frame

    @pc.on("connectionstatechange")
    async def on_state():
        if pc.connectionState in ("failed", "closed"):
            await close(rid)

    try:
        await pc.setRemoteDescription(offer)
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as e:  # malformed offers are the client's problem
        await close(rid)
        return web.Response(status=400, text=f"bad offer: {e}\n")
    return web.Response(
        status=201,
        content_type="application/sdp",
        text=pc.localDescription.sdp,
        headers={"Location": f"/resource/{rid}"},
    )


async def delete(request: web.Request) -> web.Response:
    if await close(request.match_info["rid"]):
        return web.Response(status=200)
    return web.Response(status=404, text="no such resource\n")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text=f"ok sessions={len(sessions)}\n")


async def main(host: str, port: int) -> None:
    app = web.Application(client_max_size=128 * 1024)
    app.router.add_post("/echo/{stream}", post_echo)
    app.router.add_delete("/resource/{rid}", delete)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    addr = runner.addresses[0]
    print(json.dumps({"message": "HTTP listening", "addr": f"{addr[0]}:{addr[1]}"}, separators=(",", ":")), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))
