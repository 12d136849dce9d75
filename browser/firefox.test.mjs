// WebRTC tests of whip-echo with Debian's firefox-esr (the second browser engine), headless,
// driven without a driver (firefox.mjs): the page (firefox-page.html, on an origin of its own, so
// every request to whip-echo is cross-origin) runs a scenario against the release binary and
// reports its getStats() numbers. browser/run.sh runs it in a network namespace with only loopback.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { runFirefoxPage } from "./firefox.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "..");
const binary = process.env.WHIP_ECHO_BIN || path.join(repo, "target/release/whip-echo");
const page = readFileSync(path.join(here, "firefox-page.html"), "utf8");
const files = { "/whip-client.js": readFileSync(path.join(repo, "static/whip-client.js"), "utf8") };

/** Starts whip-echo on loopback as the browser tests do; resolves with the child and base URL. */
function startServer(port = "0", extra = []) {
  const child = spawn(binary, ["--log-format", "json", "--listen", "127.0.0.1:0", "--udp-host", "127.0.0.1",
    "--udp-port", port, "--tcp-port", port, ...extra], { stdio: ["ignore", "pipe", "inherit"] });
  child.logs = [];
  let partial = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("whip-echo did not start")), 20_000);
    child.on("exit", (code) => reject(new Error(`whip-echo exited with ${code}`)));
    child.stdout.on("data", (chunk) => {
      const lines = (partial + chunk).split("\n");
      partial = lines.pop();
      child.logs.push(...lines.filter(Boolean));
      const match = child.logs.find((l) => l.includes("HTTP listening"))?.match(/"addr":"([^"]+)"/);
      if (match) {
        clearTimeout(timer);
        resolve({ child, base: `http://${match[1]}` });
      }
    });
  });
}

let server;
let base;

before(async () => {
  ({ child: server, base } = await startServer());
});

after(() => {
  // What an operator would read of these sessions (informative: not asserted).
  const warnings = server?.logs.filter((l) => /"level":"(WARN|ERROR)"/.test(l)) ?? [];
  console.log(`# whip-echo WARN/ERROR log lines during the Firefox tests: ${warnings.length}`);
  for (const line of warnings.slice(0, 10)) console.log(`#   ${line}`);
  server?.kill("SIGTERM");
});

/** Runs `scenario` in Firefox against `at` (default: the shared server). */
async function run(scenario, stream, at = base, prefs = {}) {
  const t = performance.now();
  const { result, errors, timings } = await runFirefoxPage({
    html: page, files, params: { base: at, scenario, stream }, timeoutMs: 90_000, prefs,
    handlers: { streams: async () => (await fetch(`${at}/api/streams`)).json() },
  });
  const warnings = errors.filter((e) => !e.fatal);
  console.log(`# firefox ${scenario}: start ${timings.startMs} ms, page ${timings.pageMs} ms, ` +
    `total with cleanup ${Math.round(performance.now() - t)} ms${warnings.length ? `; console.error: ${JSON.stringify(warnings)}` : ""}`);
  return result;
}

test("Firefox: WHIP publish (fake mic + camera) and WHEP play in one page: audio and video arrive", async () => {
  const r = await run("whip-whep", "s1");
  console.log(`# whip-whep: ${JSON.stringify({ gum: r.gum, player: r.player, publisherPath: r.publisherPath, ms: r.ms, candidates: r.candidates })}`);
  console.log(`# whip-whep: /api/streams ${JSON.stringify(r.streams)}`);
  assert.ok(r.player.audio.packetsReceived > 0, JSON.stringify(r.player));
  assert.ok(r.player.video.framesDecoded > 0, JSON.stringify(r.player));
  assert.ok(r.player.video.frameWidth > 0 && r.player.video.frameHeight > 0);
  assert.equal(r.player.path.local.protocol, "udp");
  assert.deepEqual(r.deleted, [200, 200]);
});

test("Firefox: /echo: the audio sent comes back on the same connection", async () => {
  const r = await run("echo", "s2");
  console.log(`# echo: ${JSON.stringify({ echo: r.echo, video: r.video, ms: r.ms })}`);
  assert.ok(r.echo.audio.packetsReceived > 0, JSON.stringify(r.echo));
  assert.ok(r.candidatesAtPost > 0, "without trickle the offer carries the candidates");
  assert.equal(r.echo.path.local.protocol, "udp");
  assert.equal(r.deleted, 200);
});

test("Firefox: trickle ICE: the offer goes without candidates, PATCHes carry them, it connects", async () => {
  const r = await run("trickle", "s3");
  console.log(`# trickle (by hand): ${JSON.stringify(r.mine)}`);
  console.log(`# trickle (whip-client.js): ${JSON.stringify(r.client)}`);
  assert.equal(r.mine.offerCandidates, 0, "the POSTed offer has no candidate");
  assert.ok(r.mine.echo.audio.packetsReceived > 0);
  const candidates = r.mine.patches.reduce((n, p) => n + p.candidates, 0);
  assert.ok(candidates > 0, JSON.stringify(r.mine.patches));
  assert.ok(r.mine.patches.some((p) => p.end), "end of candidates sent");
  assert.ok(r.mine.patches.every((p) => p.status === 204), JSON.stringify(r.mine.patches));
  assert.equal(r.deleted, 200);
  // whip-echo's own client, in Firefox.
  assert.ok(r.client.echo.audio.packetsReceived > 0);
  assert.ok(r.client.trickled.candidates > 0 && r.client.trickled.statuses.every((s) => s === 204), JSON.stringify(r.client.trickled));
});

test("Firefox: where UDP is dropped, the echo connects over ICE-TCP", async () => {
  const port = "18289";
  const { child, base: at } = await startServer(port);
  const nft = (...args) => execFileSync("nft", args, { encoding: "utf8" });
  nft("add", "table", "inet", "firefox");
  nft("add", "chain", "inet", "firefox", "out", "{ type filter hook output priority 0 ; }");
  for (const rule of [`udp dport ${port}`, `udp sport ${port}`]) nft("add", "rule", "inet", "firefox", "out", ...rule.split(" "), "counter", "drop");
  try {
    const r = await run("echo", "s4", at);
    const dropped = nft("list", "table", "inet", "firefox").match(/packets (\d+)/g).map((m) => Number(m.split(" ")[1]));
    console.log(`# ice-tcp: ${JSON.stringify({ path: r.echo.path, ms: r.ms, dropped, answerCandidates: r.answerCandidates })}`);
    assert.ok(r.echo.audio.packetsReceived > 0);
    assert.ok(dropped[0] > 0, `UDP to the media port was tried: ${dropped}`);
    assert.equal(r.echo.path.local.protocol, "tcp", JSON.stringify(r.echo.path));
    assert.equal(String(r.echo.path.remote.port), port, JSON.stringify(r.echo.path));
  } finally {
    nft("delete", "table", "inet", "firefox");
    child.kill("SIGTERM");
  }
});

test("Firefox: simulcast (rids l, m, h at 1280x720) by WHIP and a WHEP viewer that decodes the top layer", async () => {
  // Firefox ramps its send bitrate from 300 kb/s, turning the top layer on after a while; start
  // it at 3 Mb/s (as the Chromium test does with its own knob).
  const r = await run("simulcast", "s5", base, { "media.peerconnection.video.start_bitrate": 3000 });
  const { offer, answer, viewerAnswer, ...rest } = r;
  const frame = (s) => s?.video && `${s.video.frameWidth}x${s.video.frameHeight} (${s.video.framesDecoded} frames)`;
  console.log(`# simulcast: viewer's first video ${frame(r.viewer) ?? r.viewerError} after ${r.viewerVideoAt} ms, the top layer ${frame(r.viewerLater)} after ${r.viewerTopAt} ms`);
  console.log(`# simulcast: sent ${JSON.stringify(r.sent?.filter((s) => s.kind === "video").map((s) =>
    `${s.rid} ${s.frameWidth}x${s.frameHeight} ${s.framesEncoded} frames ${s.bytesSent} bytes`))}`);
  console.log(`# simulcast: /api/streams ${JSON.stringify(r.streams)}`);
  console.log(`# simulcast: ${JSON.stringify({ gum: rest.gum, parameters: rest.parameters, publisherConnected: rest.publisherConnected, viewerConnected: rest.viewerConnected, viewerVideoAt: rest.viewerVideoAt, error: rest.error })}`);
  assert.equal(r.error, undefined, r.error);
  assert.deepEqual([r.gum.width, r.gum.height], [1280, 720]);
  assert.match(r.offer, /a=simulcast:send l;m;h/);
  assert.ok(r.viewerAudio.packetsReceived > 0, "the viewer gets the audio");
  assert.ok(r.viewer?.video?.framesDecoded > 0, r.viewerError);
  // The top layer, whatever Firefox calls it, decoded by the viewer; every layer listed.
  assert.deepEqual([r.viewerLater.video.frameWidth, r.viewerLater.video.frameHeight], [1280, 720], r.viewerError);
  const sizes = Object.fromEntries(r.layers.map((l) => [l.rid, `${l.width}x${l.height}`]));
  assert.deepEqual(sizes, { l: "320x180", m: "640x360", h: "1280x720" });
});
