// End-to-end tests of the whip-echo page in headless Chromium against the real release binary.
// Run through run.sh, which puts server and browser in a network namespace with only loopback.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createServer } from "node:http";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { WAIT, gotoPage, launchChromium, startServer, selfSignedCert, shots, waitForAudio, warnings } from "./support.mjs";

let server;
let base;
let browser;

async function sessions() {
  const text = await (await fetch(`${base}/healthz`)).text();
  return Number(text.match(/sessions=(\d+)/)[1]);
}

/** Waits until `fn` (polled on the server's own /healthz, the page has no event for it) holds. */
async function until(fn, what) {
  const deadline = Date.now() + WAIT;
  while (Date.now() < deadline) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`timed out waiting for ${what}`);
}

async function openPage(stream, url = base) {
  // The HTTPS test's certificate is self-signed.
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e));
  await gotoPage(page, url);
  if (stream) await page.fill("#stream", stream);
  return { context, page };
}

// whip-echo advertises trickle ICE (Accept-Patch), so the page sends its offer at once and its
// candidates (Chromium gathers 127.0.0.1 here) and their end by PATCH, each answered 204.
const MARKS = ["POST sent", "201 received", "candidates trickled: 204", "end of candidates trickled: 204",
  "ICE connected", "DTLS connected", "first audio received"];

before(async () => {
  mkdirSync(shots, { recursive: true });
  // A second publisher takes a stream over here (the default when tokens are required; this
  // server has none, so it would answer 409: the test below shows that).
  ({ child: server, base } = await startServer(["--publisher-conflict", "takeover"]));
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  server?.kill("SIGTERM");
});

for (const single of [false, true]) {
  const mode = single ? "single-connection /echo" : "WHIP + WHEP";
  test(`echo test (${mode}): audio comes back and the timeline has every mark`, async () => {
    const { context, page } = await openPage();
    if (single) await page.check("#single");
    await page.click("#echo");
    const state = await waitForAudio(page);
    const labels = state.timeline.map((m) => m.label);
    // With two legs every mark names its leg; only the player receives audio.
    const sent = MARKS.filter((m) => m !== "first audio received");
    const marks = single ? MARKS : [...MARKS.map((m) => `play: ${m}`), ...sent.map((m) => `publish: ${m}`)];
    for (const mark of marks) assert.ok(labels.includes(mark), `timeline has "${mark}": ${JSON.stringify(state.timeline)}`);
    await page.waitForFunction(() => window.whipEcho.status === "connected", null, { timeout: WAIT });
    assert.match(await page.textContent("#status"), single ? /^Connected\.$/ : /^Play: receiving audio · Publish: connected$/);
    // Nothing blocks UDP here: every leg's media goes over it, and the timeline says so.
    assert.deepEqual(state.paths.map((p) => p.name), single ? ["udp"] : ["udp", "udp"]);
    assert.ok(state.timeline.some((m) => m.label.includes("media path: UDP to 127.0.0.1:")), JSON.stringify(state.timeline));
    // The server's start-up self-test of its media paths is on the page.
    assert.match(await page.textContent("#server-paths"),
      /^Server self-test: UDP \d+ ok · TCP \d+ ok · TCP on the HTTP port \d+ ok$/);
    console.log(`# ${mode}: click -> first echoed audio ${state.firstAudioMs} ms; timeline ${JSON.stringify(state.timeline)}; steps ${JSON.stringify(state.trace)}`);
    // The level meters move: Chromium's fake microphone beeps, and the beep comes back.
    await page.waitForFunction(() => (window.whipEcho.peak.in || 0) > 0.05 && (window.whipEcho.peak.out || 0) > 0.05,
      null, { timeout: WAIT });
    await page.waitForFunction(() => document.querySelectorAll("#stats dt").length >= 4, null, { timeout: WAIT });
    // The report panel: one report per leg from whip-echo, its findings first, none failed.
    // (A report read before the leg connected says only what its offer did: wait for each leg's
    // "connected in".)
    await page.waitForFunction((n) => [...document.querySelectorAll("#reports .report")]
      .filter((r) => /connected in \d+ ms/.test(r.textContent)).length >= n, single ? 1 : 2, { timeout: WAIT });
    const panel = await page.textContent("#reports");
    assert.equal(await page.locator("#reports li.fail").count(), 0, panel);
    await page.screenshot({ path: path.join(shots, single ? "echo-single.png" : "echo.png"), fullPage: true });
    if (single) {
      // Phone width: nothing overflows sideways.
      await page.setViewportSize({ width: 390, height: 844 });
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `page is ${overflow} px wider than a phone screen`);
      await page.screenshot({ path: path.join(shots, "echo-phone.png"), fullPage: true });
    }

    // Hang up: the server's sessions end and every resource URL is gone (410, saying so).
    const resources = state.resources;
    assert.equal(resources.length, single ? 1 : 2);
    await page.click("#hangup");
    await until(async () => (await sessions()) === 0, "the server to have no session");
    for (const url of resources) assert.equal((await fetch(url)).status, 410, url);
    // The page says so once its own DELETEs have been answered (the server may count the
    // sessions gone a moment before the page hears back).
    await page.waitForFunction(() => document.querySelector("#status").textContent === "Hung up.", null,
      { timeout: WAIT });
    // Each leg's report, read once more after the end (the page closes its connection, then
    // sends DELETE): ended, and by DELETE.
    await page.waitForFunction((n) => [...document.querySelectorAll("#reports .report")]
      .filter((r) => /: ended/.test(r.querySelector("h3").textContent) && /ended by DELETE/.test(r.textContent)).length === n,
    single ? 1 : 2, { timeout: WAIT });
    await context.close();
    // A session that went well leaves nothing for an operator to worry about in the log
    // (rtc-dtls used to warn ~18 times per Chromium connection about TLS extensions).
    assert.deepEqual(warnings(server), []);
  });
}

test("trickle ICE vs candidates in the offer: both connect, only trickle PATCHes; connect times", async () => {
  const { context, page } = await openPage();
  const patches = [];
  page.on("request", (r) => { if (r.method() === "PATCH") patches.push(r.url()); });
  const runs = 10;
  const results = await page.evaluate(async ({ runs }) => {
    const { Session } = await import("/whip-client.js");
    const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
    const out = { trickle: [], offer: [] };
    for (let i = 0; i < runs * 2; i++) {
      const trickle = i % 2 === 0;
      const steps = {};
      const t0 = performance.now();
      const session = new Session({
        endpoint: `/echo/trickle-${i}`, kind: "echo", track: mic.getAudioTracks()[0],
        discovered: Promise.resolve({ trickle, iceServers: [] }),
        onStep: (label) => { steps[label] ??= performance.now() - t0; },
      });
      const connected = new Promise((resolve) => session.pc.addEventListener("connectionstatechange", () => {
        if (session.pc.connectionState === "connected") resolve(performance.now() - t0);
      }));
      await session.start();
      const ms = await connected;
      // Let both trickle PATCHes answer before hanging up: the page sends them without waiting
      // for each other, so the candidates' PATCH may answer after the end-of-candidates one (a
      // DELETE sent in between made it a 404).
      const answered = (label) => Object.keys(steps).some((s) => s.startsWith(`${label}: `));
      if (trickle) while (!(answered("candidates trickled") && answered("end of candidates trickled"))) await new Promise((r) => setTimeout(r, 5));
      (trickle ? out.trickle : out.offer).push({ ms, post: steps["POST sent"], trickled: session.trickled });
      await session.stop();
    }
    return out;
  }, { runs });
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  for (const r of results.trickle) {
    assert.ok(r.trickled.candidates > 0 && r.trickled.statuses.every((s) => s === 204), JSON.stringify(r));
  }
  assert.ok(results.offer.every((r) => r.trickled === undefined));
  assert.equal(patches.length, results.trickle.reduce((n, r) => n + r.trickled.patches, 0));
  const fmt = (rs) => `start -> POST ${median(rs.map((r) => r.post)).toFixed(1)} ms, start -> connected ${median(rs.map((r) => r.ms)).toFixed(1)} ms`;
  console.log(`# Chromium connect, median of ${runs}: trickle ICE: ${fmt(results.trickle)}; candidates in the offer: ${fmt(results.offer)}`);
  await context.close();
  await until(async () => (await sessions()) === 0, "the server to have no session");
});

test("Chromium restarts ICE mid-echo by PATCH: new ETag, the echo carries on", async () => {
  const { context, page } = await openPage();
  const result = await page.evaluate(async () => {
    const { Session } = await import("/whip-client.js");
    const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
    const session = new Session({ endpoint: "/echo/restart-browser", kind: "echo", track: mic.getAudioTracks()[0] });
    const received = async () => {
      const stats = await session.pc.getStats();
      return [...stats.values()].find((s) => s.type === "inbound-rtp")?.packetsReceived ?? 0;
    };
    const until = async (f, ms = 10000) => {
      const end = performance.now() + ms;
      while (!(await f())) {
        if (performance.now() > end) throw new Error(`timed out: ${f}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    await session.start();
    await until(async () => (await received()) > 20);
    const etag = session.etag;
    const ufrag = (s) => s.match(/a=ice-ufrag:(.*)\r?\n/)?.[1];
    const before = ufrag(session.pc.remoteDescription.sdp);
    const states = [];
    session.pc.addEventListener("iceconnectionstatechange", () => states.push(session.pc.iceConnectionState));
    // Chromium's transport stats: the local ufrag in use and how often the pair changed.
    const transport = async () => [...(await session.pc.getStats()).values()].find((s) => s.type === "transport");
    const first = await transport();
    const t0 = performance.now();
    const res = await session.restartIce();
    // The new generation is in use once Chromium's transport runs on the new local ufrag.
    const local = ufrag(session.pc.localDescription.sdp);
    await until(async () => (await transport())?.iceLocalUsernameFragment === local);
    const switched = performance.now() - t0;
    const n = await received();
    await until(async () => (await received()) > n + 25);
    const ms = performance.now() - t0;
    const second = await transport();
    const after = { etag: session.etag, ufrag: ufrag(session.pc.remoteDescription.sdp), status: res.status };
    await session.stop();
    return { etag, before, after, states, ms, switched, changes: [first.selectedCandidatePairChanges, second.selectedCandidatePairChanges] };
  });
  assert.equal(result.after.status, 200);
  assert.notEqual(result.after.etag, result.etag);
  assert.notEqual(result.after.ufrag, result.before);
  assert.ok(result.changes[1] > result.changes[0], `a new candidate pair was selected: ${result.changes}`);
  console.log(`# Chromium ICE restart: restartIce() -> new generation in use ${result.switched.toFixed(0)} ms, -> 25 more echoed packets ${result.ms.toFixed(0)} ms; ICE states [${result.states.join(" > ")}]; selected pair changes ${result.changes.join(" -> ")}`);
  await context.close();
  await until(async () => (await sessions()) === 0, "the server to have no session");
});

test("video: one browser publishes camera + microphone by WHIP, another plays both by WHEP", async () => {
  const stream = `video-${Date.now()}`;
  const publisher = await openPage();
  const viewer = await openPage();
  await publisher.page.evaluate(async (stream) => {
    const { Session } = await import("/whip-client.js");
    const media = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 320, height: 240 } });
    const session = new Session({ endpoint: `/whip/${stream}`, kind: "whip", track: media.getAudioTracks()[0], video: media.getVideoTracks()[0] });
    await session.start();
    window.published = session;
  }, stream);
  const result = await viewer.page.evaluate(async (stream) => {
    const { Session } = await import("/whip-client.js");
    const session = new Session({ endpoint: `/whep/${stream}`, kind: "whep", video: true });
    await session.start();
    const inbound = async (kind) => [...(await session.pc.getStats()).values()].find((s) => s.type === "inbound-rtp" && s.kind === kind);
    const end = performance.now() + 15000;
    for (;;) {
      const [video, audio] = [await inbound("video"), await inbound("audio")];
      if ((video?.framesDecoded ?? 0) > 10 && (audio?.packetsReceived ?? 0) > 20) {
        const codec = [...(await session.pc.getStats()).values()].find((s) => s.type === "codec" && s.id === video.codecId);
        const out = { framesDecoded: video.framesDecoded, width: video.frameWidth, keyFramesDecoded: video.keyFramesDecoded,
          audioPackets: audio.packetsReceived, codec: codec?.mimeType, firstFrameMs: performance.now() };
        await session.stop();
        return out;
      }
      if (performance.now() > end) return { timedOut: true, video, audio };
      await new Promise((r) => setTimeout(r, 50));
    }
  }, stream);
  assert.ok(!result.timedOut, JSON.stringify(result));
  assert.ok(result.framesDecoded > 10 && result.keyFramesDecoded >= 1, JSON.stringify(result));
  assert.equal(result.width, 320);
  console.log(`# Chromium video: WHEP viewer decoded ${result.framesDecoded} frames (${result.codec}, ${result.keyFramesDecoded} keyframes) and ${result.audioPackets} audio packets`);
  // The publisher's client report (issue 31): what Chromium really produces.
  const report = await publisher.page.evaluate(async () => (await fetch(`${window.published.resource}/report`)).json());
  const from = Object.fromEntries(report.tracks.filter((t) => t.direction === "from_client").map((t) => [t.kind, t]));
  const failed = report.findings.filter((f) => f.level === "fail").map((f) => f.text);
  assert.match(report.http.user_agent, /Chrome/, JSON.stringify(report.http));
  assert.ok(report.offer.bundled && report.offer.rtcp_mux, JSON.stringify(report.offer));
  assert.ok(from.audio?.packets > 0 && from.video?.packets > 0, JSON.stringify(report.tracks));
  assert.ok(report.rtcp.twcc_feedback_sent > 0, `Chromium numbers its packets for TWCC: ${JSON.stringify(report.rtcp)}`);
  assert.deepEqual(failed, []);
  console.log(`# Chromium's report: ${report.offer.candidates.total} candidates (${report.offer.candidates.mdns} mDNS), audio ${from.audio.packets} and video ${from.video.packets} packets, ${report.rtcp.sender_reports} sender reports, ${report.rtcp.twcc_feedback_sent} TWCC feedback sent, connected in ${report.connectivity.connected_ms} ms`);
  await publisher.page.evaluate(() => window.published.stop());
  for (const p of [publisher, viewer]) await p.context.close();
  await until(async () => (await sessions()) === 0, "the server to have no session");
});

test("simulcast: Chromium publishes three layers by WHIP; WHEP viewers get the top one, or the one they ask for", async () => {
  const stream = `simulcast-${Date.now()}`;
  const publisher = await openPage();
  const viewer = await openPage();
  // RFC 8853 simulcast through SDP (RFC 9725 §4.8): three encodings with rids, 1280x720 on top,
  // the top one off at first (turned on below, as a browser's bandwidth estimate would).
  const published = await publisher.page.evaluate(async (stream) => {
    const media = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 1280, height: 720 } });
    const pc = new RTCPeerConnection();
    pc.addTransceiver(media.getAudioTracks()[0], { direction: "sendonly" });
    const video = pc.addTransceiver(media.getVideoTracks()[0], { direction: "sendonly", sendEncodings: [
      { rid: "l", scaleResolutionDownBy: 4 }, { rid: "m", scaleResolutionDownBy: 2 }, { rid: "h", active: false }] });
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((r) => pc.iceGatheringState === "complete" ? r() :
      pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && r()));
    const res = await fetch(`/whip/${stream}`, { method: "POST", headers: { "Content-Type": "application/sdp" },
      body: pc.localDescription.sdp });
    const answer = await res.text();
    // Chromium sends a layer once its bandwidth estimate allows, ramping from 300 kb/s (about
    // 20 s on loopback for the top one): start it at 3 Mb/s (a Chromium-only knob, in the answer
    // it applies; whip-echo's answer is unchanged).
    const fast = answer.replace(/a=rtpmap:(\d+) VP8\/90000\r\n/, (line, pt) => `${line}a=fmtp:${pt} x-google-start-bitrate=3000\r\n`);
    try {
      await pc.setRemoteDescription({ type: "answer", sdp: fast });
    } catch (e) {
      return { status: res.status, error: String(e) };
    }
    window.publisher = pc;
    window.topOn = async () => {
      const parameters = video.sender.getParameters();
      parameters.encodings[2].active = true;
      await video.sender.setParameters(parameters);
    };
    return { status: res.status, answer };
  }, stream);
  assert.equal(published.status, 201, JSON.stringify(published));
  assert.ok(!published.error, published.error);
  assert.match(published.answer, /a=extmap:\d+ urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id/);
  assert.match(published.answer, /a=simulcast:recv l;m;~?h/);
  // The viewer's decoded video reaching `width` (any width when 0): frames decoded, the size, and
  // when, from the viewer's start.
  const decoded = (width, page = viewer.page) => page.evaluate(async (width) => {
    const end = performance.now() + 20000;
    for (;;) {
      const video = [...(await window.session.pc.getStats()).values()].find((s) => s.type === "inbound-rtp" && s.kind === "video");
      if ((video?.framesDecoded ?? 0) > 10 && (!width || video.frameWidth === width))
        return { framesDecoded: video.framesDecoded, width: video.frameWidth, height: video.frameHeight,
          ms: Math.round(performance.now() - window.started) };
      if (performance.now() > end) return { timedOut: true, width, video };
      await new Promise((r) => setTimeout(r, 50));
    }
  }, width);
  await viewer.page.evaluate(async (stream) => {
    const { Session } = await import("/whip-client.js");
    window.started = performance.now();
    window.session = new Session({ endpoint: `/whep/${stream}`, kind: "whep", video: true });
    await window.session.start();
  }, stream);
  const before = await decoded(0);
  assert.ok(!before.timedOut && before.width < 1280, JSON.stringify(before));
  // The top layer comes on: the viewer follows it (at its keyframe), never told its rid's name.
  await publisher.page.evaluate(() => window.topOn());
  const after = await decoded(1280);
  assert.ok(!after.timedOut, JSON.stringify(after));
  assert.equal(after.height, 720);
  // Every layer reached the server, listed with its rid, rate and the size its keyframes carry.
  let layers;
  await until(async () => {
    const streams = await (await fetch(`${base}/api/streams`)).json();
    const entry = streams.streams.find((s) => s.stream === stream);
    layers = entry.publisher.sources.filter((s) => s.kind === "video" && s.active && s.width);
    return layers.length === 3;
  }, "three active layers with their sizes in /api/streams");
  const sizes = Object.fromEntries(layers.map((l) => [l.rid, `${l.width}x${l.height}`]));
  assert.deepEqual(sizes, { l: "320x180", m: "640x360", h: "1280x720" });
  // A second viewer asks for the low layer at its POST (`?layer=l`): it decodes 320x180.
  const low = await openPage();
  await low.page.evaluate(async (stream) => {
    const { Session } = await import("/whip-client.js");
    window.started = performance.now();
    window.session = new Session({ endpoint: `/whep/${stream}?layer=l`, kind: "whep", video: true });
    await window.session.start();
  }, stream);
  const lowDecoded = await decoded(320, low.page);
  assert.ok(!lowDecoded.timedOut, JSON.stringify(lowDecoded));
  // The first viewer changes to the middle layer on its layer URL (the WHEP layer extension,
  // as Broadcast Box's page asks): it decodes 640x360, its decoder carrying on.
  const change = await viewer.page.evaluate(async () => {
    const res = await fetch(`${window.session.resource}/layer`, { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ mediaId: "1", encodingId: "m" }) });
    return { status: res.status, body: await res.json() };
  });
  assert.equal(change.status, 200, JSON.stringify(change));
  assert.equal(change.body.requested, "m");
  const changed = await decoded(640);
  assert.ok(!changed.timedOut && changed.framesDecoded > after.framesDecoded, JSON.stringify(changed));
  const players = (await (await fetch(`${base}/api/streams`)).json()).streams.find((s) => s.stream === stream).players;
  assert.deepEqual(players.map((p) => p.layer).sort(), ["l", "m"], JSON.stringify(players));
  console.log(`# Chromium simulcast l/m/(h off): the WHEP viewer decoded ${before.width}x${before.height} after ${before.ms} ms; h on: ${after.width}x${after.height} after ${after.ms} ms; a viewer asking for l: ${lowDecoded.width}x${lowDecoded.height} after ${lowDecoded.ms} ms; layer change to m: ${changed.width}x${changed.height}; layers ${JSON.stringify(sizes)}`);
  await low.page.evaluate(() => window.session.stop());
  await low.context.close();
  await viewer.page.evaluate(() => window.session.stop());
  await publisher.page.evaluate(() => window.publisher.close());
  for (const p of [publisher, viewer]) await p.context.close();
  await until(async () => (await sessions()) === 0, "the server to have no session");
});

test("a second browser plays the stream another one publishes", async () => {
  const stream = `shared-${Date.now()}`;
  const publisher = await openPage(stream);
  await publisher.page.click("#publish");
  await publisher.page.waitForFunction(() => window.whipEcho.status === "connected", null, { timeout: WAIT });
  const viewer = await openPage(stream);
  // A typed bearer token goes out as Authorization on the POST (whip-echo itself ignores it).
  await viewer.page.fill("#token", "s3cret-token");
  const post = viewer.page.waitForRequest((r) => r.method() === "POST" && r.url().includes("/whep/"));
  await viewer.page.click("#play");
  assert.equal((await post).headers().authorization, "Bearer s3cret-token");
  const state = await waitForAudio(viewer.page);
  assert.ok(state.stats.packetsReceived > 0);

  // A second publisher on the same stream takes it over (--publisher-conflict takeover):
  // the viewer keeps playing, now the second publisher's audio.
  const second = await openPage(stream);
  await second.page.click("#publish");
  await second.page.waitForFunction(() => window.whipEcho.status === "connected", null, { timeout: WAIT });
  const before = await viewer.page.evaluate(() => window.whipEcho.stats.packetsReceived);
  await viewer.page.waitForFunction((n) => window.whipEcho.stats.packetsReceived > n + 50, before, { timeout: WAIT });
  // The first publisher's page learns at once (DTLS close_notify, then GET 410) that the server
  // ended its session, and why, instead of staying "connected" until consent fails.
  await publisher.page.waitForFunction(() => window.whipEcho.status === "ended", null, { timeout: WAIT });
  assert.equal(await publisher.page.textContent("#error"),
    "The server ended the session: a new publisher took the stream over.");
  for (const p of [second, viewer]) await p.page.click("#hangup");
  for (const p of [publisher, viewer, second]) await p.context.close();
  await until(async () => (await sessions()) === 0, "the server to have no session");
});

test("without tokens (the default: reject), a second publisher sees the server's 409 and its reason", async () => {
  const { child, base: strict } = await startServer();
  try {
    const stream = `strict-${Date.now()}`;
    const first = await openPage(stream, strict);
    await first.page.click("#publish");
    await first.page.waitForFunction(() => window.whipEcho.status === "connected", null, { timeout: WAIT });
    const second = await openPage(stream, strict);
    await second.page.click("#publish");
    await second.page.waitForFunction(() => window.whipEcho.status === "failed", null, { timeout: WAIT });
    const error = await second.page.textContent("#error");
    assert.match(error, /409/);
    assert.match(error, /already has a live publisher/);
    await second.page.screenshot({ path: path.join(shots, "conflict.png"), fullPage: true });
    await first.page.click("#hangup");
    for (const p of [first, second]) await p.context.close();
  } finally {
    child.kill("SIGTERM");
  }
});

test("a page on another origin publishes and plays with plain fetch + RTCPeerConnection", async () => {
  const thirdParty = createServer((req, res) => {
    res.setHeader("Content-Type", "text/html");
    res.end(`<!doctype html><title>third party</title><script type="module">
      const server = ${JSON.stringify(base)};
      async function leg(kind, track) {
        const pc = new RTCPeerConnection();
        if (track) pc.addTransceiver(track, { direction: "sendonly" });
        else pc.addTransceiver("audio", { direction: "recvonly" });
        await pc.setLocalDescription(await pc.createOffer());
        await new Promise((r) => pc.iceGatheringState === "complete" ? r() :
          pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && r()));
        const res = await fetch(server + "/" + kind + "/cross-origin", { method: "POST",
          headers: { "Content-Type": "application/sdp" }, body: pc.localDescription.sdp });
        if (res.status !== 201) throw new Error(kind + " " + res.status);
        window.locations.push(new URL(res.headers.get("Location"), server).href);
        await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
        return pc;
      }
      window.locations = [];
      window.received = 0;
      const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
      const viewer = await leg("whep");
      await leg("whip", mic.getAudioTracks()[0]);
      setInterval(async () => {
        for (const s of (await viewer.getStats()).values())
          if (s.type === "inbound-rtp") window.received = s.packetsReceived;
      }, 50);
    </script>`);
  });
  await new Promise((r) => thirdParty.listen(0, "127.0.0.1", r));
  const origin = `http://127.0.0.1:${thirdParty.address().port}`;
  assert.notEqual(origin, base);
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(origin);
  await page.waitForFunction(() => window.received > 0, null, { timeout: WAIT }).catch((e) => {
    throw new Error(`${e.message}; page errors: ${errors.join("; ")}`);
  });
  // The Location header was readable cross-origin (exposed by CORS) and DELETE works from there.
  const statuses = await page.evaluate(async () =>
    Promise.all(window.locations.map(async (u) => (await fetch(u, { method: "DELETE" })).status)));
  assert.deepEqual(statuses, [200, 200]);
  await context.close();
  thirdParty.close();
});

/**
 * Runs an echo test against a server on fixed media ports `port` whose traffic matching each of
 * `drops` (nftables match expressions, e.g. "udp dport 18189") is dropped in this namespace (run.sh
 * made it: only loopback), as a PaaS host's firewall would; `forwards` ({ match, to }) are DNAT
 * rules in front, as a TCP proxy would be. Returns the drop and forward counters.
 */
async function echoBehindFirewall(port, drops, shot, { extra = [], scheme = "http", forwards = [] } = {}) {
  const { child, base: plain } = await startServer(extra, port);
  const behind = plain.replace(/^http:/, `${scheme}:`);
  const nft = (...args) => execFileSync("nft", args, { encoding: "utf8" });
  const counters = (...table) => nft("list", "table", ...table).match(/packets (\d+)/g).map((m) => Number(m.split(" ")[1]));
  nft("add", "table", "ip", "forward");
  nft("add", "chain", "ip", "forward", "out", "{ type nat hook output priority -100 ; }");
  for (const { match, to } of forwards) nft("add", "rule", "ip", "forward", "out", ...match.split(" "), "counter", "dnat", "to", to);
  nft("add", "table", "inet", "firewall");
  nft("add", "chain", "inet", "firewall", "out", "{ type filter hook output priority 0 ; }");
  for (const rule of drops) nft("add", "rule", "inet", "firewall", "out", ...rule.split(" "), "counter", "drop");
  try {
    const { context, page } = await openPage(`fw-${Date.now()}`, behind);
    await page.check("#single");
    await page.click("#echo");
    const state = await waitForAudio(page);
    assert.ok(state.stats.packetsReceived > 0);
    console.log(`# ${shot}: click -> first echoed audio ${state.firstAudioMs} ms`);
    await page.screenshot({ path: path.join(shots, `${shot}.png`), fullPage: true });
    await page.click("#hangup");
    await context.close();
    return { state, dropped: counters("inet", "firewall"), forwarded: forwards.length ? counters("ip", "forward") : [] };
  } finally {
    nft("delete", "table", "inet", "firewall");
    nft("delete", "table", "ip", "forward");
    child.kill("SIGTERM");
  }
}

test("where UDP is dropped, the echo connects over ICE-TCP on the shared TCP port", async () => {
  const port = "18189";
  const { dropped, state } = await echoBehindFirewall(port, [`udp dport ${port}`, `udp sport ${port}`], "ice-tcp");
  // UDP was tried and dropped, so the audio came back over TCP, and the page says so.
  assert.ok(dropped[0] > 0, `UDP to the media port was tried: ${dropped}`);
  assert.equal(state.paths[0].label, `TCP to 127.0.0.1:${port}`);
});

test("where UDP and the ICE-TCP port are dropped, media flows on the HTTP port itself", async () => {
  const port = "18190";
  const { dropped, state } = await echoBehindFirewall(port,
    [`udp dport ${port}`, `udp sport ${port}`, `tcp dport ${port}`, `tcp sport ${port}`], "ice-tcp-http-port");
  // Both media ports were tried and dropped: the audio came over the HTTP port's connection.
  assert.ok(dropped[0] > 0 && dropped[2] > 0, `UDP and TCP to the media port were tried: ${dropped}`);
  assert.equal(state.paths[0].name, "tcp-http-port");
});

test("with HTTPS on the HTTP port and every other port dropped, page, signalling and media share it", async () => {
  const { cert, key } = selfSignedCert("127.0.0.1");
  const port = "18191";
  const { dropped, state } = await echoBehindFirewall(port,
    [`udp dport ${port}`, `udp sport ${port}`, `tcp dport ${port}`, `tcp sport ${port}`], "ice-tcp-https-port",
    { extra: ["--tls-cert", cert, "--tls-key", key], scheme: "https" });
  assert.ok(dropped[0] > 0 && dropped[2] > 0, `UDP and TCP to the media port were tried: ${dropped}`);
  assert.equal(state.paths[0].name, "tcp-http-port");
});

test("behind a port forward (a PaaS TCP proxy), --public-tcp announces the outside port and media flows through it", async () => {
  // Outside port 18999 is forwarded (DNAT) to the ICE-TCP port 18192; UDP and every connection
  // made straight to 18192 are dropped, and the HTTP port carries no media: the forward is the
  // only way in, as on Railway.
  const [port, outside] = ["18192", "18999"];
  const { dropped, forwarded, state } = await echoBehindFirewall(port,
    [`udp dport ${port}`, `udp sport ${port}`, `tcp dport ${port} ct original proto-dst ${port}`], "port-forward", {
      extra: ["--public-tcp", `127.0.0.1:${outside}`, "--media-on-http-port", "false"],
      forwards: [{ match: `tcp dport ${outside}`, to: `127.0.0.1:${port}` }],
    });
  assert.ok(forwarded[0] > 0, "the connection came through the forward");
  assert.equal(state.paths[0].label, `TCP to 127.0.0.1:${outside}`);
  assert.ok(dropped[2] > 0, "the direct ICE-TCP candidate was tried and dropped");
});

test("when media cannot connect, the page says ICE failed and that UDP looks blocked", async () => {
  // Every media packet to and from the server's media port is dropped (and the HTTP port carries
  // no media), as behind a firewall that passes only HTTP.
  const port = "18193";
  const { child, base: unreachable } = await startServer(["--media-on-http-port", "false"], port);
  const nft = (...args) => execFileSync("nft", args, { encoding: "utf8" });
  try {
    nft("add", "table", "inet", "blocked");
    nft("add", "chain", "inet", "blocked", "out", "{ type filter hook output priority 0 ; }");
    for (const rule of [`udp dport ${port}`, `udp sport ${port}`, `tcp dport ${port}`, `tcp sport ${port}`]) {
      nft("add", "rule", "inet", "blocked", "out", ...rule.split(" "), "drop");
    }
    const { context, page } = await openPage(undefined, unreachable);
    await page.check("#single");
    await page.click("#echo");
    await page.waitForFunction(() => window.whipEcho.status === "failed", null, { timeout: WAIT });
    const error = await page.textContent("#error");
    assert.match(error, /ICE failed/);
    assert.match(error, /UDP/);
    assert.match(error, /Tried: .*udp/);
    // It names the ports the answer announced, to open on the server.
    assert.match(error, new RegExp(`open UDP ${port} or TCP ${port} on the server`));
    await page.screenshot({ path: path.join(shots, "ice-failed.png"), fullPage: true });
    // The page gave up cleanly: its session is deleted rather than left for the server to reap.
    await until(async () => {
      const text = await (await fetch(`${unreachable}/healthz`)).text();
      return text.includes("sessions=0");
    }, "the failed session to be deleted");
    await context.close();
  } finally {
    try { nft("delete", "table", "inet", "blocked"); } catch { /* never made */ }
    child.kill("SIGTERM");
  }
});
