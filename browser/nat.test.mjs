// Traversal matrix: Chromium (in this namespace, the client's) reaches whip-echo (in a server
// namespace) only through a router namespace that NATs the server, as a cloud VM's 1:1 NAT or a
// PaaS edge would. Per scenario the router forwards only some ports and silently drops the rest;
// the page publishes by WHIP and plays by WHEP, then uses /echo, and must hear its own audio over
// the expected path. Run through run.sh (a fresh namespace, as root or in a user namespace).
//
//   client ns: c0 10.10.0.2 ── r0 10.10.0.1 [router ns: DNAT + drop] r1 10.20.0.1 ── s0 10.20.0.2: server ns
//
// The server announces its own address (10.20.0.2, unreachable from the client: no route) and the
// public one, --public-ip 10.10.0.1, like a VM behind an elastic IP.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { WAIT, gotoPage, launch, launchChromium, selfSignedCert, shots, waitForAudio } from "./support.mjs";

const PUBLIC = "10.10.0.1";
const SERVER = "10.20.0.2";
const [HTTP, MEDIA] = [8080, 8189];

/** The scenarios of issue 12; `open` lists what the router forwards besides TCP to the HTTP port. */
const SCENARIOS = [
  { id: "a", what: "all open", open: "all", paths: ["udp"] },
  { id: "b", what: "only the UDP media port open", open: [["udp", MEDIA, MEDIA]], paths: ["udp"] },
  { id: "c", what: "all UDP dropped, only TCP to the HTTP port", open: [], paths: ["tcp-http-port"] },
  { id: "d", what: "all UDP dropped, the HTTP port and the ICE-TCP port open", open: [["tcp", MEDIA, MEDIA]],
    paths: ["tcp", "tcp-http-port"] },
  { id: "e", what: "as (c), with HTTPS on the HTTP port", open: [], https: true, paths: ["tcp-http-port"] },
  { id: "f", what: "UDP forwarded from another outside port (--public-udp)", open: [["udp", 40000, MEDIA]],
    extra: ["--public-udp", `${PUBLIC}:40000`], paths: ["udp"] },
];

let holders = [];
let router;
let serverNs;
let browser;

/** Runs `command` inside the network namespace of process `pid`. */
function inNs(pid, command, options = {}) {
  return execFileSync("nsenter", [`--net=/proc/${pid}/ns/net`, ...command], { encoding: "utf8", ...options });
}

/** A new network namespace, held open by a sleeping child; returns the child's pid. */
async function namespace() {
  const holder = spawn("unshare", ["--net", "sleep", "infinity"], { stdio: "ignore" });
  holders.push(holder);
  // The child is in its namespace once /proc says its net namespace differs from ours.
  const ours = execFileSync("readlink", ["/proc/self/ns/net"], { encoding: "utf8" });
  const deadline = Date.now() + WAIT;
  while (Date.now() < deadline) {
    try {
      if (execFileSync("readlink", [`/proc/${holder.pid}/ns/net`], { encoding: "utf8" }) !== ours) return holder.pid;
    } catch { /* not started yet */ }
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error("unshare did not start");
}

/** The router's ruleset for `scenario`: DNAT what is open, drop everything else without a word. */
function routerRules({ open }) {
  const forwards = open === "all"
    ? [`iifname "r0" ip daddr ${PUBLIC} dnat to ${SERVER}`]
    : [["tcp", HTTP, HTTP], ...open].map(([proto, outside, inside]) =>
      `iifname "r0" ip daddr ${PUBLIC} ${proto} dport ${outside} counter dnat to ${SERVER}:${inside}`);
  return `flush ruleset
table ip nat {
  chain pre { type nat hook prerouting priority -100; ${forwards.join("; ")}; }
}
table inet filter {
  chain forwarding { type filter hook forward priority 0; policy drop;
    ct state established,related accept; ct status dnat accept; iifname "r1" accept; }
  chain inbound { type filter hook input priority 0; policy drop; iifname "lo" accept; }
}
`;
}

before(async () => {
  mkdirSync(shots, { recursive: true });
  router = await namespace();
  serverNs = await namespace();
  const sh = (pid, script) => inNs(pid, ["sh", "-c", script]);
  execFileSync("ip", ["link", "add", "c0", "type", "veth", "peer", "name", "r0", "netns", String(router)]);
  execFileSync("ip", ["link", "add", "s0", "netns", String(serverNs), "type", "veth", "peer", "name", "r1", "netns", String(router)]);
  execFileSync("sh", ["-c", "ip addr add 10.10.0.2/24 dev c0 && ip link set c0 up"]);
  sh(router, `ip link set lo up && ip addr add ${PUBLIC}/24 dev r0 && ip addr add 10.20.0.1/24 dev r1 &&
    ip link set r0 up && ip link set r1 up && echo 1 > /proc/sys/net/ipv4/ip_forward`);
  sh(serverNs, `ip link set lo up && ip addr add ${SERVER}/24 dev s0 && ip link set s0 up && ip route add default via 10.20.0.1`);
  // The page's origin is a plain-HTTP private address: let it use the (fake) microphone.
  browser = await launchChromium([`--unsafely-treat-insecure-origin-as-secure=http://${PUBLIC}:${HTTP}`]);
});

after(async () => {
  await browser?.close();
  try { execFileSync("ip", ["link", "del", "c0"]); } catch { /* gone with its namespace */ }
  for (const holder of holders) holder.kill("SIGKILL");
});

/** Publishes + plays (two legs), then echoes on one connection; returns each run's page state. */
async function echoBoth(base, scenario) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e));
  page.on("requestfailed", (r) => console.error("request failed:", r.url(), r.failure()?.errorText));
  page.on("console", (m) => { if (m.type() === "error") console.error("console:", m.text()); });
  await gotoPage(page, base);
  const runs = [];
  for (const single of [false, true]) {
    await page.fill("#stream", `nat-${scenario.id}-${single ? "echo" : "whip"}`);
    await page.setChecked("#single", single);
    await page.click("#echo");
    const state = await waitForAudio(page);
    const posted = state.timeline.find((m) => m.label.endsWith("POST sent")).ms;
    runs.push({ mode: single ? "/echo" : "WHIP + WHEP", state, postToAudio: state.firstAudioMs - posted });
    await page.screenshot({ path: path.join(shots, `nat-${scenario.id}${single ? "-echo" : ""}.png`), fullPage: true });
    await page.click("#hangup");
    // Hanging up DELETEs every leg's resource: the server is left with no session.
    await page.waitForFunction(async () => (await (await fetch("/healthz")).text()).includes("sessions=0"),
      null, { timeout: WAIT, polling: 100 });
  }
  const selfTest = await page.textContent("#server-paths");
  await context.close();
  return { runs, selfTest };
}

for (const scenario of SCENARIOS) {
  test(`NAT (${scenario.id}) ${scenario.what}: WHIP + WHEP and /echo hear their own audio`, async () => {
    inNs(router, ["nft", "-f", "-"], { input: routerRules(scenario) });
    const tls = scenario.https ? selfSignedCert(PUBLIC) : null;
    const args = ["--listen", `0.0.0.0:${HTTP}`, "--udp-port", String(MEDIA), "--tcp-port", String(MEDIA),
      "--public-ip", PUBLIC, ...(tls ? ["--tls-cert", tls.cert, "--tls-key", tls.key] : []), ...(scenario.extra || [])];
    const { child } = await launch(args, ["nsenter", `--net=/proc/${serverNs}/ns/net`]);
    try {
      const base = `${tls ? "https" : "http"}://${PUBLIC}:${HTTP}/`;
      const { runs, selfTest } = await echoBoth(base, scenario);
      for (const { mode, state, postToAudio } of runs) {
        const names = state.paths.map((p) => p.name);
        for (const name of names) assert.ok(scenario.paths.includes(name), `${mode}: path ${name}, expected one of ${scenario.paths}`);
        // Generous bounds only: CI machines are slow, and this is not a benchmark.
        assert.ok(postToAudio < 10_000, `${mode}: POST -> first audio ${postToAudio} ms`);
        console.log(`# NAT (${scenario.id}) ${mode}: POST -> first audio ${postToAudio} ms, ` +
          `click -> first audio ${state.firstAudioMs} ms, via ${state.paths.map((p) => p.label).join(" + ")}`);
      }
      // The server's own self-test saw every path answer (on its loopback, so also the blocked ones).
      assert.match(selfTest, /UDP \d+ ok · TCP \d+ ok · TCP on the HTTP port \d+ ok/);
    } finally {
      child.kill("SIGTERM");
      await new Promise((r) => (child.exitCode !== null ? r() : child.once("exit", r)));
    }
  });
}

test("NAT, nothing but HTTP open and media off the HTTP port: the page says which ports to open", async () => {
  inNs(router, ["nft", "-f", "-"], { input: routerRules({ open: [] }) });
  const args = ["--listen", `0.0.0.0:${HTTP}`, "--udp-port", String(MEDIA), "--tcp-port", String(MEDIA),
    "--public-ip", PUBLIC, "--media-on-http-port", "false"];
  const { child } = await launch(args, ["nsenter", `--net=/proc/${serverNs}/ns/net`]);
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    await gotoPage(page, `http://${PUBLIC}:${HTTP}/`);
    await page.check("#single");
    await page.click("#echo");
    await page.waitForFunction(() => window.whipEcho.status === "failed", null, { timeout: WAIT });
    const error = await page.textContent("#error");
    assert.match(error, new RegExp(`open UDP ${MEDIA} or TCP ${MEDIA} on the server`), error);
    await page.screenshot({ path: path.join(shots, "nat-blocked.png"), fullPage: true });
    await context.close();
  } finally {
    child.kill("SIGTERM");
    await new Promise((r) => (child.exitCode !== null ? r() : child.once("exit", r)));
  }
});
