// The page tells the truth in every state (issue 13): who ended a session, per-leg status, a player
// waiting for its publisher, no candidates at all, a failed leg; the details a first visit meets
// (pattern, favicon, redirects, phone width, dark mode); and the measured echo latency. Headless
// Chromium against the release binary, in run.sh's namespace (loopback only).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createSocket } from "node:dgram";
import { createServer } from "node:http";
import { mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { WAIT, gotoPage, launchChromium, startServer, root, shots, waitForAudio, warnings } from "./support.mjs";

let server;
let base;
let browser;

async function openPage(url = base, { stream, init, context: options = {} } = {}) {
  const context = await (options.browser || browser).newContext(options.newContext || {});
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e));
  if (init) await page.addInitScript(init);
  await gotoPage(page, url);
  if (stream) await page.fill("#stream", stream);
  return { context, page };
}

const statusIs = (page, status) => page.waitForFunction((s) => window.whipEcho.status === s, status, { timeout: WAIT });
const statusText = (page) => page.textContent("#status");

before(async () => {
  mkdirSync(shots, { recursive: true });
  ({ child: server, base } = await startServer());
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  server?.kill("SIGTERM");
});

test("a session deleted by someone else: the page says the server ended it, and why", async () => {
  const { context, page } = await openPage();
  await page.check("#single");
  await page.click("#echo");
  await waitForAudio(page);
  const [resource] = await page.evaluate(() => window.whipEcho.resources);
  assert.equal((await fetch(resource, { method: "DELETE" })).status, 200);
  // Chromium gets the server's close_notify at once; the page asks the resource why (410).
  await statusIs(page, "ended");
  assert.equal(await page.textContent("#error"), "The server ended the session: its resource was deleted (a DELETE request).");
  assert.doesNotMatch(await page.textContent("#error"), /ICE|UDP/);
  await context.close();
});

test("a server stopped with SIGTERM: the page says so at once, not 'ICE failed' 17 s later", async () => {
  const own = await startServer();
  const { context, page } = await openPage(own.base);
  await page.check("#single");
  await page.click("#echo");
  await waitForAudio(page);
  const stopped = Date.now();
  own.child.kill("SIGTERM");
  await statusIs(page, "ended");
  const error = await page.textContent("#error");
  // Shutdown sends close_notify to every session; by the time the page asks, the server is gone
  // (or, within its last milliseconds, answers that it is shutting down).
  assert.match(error, /^The server (stopped, or cannot be reached any more|ended the session: the server is shutting down)/);
  assert.ok(Date.now() - stopped < 5000, `noticed after ${Date.now() - stopped} ms`);
  await context.close();
});

test("a session the server reaped after losing contact: the page says why once ICE disconnects", async () => {
  // The server gives up after 2 s without consent (RFC 7675); then every media packet is dropped.
  const port = "18194";
  const own = await startServer(["--ice-timeout", "2", "--media-on-http-port", "false"], port);
  const { context, page } = await openPage(own.base);
  const nft = (...args) => execFileSync("nft", args, { encoding: "utf8" });
  try {
    await page.check("#single");
    await page.click("#echo");
    await waitForAudio(page);
    nft("add", "table", "inet", "cut");
    nft("add", "chain", "inet", "cut", "out", "{ type filter hook output priority 0 ; }");
    for (const rule of [`udp dport ${port}`, `udp sport ${port}`]) nft("add", "rule", "inet", "cut", "out", ...rule.split(" "), "drop");
    await statusIs(page, "ended");
    assert.equal(await page.textContent("#error"),
      "The server ended the session: the server lost contact with the client (ICE consent expired).");
  } finally {
    try { nft("delete", "table", "inet", "cut"); } catch { /* not made */ }
    await context.close();
    own.child.kill("SIGTERM");
  }
});

test("log levels: a client's mistake is debug, a full server warns, nothing is an error", async () => {
  // (No self-test: its sessions would be refused too, and it would rightly warn.)
  const own = await startServer(["--max-sessions", "0", "--self-test", "false"]);
  try {
    const offer = readFileSync(path.join(root, "tests/data/offer.sdp"), "utf8");
    const post = (type) => fetch(`${own.base}/whip/full`, { method: "POST", headers: { "Content-Type": type }, body: offer });
    assert.equal((await post("text/plain")).status, 415);
    assert.deepEqual(warnings(own.child), [], "a 415 is the client's business");
    assert.equal((await post("application/sdp")).status, 503);
    // The log line comes through a pipe: poll it (bounded), there is no event for it.
    const end = Date.now() + WAIT;
    const logged = await new Promise((resolve, reject) => {
      const check = () => warnings(own.child).length ? resolve(warnings(own.child))
        : Date.now() > end ? reject(new Error("no WARN logged for a 503")) : setTimeout(check, 20);
      check();
    });
    assert.equal(logged.length, 1, JSON.stringify(logged));
    assert.match(logged[0], /"level":"WARN"/);
    assert.match(logged[0], /request refused/);
  } finally {
    own.child.kill("SIGTERM");
  }
});

/** Starts coturn on loopback with a TURN REST shared secret; resolves once it answers STUN. */
async function startTurn(port, secret) {
  const turn = spawn("turnserver", ["-n", "--no-cli", "--no-tls", "--no-dtls", "--listening-ip=127.0.0.1",
    "--relay-ip=127.0.0.1", `--listening-port=${port}`, "--min-port=49160", "--max-port=49200",
    "--use-auth-secret", `--static-auth-secret=${secret}`, "--realm=whip-echo", "--allow-loopback-peers",
    "--pidfile=/tmp/whip-echo-test-turn.pid", "--log-file=stdout", "--simple-log"], { stdio: "ignore" });
  // A STUN Binding request (RFC 8489 §6) every 100 ms until the server answers.
  const socket = createSocket("udp4");
  const request = Buffer.alloc(20);
  request.writeUInt16BE(0x0001, 0);
  request.writeUInt32BE(0x2112a442, 4);
  try {
    await new Promise((resolve, reject) => {
      const deadline = setTimeout(() => reject(new Error("coturn did not answer")), WAIT);
      socket.on("message", () => { clearTimeout(deadline); clearInterval(ping); resolve(); });
      const ping = setInterval(() => socket.send(request, port, "127.0.0.1"), 100);
    });
  } finally {
    socket.close();
  }
  return turn;
}

test("a TURN server from the Link headers: a browser that may only relay still hears its echo", async () => {
  const [port, secret] = [34781, "a-turn-rest-secret"];
  const turn = await startTurn(port, secret);
  const own = await startServer(["--ice-server", `turn:127.0.0.1:${port}?transport=udp`, "--turn-secret", secret]);
  try {
    // The OPTIONS answer carries the server, with credentials minted for it (RFC 9725 §4.6):
    // a username of its own naming the stream.
    const options = await fetch(`${own.base}/echo/relayed`, { method: "OPTIONS" });
    assert.match(options.headers.get("link"),
      new RegExp(`^<turn:127.0.0.1:${port}\\?transport=udp>; rel="ice-server"; username="\\d+:relayed:[0-9a-f]{8}"; credential="[^"]+"; credential-type="password"$`));
    // Not on a CORS preflight, which any origin can send without a token.
    const preflight = await fetch(`${own.base}/echo/relayed`, {
      method: "OPTIONS",
      headers: { origin: "https://anyone.example", "access-control-request-method": "POST" },
    });
    assert.equal(preflight.headers.get("link"), null);
    // Only relay candidates: the media can only flow through coturn.
    const init = () => {
      const Real = window.RTCPeerConnection;
      window.RTCPeerConnection = function (config) { return new Real({ ...config, iceTransportPolicy: "relay" }); };
      window.RTCPeerConnection.prototype = Real.prototype;
      Real.prototype.setConfiguration = new Proxy(Real.prototype.setConfiguration, {
        apply: (f, pc, [config]) => f.call(pc, { ...config, iceTransportPolicy: "relay" }),
      });
    };
    const { context, page } = await openPage(own.base, { init });
    await page.check("#single");
    await page.click("#echo");
    const state = await waitForAudio(page);
    assert.equal(state.paths[0].name, "relay", JSON.stringify(state.paths));
    console.log(`# TURN relay: click -> first echoed audio ${state.firstAudioMs} ms via ${state.paths[0].label}`);
    await page.click("#hangup");
    await context.close();
  } finally {
    own.child.kill("SIGTERM");
    turn.kill("SIGTERM");
  }
});

test("a server that wants tokens: the page says so, and the typed token works", async () => {
  const own = await startServer(["--publish-token", "s3cret-token", "--play-token", "s3cret-token"]);
  try {
    const { context, page } = await openPage(own.base);
    await page.check("#single");
    for (const [token, reason] of [["", "a bearer token is required"], ["guess", "the bearer token is not valid here"]]) {
      await page.fill("#token", token);
      await page.click("#echo");
      await statusIs(page, "failed");
      assert.match(await page.textContent("#error"), new RegExp(`^The server answered 401: ${reason}`));
    }
    await page.fill("#token", "s3cret-token");
    await page.click("#echo");
    await waitForAudio(page);
    await page.click("#hangup");
    // Two legs, one token for both.
    await page.uncheck("#single");
    await page.click("#echo");
    await waitForAudio(page);
    await statusIs(page, "connected");
    await page.click("#hangup");
    await context.close();
  } finally {
    own.child.kill("SIGTERM");
  }
});

test("echo test with a slow microphone prompt: per-leg status, never 'Connected' before both legs are", async () => {
  // The permission prompt takes 1.5 s; the player leg connects meanwhile.
  const init = () => {
    const real = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
    navigator.mediaDevices.getUserMedia = (c) => new Promise((r) => setTimeout(r, 1500)).then(() => real(c));
  };
  const { context, page } = await openPage(base, { init });
  await page.click("#echo");
  await page.waitForFunction(() => window.whipEcho.legs.play === "waiting for the publisher", null, { timeout: WAIT });
  assert.equal(await statusText(page), "Play: waiting for the publisher · Publish: waiting for the microphone");
  assert.equal(await page.evaluate(() => window.whipEcho.status), "connecting");
  const labels = await page.evaluate(() => window.whipEcho.timeline.map((m) => m.label));
  assert.ok(!labels.some((l) => l.startsWith("publish:")), `nothing of the publish leg yet: ${labels}`);
  await statusIs(page, "connected");
  await page.waitForFunction(() => window.whipEcho.legs.play === "receiving audio", null, { timeout: WAIT });
  assert.equal(await statusText(page), "Play: receiving audio · Publish: connected");
  await page.click("#hangup");
  await context.close();
});

test("play on a stream nobody publishes: 'waiting for the publisher' until audio arrives", async () => {
  const stream = `lonely-${Date.now()}`;
  const viewer = await openPage(base, { stream });
  await viewer.page.click("#play");
  await statusIs(viewer.page, "connected");
  assert.equal(await statusText(viewer.page), "Waiting for the publisher.");
  const publisher = await openPage(base, { stream });
  await publisher.page.click("#publish");
  await viewer.page.waitForFunction(() => document.getElementById("status").textContent === "Receiving audio.",
    null, { timeout: WAIT });
  for (const p of [viewer, publisher]) {
    await p.page.click("#hangup");
    await p.context.close();
  }
});

test("the live streams list: a visitor sees what is published and plays it with one click", async () => {
  const stream = `listed-${Date.now()}`;
  const publisher = await openPage(base, { stream });
  await publisher.page.click("#publish");
  await statusIs(publisher.page, "connected");
  const visitor = await openPage(base);
  // Listed with its codec; the Play button fills in the name and plays it.
  const item = visitor.page.locator(`#live li[data-stream="${stream}"]`);
  await item.waitFor({ timeout: WAIT });
  assert.match(await item.textContent(), new RegExp(`^${stream} \\(opus, 0 listeners\\)`));
  await item.getByRole("button", { name: `Play ${stream}` }).click();
  assert.equal(await visitor.page.inputValue("#stream"), stream);
  await visitor.page.waitForFunction(() => document.getElementById("status").textContent === "Receiving audio.",
    null, { timeout: WAIT });
  for (const p of [visitor, publisher]) {
    await p.page.click("#hangup");
    await p.context.close();
  }
});

test("a failed leg (409) is named, and the other leg's marks are not shown as its own", async () => {
  // Without tokens a second publisher is refused by default.
  const strict = await startServer();
  try {
    const stream = `taken-${Date.now()}`;
    const first = await openPage(strict.base, { stream });
    await first.page.click("#publish");
    await statusIs(first.page, "connected");
    const second = await openPage(strict.base, { stream });
    await second.page.click("#echo");
    await statusIs(second.page, "failed");
    const error = await second.page.textContent("#error");
    assert.match(error, /^Publish: The server answered 409: stream .* already has a live publisher/);
    const labels = await second.page.evaluate(() => window.whipEcho.timeline.map((m) => m.label));
    assert.ok(!labels.includes("publish: 201 received"), JSON.stringify(labels));
    assert.ok(labels.every((l) => /^(play|publish): /.test(l)), JSON.stringify(labels));
    assert.match(await statusText(second.page), /Publish: failed/);
    await first.page.click("#hangup");
    for (const p of [first, second]) await p.context.close();
  } finally {
    strict.child.kill("SIGTERM");
  }
});

test("a browser that gathers no ICE candidates is told so, not that UDP is blocked", async () => {
  // As with a privacy extension or policy that allows only relayed WebRTC and no relay is
  // configured: Chromium gathers nothing at all.
  const init = () => {
    const Real = window.RTCPeerConnection;
    window.RTCPeerConnection = function (config) { return new Real({ ...config, iceTransportPolicy: "relay" }); };
    window.RTCPeerConnection.prototype = Real.prototype;
  };
  const { context, page } = await openPage(base, { init });
  await page.check("#single");
  await page.click("#echo");
  await statusIs(page, "failed");
  const error = await page.textContent("#error");
  assert.match(error, /gathered no ICE candidates/);
  assert.doesNotMatch(error, /UDP to the server is probably blocked/);
  await context.close();
});

test("first-visit details: a valid pattern, a favicon, and no 404 on load", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const missing = [];
  page.on("response", (r) => { if (r.status() === 404) missing.push(r.url()); });
  const consoleErrors = [];
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  await page.goto(base);
  await page.waitForLoadState("networkidle");
  assert.deepEqual(missing, []);
  assert.deepEqual(consoleErrors, []);
  // The pattern compiles under the `v` flag browsers now use, and the check works.
  const validity = await page.evaluate(() => {
    const input = document.getElementById("stream");
    new RegExp(`^(?:${input.pattern})$`, "v");
    const check = (v) => { input.value = v; return input.checkValidity(); };
    return { good: check("room-1_a.b~c"), slash: check("a/b"), space: check("a b") };
  });
  assert.deepEqual(validity, { good: true, slash: false, space: false });
  assert.equal((await fetch(`${base}/favicon.ico`)).headers.get("content-type"), "image/x-icon");
  // Link values as fetch joins several fields (", "), a comma and a quote inside a credential.
  const servers = await page.evaluate(async () => (await import("/whip-client.js")).iceServers(
    '<stun:stun.example.net>; rel="ice-server", <turn:t.example.net:3478?transport=udp>; rel="ice-server"; ' +
    'username="1700:whip-echo"; credential="a,b\\"c"; credential-type="password", <https://x>; rel="help"'));
  assert.deepEqual(servers, [
    { urls: "stun:stun.example.net" },
    { urls: "turn:t.example.net:3478?transport=udp", username: "1700:whip-echo", credential: 'a,b"c' },
  ]);
  // Advice against feedback, and the publisher set-ups for the current stream.
  assert.match(await page.textContent(".lead"), /Use headphones/);
  await page.fill("#stream", "setups");
  assert.equal(await page.inputValue("#obs-server"), `${base}/whip/setups`);
  assert.match(await page.inputValue("#gst-publish"), new RegExp(`whipsink whip-endpoint="${base}/whip/setups"`));
  assert.match(await page.inputValue("#gst-play"), new RegExp(`whepsrc whep-endpoint="${base}/whep/setups"`));
  await context.close();
});

test("after a 307 the resource URL is resolved against where the POST ended up (RFC 9725 §4.5)", async () => {
  // A front that redirects every POST to whip-echo, as a load balancer would.
  const front = createServer((req, res) => {
    res.setHeader("Access-Control-Allow-Origin", "*");
    res.setHeader("Access-Control-Allow-Headers", "Content-Type, Authorization");
    res.setHeader("Access-Control-Allow-Methods", "POST, OPTIONS");
    if (req.method === "OPTIONS") return res.writeHead(204).end();
    res.writeHead(307, { Location: `${base}${req.url}` }).end();
  });
  await new Promise((r) => front.listen(0, "127.0.0.1", r));
  const frontUrl = `http://127.0.0.1:${front.address().port}`;
  try {
    const { context, page } = await openPage();
    const resource = await page.evaluate(async (endpoint) => {
      const { Session } = await import("/whip-client.js");
      const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
      const session = new Session({ endpoint, kind: "whip", track: mic.getAudioTracks()[0], discovered: Promise.resolve({ trickle: false, iceServers: [] }) });
      await session.start();
      const url = session.resource;
      await session.stop();
      return url;
    }, `${frontUrl}/whip/redirected`);
    assert.ok(resource.startsWith(`${base}/resource/`), resource);
    await context.close();
  } finally {
    front.close();
  }
});

test("phone width shows the timeline without scrolling; disabled buttons stay readable in dark mode", async () => {
  const { context, page } = await openPage(base, { context: { newContext: { viewport: { width: 390, height: 844 } } } });
  await page.check("#single");
  await page.click("#echo");
  await waitForAudio(page);
  const top = await page.evaluate(() => document.querySelector("#timeline li").getBoundingClientRect().top);
  assert.ok(top < 844, `the timeline starts at ${top} px, below an 844 px screen`);
  await page.click("#hangup");
  await context.close();
  for (const colorScheme of ["dark", "light"]) {
    const ctx = await browser.newContext({ colorScheme });
    const p = await ctx.newPage();
    await p.goto(base);
    // The contrast of the disabled "Hang up" button's text against the page (WCAG 2 formula),
    // with the button's opacity applied.
    const ratio = await p.evaluate(() => {
      // Computed colours come as rgb(0-255 ...) or, from color-mix(), as color(srgb 0-1 ...).
      const rgb = (c) => {
        const v = c.match(/[\d.]+/g).map(Number);
        return c.startsWith("color(") ? v.slice(0, 3).map((x) => x * 255) : v.slice(0, 3);
      };
      const button = document.getElementById("hangup");
      const style = getComputedStyle(button);
      const page = rgb(getComputedStyle(document.body).backgroundColor === "rgba(0, 0, 0, 0)"
        ? getComputedStyle(document.documentElement).backgroundColor : getComputedStyle(document.body).backgroundColor);
      const bg = style.backgroundColor.startsWith("rgba(0, 0, 0, 0") ? page : rgb(style.backgroundColor);
      const alpha = Number(style.opacity);
      const fg = rgb(style.color).map((v, i) => v * alpha + bg[i] * (1 - alpha));
      const lum = ([r, g, b]) => [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
        .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
      const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
      return (a + 0.05) / (b + 0.05);
    });
    assert.ok(ratio >= 4.5, `${colorScheme}: disabled text contrast ${ratio.toFixed(2)}:1`);
    await p.screenshot({ path: path.join(shots, `idle-${colorScheme}.png`), fullPage: true });
    await ctx.close();
  }
});

/** Measures the echo latency on a connected page; returns the state's latency. */
async function measureLatency(page) {
  await page.waitForFunction(() => !document.getElementById("latency").disabled, null, { timeout: WAIT });
  await page.click("#latency");
  await page.waitForFunction(() => window.whipEcho.latency, null, { timeout: 30_000 });
  return page.evaluate(() => window.whipEcho.latency);
}

for (const single of [true, false]) {
  const mode = single ? "/echo" : "WHIP + WHEP";
  test(`measure latency (${mode}): tone bursts come back in a sane time; a 1 s echo delay adds 1 s`, async () => {
    const { context, page } = await openPage();
    await page.setChecked("#single", single);
    await page.click("#echo");
    await waitForAudio(page);
    await statusIs(page, "connected");
    const { ms, times } = await measureLatency(page);
    console.log(`# latency ${mode}: median ${ms} ms of ${JSON.stringify(times)}`);
    assert.ok(times.length >= 3, `most bursts came back: ${times}`);
    assert.ok(ms > 5 && ms < 1000, `median ${ms} ms`);
    assert.match(await page.textContent("#latency-result"), new RegExp(`^Echo latency ${ms} ms`));
    if (single) {
      // The delayed echo: the page plays what comes back one second later, and measures it there.
      await page.evaluate(() => (window.whipEcho.latency = null));
      await page.selectOption("#delay", "1");
      const delayed = await measureLatency(page);
      console.log(`# latency ${mode} with a 1 s echo delay: median ${delayed.ms} ms of ${JSON.stringify(delayed.times)}`);
      assert.ok(delayed.ms >= 1000 && delayed.ms < 2500, `delayed median ${delayed.ms} ms`);
      // The volume control reaches the playback.
      await page.fill("#volume", "0.3");
      await page.dispatchEvent("#volume", "input");
      assert.equal(await page.evaluate(() => document.getElementById("out").volume), 0.3);
      // Meters fall smoothly: never more than 10 % from one frame to the next.
      const drops = await page.evaluate(() => new Promise((resolve) => {
        const meter = document.getElementById("out-level");
        let last = meter.value;
        let worst = 1;
        const end = performance.now() + 1500;
        const frame = () => {
          if (last > 0.05) worst = Math.min(worst, meter.value / last);
          last = meter.value;
          if (performance.now() < end) requestAnimationFrame(frame); else resolve(worst);
        };
        requestAnimationFrame(frame);
      }));
      assert.ok(drops >= 0.89, `the meter fell to ${drops} of its value in one frame`);
    }
    await page.click("#hangup");
    await context.close();
  });
}
