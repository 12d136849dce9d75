// Shared by the browser test files: the binary, Chromium's flags, starting the server, waiting for
// audio, and a self-signed certificate.

import { spawn, execFileSync } from "node:child_process";
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import path from "node:path";

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const binary = process.env.WHIP_ECHO_BIN || path.join(root, "target/release/whip-echo");
export const shots = path.join(root, "target/browser");
export const WAIT = 20_000;

export const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
  "--autoplay-policy=no-user-gesture-required",
  // The namespace has only loopback: let WebRTC use it, with real addresses rather than mDNS names.
  "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
];

/**
 * Starts the release binary with `args` (after `prefix`, e.g. nsenter into a namespace); resolves
 * with the child and the HTTP address it logged.
 */
export function launch(args, prefix = []) {
  const [command, ...rest] = [...prefix, binary, "--log-format", "json", ...args];
  const child = spawn(command, rest, { stdio: ["ignore", "pipe", "inherit"] });
  // Every log line, for tests that check what an operator would read.
  child.logs = [];
  let partial = "";
  child.stdout.on("data", (chunk) => {
    const lines = (partial + chunk).split("\n");
    partial = lines.pop();
    child.logs.push(...lines.filter(Boolean));
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("whip-echo did not start")), WAIT);
    child.on("exit", (code) => reject(new Error(`whip-echo exited with ${code}`)));
    const started = () => {
      const line = child.logs.find((l) => l.includes("HTTP listening"));
      const match = line && line.match(/"addr":"([^"]+)"/);
      if (!match) return;
      clearTimeout(timer);
      child.stdout.off("data", started);
      resolve({ child, addr: match[1] });
    };
    child.stdout.on("data", started);
  });
}

/** The log lines of `child` at WARN or ERROR level. */
export function warnings(child) {
  return child.logs.filter((l) => /"level":"(WARN|ERROR)"/.test(l));
}

/** Starts the release binary on ephemeral (or `port`) loopback ports; resolves with its base URL. */
export async function startServer(extra = [], port = "0") {
  const { child, addr } = await launch(["--listen", "127.0.0.1:0", "--udp-host", "127.0.0.1", "--udp-port", port,
    "--tcp-port", port, ...extra]);
  return { child, base: `http://${addr}` };
}

/** Debian's Chromium, headless, with the test flags and `extra` ones. */
export function launchChromium(extra = []) {
  return chromium.launch({ executablePath: "/usr/bin/chromium", args: [...FLAGS, ...extra] });
}

/**
 * Waits for the page's first received audio packet and for the media path of every leg, and
 * returns the page state.
 */
export async function waitForAudio(page) {
  await page.waitForFunction(() => window.whipEcho.firstAudioMs !== undefined, null, { timeout: WAIT });
  await page.waitForFunction(() => (window.whipEcho.stats.packetsReceived || 0) > 0, null, { timeout: WAIT });
  await page.waitForFunction(() => window.whipEcho.paths.length === window.whipEcho.resources.length,
    null, { timeout: WAIT });
  return page.evaluate(() => window.whipEcho);
}

/** A self-signed certificate (and key) for `ip`, in a fresh temporary folder removed at exit. */
export function selfSignedCert(ip) {
  const dir = mkdtempSync(path.join(tmpdir(), "whip-echo-tls-"));
  process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
  const [cert, key] = [path.join(dir, "cert.pem"), path.join(dir, "key.pem")];
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-days", "2", "-subj", "/CN=localhost", "-addext", `subjectAltName=IP:${ip}`, "-keyout", key, "-out", cert],
  { stdio: "ignore" });
  return { cert, key };
}

/**
 * Opens whip-echo's page at `url` and waits for its script to run. Once in CI (1 run in about 30)
 * a first load in a fresh browser left the module script unrun, with no request or page error to
 * show why; the test then says so and reloads once rather than failing on an unrelated check.
 */
export async function gotoPage(page, url) {
  await page.goto(url);
  const ready = () => page.waitForFunction(() => window.whipEcho !== undefined, null, { timeout: 5000 });
  try {
    await ready();
  } catch {
    console.error(`# the page's script did not run after loading ${url}: reloading once`);
    await page.reload();
    await ready();
  }
}
