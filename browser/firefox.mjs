// Debian's firefox-esr, headless, as a WebRTC client for tests, driven without a driver: a fresh
// profile with a user.js, Firefox started on a page of a small HTTP server of the test's own (this
// module's), and the page reporting back to that server by fetch POSTs of JSON. No geckodriver,
// no Marionette, no Playwright (playwright-core drives only its own patched Firefox builds).
//
//   const { result, errors, logs, timings } = await runFirefoxPage({ html, params, timeoutMs });
//
// The page gets `window.ff` (from /__ff/harness.js, put first in `html`):
//   ff.params        the `params` given here (JSON), e.g. the base URL of the server under test
//   ff.log(...args)  a progress line, kept in `logs` (and printed with FIREFOX_DEBUG=1)
//   ff.done(value)   the page's result: resolves runFirefoxPage with it
//   ff.fail(error)   rejects runFirefoxPage with it
//   ff.call(name, data)  runs the test's `handlers[name](data)` and resolves with its JSON value
// Uncaught errors and unhandled rejections (and console.error) are POSTed too: they are in
// `errors`, and an uncaught one rejects (unless `failOnError: false`).
//
// The page may also be elsewhere (`url`): the harness's origin is then given to it in the query
// parameter `ff` and the page loads `${ff}/__ff/harness.js` itself. The harness answers CORS.

import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";

export const FIREFOX = process.env.FIREFOX_BIN || "/usr/bin/firefox-esr";

/**
 * The profile's prefs. The media/WebRTC ones are what the tests need (see the notes of each);
 * the rest keep a fresh profile from reaching out (the tests have only loopback) or showing
 * anything but the page, after Marionette's own RecommendedPreferences.sys.mjs.
 */
export const PREFS = {
  // --- media: fake devices, no prompt, autoplay --------------------------------------------
  // Fake camera (a moving coloured frame, 640x480 unless the constraints ask otherwise, e.g.
  // {width: 1280, height: 720}; 30 fps) and microphone (a 1 kHz tone). Necessary: headless
  // Firefox has no devices, so without it getUserMedia fails with NotFoundError.
  "media.navigator.streams.fake": true,
  // No permission prompt. Without it, and without the permission file this module writes (see
  // runFirefoxPage), getUserMedia never settles: a prompt no one answers, fake devices or not.
  // With the file it is redundant; kept for pages of origins the file does not name.
  "media.navigator.permission.disabled": true,
  // Let media elements play without a user gesture (0 = allowed): without it video.play() of a
  // non-captured stream rejects with NotAllowedError. getStats() numbers do not need it.
  "media.autoplay.default": 0,
  "media.autoplay.blocking_policy": 0,
  // --- WebRTC ICE on loopback only ----------------------------------------------------------
  // Gather loopback addresses. Necessary: Firefox skips 127.0.0.1 and ::1 otherwise, and in a
  // namespace with only `lo` it then has no candidate at all and ICE fails.
  "media.peerconnection.ice.loopback": true,
  // Real host addresses rather than mDNS .local names (a server cannot resolve those). Redundant
  // while the page has camera/microphone permission (Firefox then reveals host addresses, and
  // the permission file gives it), kept for a page without.
  "media.peerconnection.ice.obfuscate_host_addresses": false,
  // ICE-TCP (active) candidates: the default, said here as the tests depend on it (false: the
  // echo where UDP is dropped fails).
  "media.peerconnection.ice.tcp": true,
  // --- no first-run, default-browser, session-restore or crash-resume pages ------------------
  "browser.shell.checkDefaultBrowser": false,
  "browser.startup.homepage_override.mstone": "ignore",
  "startup.homepage_welcome_url": "about:blank",
  "startup.homepage_welcome_url.additional": "",
  "browser.aboutwelcome.enabled": false,
  "browser.sessionstore.resume_from_crash": false,
  "browser.startup.couldRestoreSession.count": -1,
  "toolkit.startup.max_resumed_crashes": -1,
  "browser.tabs.warnOnClose": false,
  "browser.warnOnQuit": false,
  "termsofuse.bypassNotification": true,
  "dom.disable_open_during_load": false,
  "dom.max_script_run_time": 0,
  "dom.ipc.reportProcessHangs": false,
  // --- no telemetry, data reporting, studies ------------------------------------------------
  "datareporting.policy.dataSubmissionEnabled": false,
  "datareporting.policy.dataSubmissionPolicyBypassNotification": true,
  "datareporting.healthreport.uploadEnabled": false,
  "datareporting.usage.uploadEnabled": false,
  "toolkit.telemetry.enabled": false,
  "toolkit.telemetry.unified": false,
  "toolkit.telemetry.archive.enabled": false,
  "toolkit.telemetry.server": "",
  "app.normandy.enabled": false,
  "app.normandy.api_url": "",
  "app.shield.optoutstudies.enabled": false,
  // --- no updates (browser, add-ons, plugins such as OpenH264, search, remote settings) -------
  "app.update.disabledForTesting": true,
  "app.update.auto": false,
  "extensions.update.enabled": false,
  "extensions.systemAddon.update.enabled": false,
  "extensions.getAddons.cache.enabled": false,
  "media.gmp-manager.updateEnabled": false,
  "media.gmp-manager.url": "",
  "browser.search.update": false,
  // A dummy (as Marionette's): only applied with MOZ_REMOTE_SETTINGS_DEVTOOLS=1 in the
  // environment (set below); Firefox then logs failed syncs to its stderr (captured, not shown).
  "services.settings.server": "data:,#remote-settings-dummy/v1",
  "browser.region.network.url": "",
  "browser.topsites.contile.enabled": false,
  "browser.newtabpage.activity-stream.testing.shouldInitializeFeeds": false,
  // --- no background network ----------------------------------------------------------------
  "network.proxy.type": 0,
  "network.captive-portal-service.enabled": false,
  "network.connectivity-service.enabled": false,
  "network.dns.disablePrefetch": true,
  "network.prefetch-next": false,
  "network.http.speculative-parallel-limit": 0,
  "browser.safebrowsing.malware.enabled": false,
  "browser.safebrowsing.phishing.enabled": false,
  "browser.safebrowsing.downloads.enabled": false,
  "browser.safebrowsing.blockedURIs.enabled": false,
  "dom.push.connection.enabled": false,
  "geo.provider.network.url": "",
  "browser.ml.enable": false,
  "browser.translations.enable": false,
  "browser.backup.enabled": false,
  "extensions.pocket.enabled": false,
  "identity.fxaccounts.enabled": false,
  // dump() in pages goes to stdout (useful when debugging a page by hand).
  "browser.dom.window.dump.enabled": true,
};

/** The user.js text for `prefs`. */
export function userJs(prefs) {
  return Object.entries(prefs)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `user_pref(${JSON.stringify(k)}, ${JSON.stringify(v)});`).join("\n") + "\n";
}

/** What /__ff/harness.js is: `window.ff`, and errors reported. */
function harnessJs(origin, params) {
  return `(() => {
  const origin = ${JSON.stringify(origin)};
  // Every report in flight: ff.done waits for them, so the logs before it arrive first.
  const pending = new Set();
  const post = (what, body) => {
    const json = JSON.stringify(body);
    // keepalive (to survive an unload) caps the body at 64 KiB.
    const sent = fetch(origin + "/__ff/" + what, { method: "POST", body: json,
      headers: { "Content-Type": "text/plain" }, keepalive: json.length < 60000 }).catch(() => {});
    pending.add(sent);
    sent.finally(() => pending.delete(sent));
    return sent;
  };
  const text = (e) => e instanceof Error ? (e.name + ": " + e.message + (e.stack ? "\\n" + e.stack : ""))
    : typeof e === "string" ? e : (() => { try { return JSON.stringify(e); } catch { return String(e); } })();
  const t0 = performance.now();
  window.ff = {
    params: ${JSON.stringify(params ?? {})},
    log: (...args) => post("log", { ms: Math.round(performance.now() - t0), text: args.map(text).join(" ") }),
    done: async (value) => {
      await Promise.allSettled([...pending]);
      return post("done", { value: value === undefined ? null : value });
    },
    fail: (error) => post("error", { kind: "fail", fatal: true, text: text(error) }),
    // Asks the test to do something (its \`handlers[name]\`) and resolves with the JSON answer.
    call: async (name, data) => {
      const res = await fetch(origin + "/__ff/call/" + encodeURIComponent(name), { method: "POST",
        body: JSON.stringify(data === undefined ? null : data), headers: { "Content-Type": "text/plain" } });
      const answer = await res.json();
      if (!res.ok) throw new Error("ff.call(" + name + "): " + answer.error);
      return answer.value;
    },
  };
  addEventListener("error", (e) => post("error", { kind: "error", fatal: true,
    text: text(e.error ?? e.message) + " at " + e.filename + ":" + e.lineno }));
  addEventListener("unhandledrejection", (e) => post("error", { kind: "unhandledrejection", fatal: true, text: text(e.reason) }));
  const consoleError = console.error.bind(console);
  console.error = (...args) => { post("error", { kind: "console.error", fatal: false, text: args.map(text).join(" ") }); consoleError(...args); };
  post("hello", { userAgent: navigator.userAgent });
})();
`;
}

// The process groups of the Firefoxes running. Each is its own group (detached), so a test process
// that dies would leave them running (and, in `unshare --net bash -c ...`, the namespace alive):
// they go with it, at exit and at a SIGINT/SIGTERM/SIGHUP (node --test's timeout, Ctrl-C), after
// which the signal is raised again for its usual effect.
// Their temp homes (profiles) go too, best effort.
const live = new Map();
function killAll() {
  for (const [pid, home] of live) {
    killGroup(pid);
    try { rmSync(home, { recursive: true, force: true }); } catch { /* in use: left */ }
  }
}
process.on("exit", killAll);
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.once(signal, () => {
    killAll();
    process.kill(process.pid, signal);
  });
}

function killGroup(pid, signal = "SIGKILL") {
  try { process.kill(-pid, signal); } catch { /* gone */ }
}

/**
 * Whether a process of group `pgid` still runs. Zombies do not count: once Firefox's parent is
 * killed its children are reparented to PID 1, which may reap them late (a container's init
 * took ~1.3 s), and a zombie holds no file of the profile.
 */
function groupAlive(pgid) {
  let entries;
  try { entries = readdirSync("/proc"); } catch {
    try { process.kill(-pgid, 0); return true; } catch { return false; }
  }
  for (const name of entries) {
    if (!/^\d+$/.test(name)) continue;
    let stat;
    try { stat = readFileSync(`/proc/${name}/stat`, "utf8"); } catch { continue; }
    // pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(pgrp) === pgid && state !== "Z" && state !== "X") return true;
  }
  return false;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Runs one page in a fresh headless Firefox and resolves with what it reported.
 * - html: the page, served at / by this module's server (the harness script is put first), or
 * - url: a page elsewhere, given `?ff=<harness origin>` to load `/__ff/harness.js` from;
 * - files: { "/path": string | { body, type } } further files to serve (e.g. a module);
 * - params: JSON given to the page as `ff.params`;
 * - handlers: { name: async (data) => value } the page can call by `await ff.call(name, data)`
 *   (e.g. to have the test read the server's state or change the network mid-page);
 * - prefs: prefs over PREFS (a value of `undefined` removes one, e.g. to check that it matters);
 * - timeoutMs: the whole run's budget, from spawning Firefox to the page's `ff.done`;
 * - failOnError: reject at the page's first uncaught error (default true);
 * - args / env: more Firefox arguments / environment.
 * Resolves with { result, errors, logs, timings: { startMs, scriptMs, pageMs, totalMs }, output }:
 * startMs is spawn to Firefox's first request of the page (its start-up), scriptMs spawn to the
 * harness script running, pageMs first request to `ff.done`, totalMs spawn to `ff.done`; output
 * is the last lines of Firefox's stdout and stderr (noise, kept for failures; FIREFOX_DEBUG=1
 * prints them as they come).
 * The profile is fresh (no lock or session of an earlier run) and gets, besides user.js, a
 * `permissions` file allowing camera and microphone to the page's origin: without it Firefox
 * gathers only the address of the default route for the page (none in a namespace with only
 * loopback: no candidate at all), whatever the ICE prefs, and even while it captures.
 */
export async function runFirefoxPage({
  html, url, files = {}, params, handlers = {}, prefs = {}, timeoutMs = 30_000, failOnError = true, args = [],
  env = {},
} = {}) {
  if (!html === !url) throw new Error("runFirefoxPage: give html or url");
  const t0 = performance.now();
  const logs = [];
  const errors = [];
  const output = [];
  const timings = {};
  const debug = !!process.env.FIREFOX_DEBUG;
  let settle;
  const finished = new Promise((resolve, reject) => { settle = { resolve, reject }; });
  let settled = false;
  const finish = (error, value) => {
    if (settled) return;
    settled = true;
    timings.totalMs = Math.round(performance.now() - t0);
    if (error) settle.reject(error);
    else settle.resolve(value);
  };

  const server = createServer((req, res) => {
    res.setHeader("Access-Control-Allow-Origin", "*");
    res.setHeader("Cache-Control", "no-store");
    const at = new URL(req.url, "http://x").pathname;
    if (req.method === "OPTIONS") {
      res.setHeader("Access-Control-Allow-Methods", "GET, POST");
      res.setHeader("Access-Control-Allow-Headers", "*");
      return res.writeHead(204).end();
    }
    if (req.method === "POST" && at.startsWith("/__ff/")) {
      let body = "";
      req.setEncoding("utf8");
      req.on("data", (d) => { body += d; });
      req.on("end", async () => {
        let msg;
        try { msg = JSON.parse(body); } catch { msg = { text: body }; }
        const what = at.slice("/__ff/".length);
        if (what.startsWith("call/")) {
          const name = decodeURIComponent(what.slice("call/".length));
          res.setHeader("Content-Type", "application/json");
          try {
            if (!handlers[name]) throw new Error(`no handler "${name}"`);
            const value = await handlers[name](msg);
            res.end(JSON.stringify({ value: value === undefined ? null : value }));
          } catch (e) {
            res.writeHead(500).end(JSON.stringify({ error: String(e?.stack ?? e) }));
          }
          return;
        }
        res.writeHead(204).end();
        if (debug) console.error(`# firefox page ${what}: ${JSON.stringify(msg)}`);
        if (what === "log") logs.push(msg);
        else if (what === "hello") timings.scriptMs ??= Math.round(performance.now() - t0);
        else if (what === "error") {
          errors.push(msg);
          if (msg.fatal && failOnError) finish(pageError(`page ${msg.kind}: ${msg.text}`));
        } else if (what === "done") {
          timings.pageMs = timings.startMs === undefined ? undefined
            : Math.round(performance.now() - t0 - timings.startMs);
          finish(null, msg.value);
        }
      });
      return;
    }
    if (req.method !== "GET") return res.writeHead(405).end();
    if (at === "/" && html !== undefined) {
      timings.startMs ??= Math.round(performance.now() - t0);
      res.setHeader("Content-Type", "text/html; charset=utf-8");
      // The harness runs first: in <head> when the page has one, else before everything.
      const tag = `<script src="/__ff/harness.js"></script>`;
      const head = html.match(/<head[^>]*>/i);
      return res.end(head ? html.replace(head[0], `${head[0]}\n${tag}`)
        : `<!doctype html><meta charset="utf-8">${tag}\n${html}`);
    }
    if (at === "/__ff/harness.js") {
      if (url) timings.startMs ??= Math.round(performance.now() - t0);
      res.setHeader("Content-Type", "text/javascript");
      return res.end(harnessJs(origin, params));
    }
    if (at === "/favicon.ico") return res.writeHead(204).end();
    const file = files[at];
    if (file !== undefined) {
      const { body, type } = typeof file === "string" ? { body: file, type: typeFor(at) } : file;
      res.setHeader("Content-Type", type ?? typeFor(at));
      return res.end(body);
    }
    res.writeHead(404).end();
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const origin = `http://127.0.0.1:${server.address().port}`;
  const pageError = (message) => Object.assign(new Error(message), { errors, logs, output });

  let target = `${origin}/`;
  if (url) {
    const u = new URL(url);
    u.searchParams.set("ff", origin);
    target = u.href;
  }

  // The profile, and a HOME of its own: nothing of Firefox's outside the temp folder.
  const home = mkdtempSync(path.join(tmpdir(), "firefox-test-"));
  const profile = path.join(home, "profile");
  mkdirSync(profile);
  // Camera and microphone allowed for the page's origin, as a persistent permission would be:
  // Firefox gathers only its "default address" (that of the default route: none in a namespace
  // with only loopback, so no candidate at all) for a page without one, even while it captures
  // fake devices. The permission manager reads its defaults from this file at startup.
  const granted = [...new Set([origin, ...(url ? [new URL(url).origin] : [])])];
  writeFileSync(path.join(profile, "permissions"), granted.flatMap((o) =>
    ["camera", "microphone"].map((type) => `origin\t${type}\t1\t${o}\n`)).join(""));
  writeFileSync(path.join(profile, "user.js"), userJs({
    ...PREFS, "permissions.manager.defaultsUrl": pathToFileURL(path.join(profile, "permissions")).href, ...prefs,
  }));

  const child = spawn(FIREFOX, ["--headless", "--no-remote", "--profile", profile, ...args, target], {
    // A process group of its own: Firefox's content, socket, RDD, GPU... processes go with it.
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    env: {
      ...process.env,
      HOME: home,
      XDG_CACHE_HOME: path.join(home, ".cache"),
      XDG_CONFIG_HOME: path.join(home, ".config"),
      MOZ_HEADLESS: "1",
      MOZ_CRASHREPORTER_DISABLE: "1",
      MOZ_CRASHREPORTER: "",
      MOZ_DISABLE_AUTO_SAFE_MODE: "1",
      // Lets services.settings.server (a dummy) apply: else Firefox ignores it and tries the real one.
      MOZ_REMOTE_SETTINGS_DEVTOOLS: "1",
      ...env,
    },
  });
  if (child.pid) live.set(child.pid, home);
  // Firefox's output, less the remote-settings sync failures (a dozen blocks of console.error
  // at each start, the dummy server having nothing: noise, that would bury what matters).
  let noise = false;
  const keep = (chunk) => {
    for (const line of String(chunk).split("\n")) {
      if (!line) continue;
      if (/^console\.(error|warn): (services\.settings|RSLoader|Nimbus)/.test(line)) noise = true;
      else if (!/^\s|@resource:\/\/|@chrome:\/\//.test(line)) noise = false;
      if (noise && !debug) continue;
      output.push(line);
      if (output.length > (Number(process.env.FIREFOX_OUTPUT_LINES) || 200)) output.shift();
      if (debug) console.error(`# firefox: ${line}`);
    }
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  let exited = false;
  const exit = new Promise((resolve) => child.on("exit", (code, signal) => { exited = true; resolve({ code, signal }); }));
  child.on("error", (e) => {
    if (!child.pid) exited = true;
    finish(pageError(`firefox did not start: ${e.message}`));
  });
  exit.then(({ code, signal }) => finish(pageError(
    `firefox exited (${signal ?? code}) before the page was done; its output:\n${output.slice(-20).join("\n")}`)));
  const timer = setTimeout(() => finish(pageError(
    `firefox page not done within ${timeoutMs} ms (page ${timings.startMs === undefined ? "never requested" : `requested at ${timings.startMs} ms`}); ` +
    `logs: ${JSON.stringify(logs.slice(-10))}; errors: ${JSON.stringify(errors)}; output:\n${output.slice(-20).join("\n")}`)), timeoutMs);

  try {
    const result = await finished;
    return { result, errors, logs, timings, output };
  } finally {
    clearTimeout(timer);
    killGroup(child.pid);
    // The group's processes gone (the parent reaped), then the profile can go.
    const deadline = Date.now() + 5000;
    while ((!exited || groupAlive(child.pid)) && Date.now() < deadline) await sleep(10);
    live.delete(child.pid);
    server.closeAllConnections?.();
    server.close();
    // Never hide the page's own outcome behind a cleanup failure (a process still holding it).
    try { rmSync(home, { recursive: true, force: true, maxRetries: 3 }); } catch (e) {
      console.error(`# firefox profile ${home} not removed: ${e.message}`);
    }
  }
}

function typeFor(p) {
  if (p.endsWith(".js") || p.endsWith(".mjs")) return "text/javascript";
  if (p.endsWith(".html")) return "text/html; charset=utf-8";
  if (p.endsWith(".json")) return "application/json";
  return "application/octet-stream";
}
