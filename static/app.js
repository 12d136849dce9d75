// The whip-echo page: echo test (WHIP publish + WHEP play, or the /echo extension), publish, play,
// hang up; a timeline from the click; level meters; connection statistics. Its state is mirrored on
// `window.whipEcho` so that tests (and curious people) can read it.

import { HttpError, Session, supportsTrickle } from "/whip-client.js";

const $ = (id) => document.getElementById(id);
const state = (window.whipEcho = { status: "idle", timeline: [], trace: [], error: null, stats: {}, resources: [], peak: {} });
let legs = [];
let t0 = 0;
let mic = null;
let statsTimer = null;
let audioCtx = null;

// ---------- stream name and URLs ----------
$("stream").value = `echo-${Math.random().toString(36).slice(2, 8)}`;
const endpoint = (kind) => new URL(`/${kind}/${encodeURIComponent($("stream").value.trim())}`, location.href).href;
function showUrls() {
  $("whip-url").value = endpoint("whip");
  $("whep-url").value = endpoint("whep");
}
$("stream").addEventListener("input", showUrls);
showUrls();
// Whether this server takes trickle ICE, asked once at load so that no click waits for it.
const trickle = supportsTrickle(endpoint("whip"));
for (const button of document.querySelectorAll("button.copy")) {
  button.addEventListener("click", async () => {
    const input = $(button.dataset.copy);
    try { await navigator.clipboard.writeText(input.value); } catch { input.select(); document.execCommand("copy"); }
    button.textContent = "Copied";
    setTimeout(() => (button.textContent = "Copy"), 1200);
  });
}

// ---------- status, errors, timeline ----------
function setStatus(status, text) {
  state.status = status;
  $("status").textContent = text;
  const busy = status === "connecting" || status === "connected";
  for (const id of ["echo", "publish", "play"]) $(id).disabled = busy;
  $("hangup").disabled = !busy;
}
function showError(message) {
  state.error = message;
  $("error").hidden = !message;
  $("error").textContent = message || "";
}
/** Finer steps than the timeline, for whoever debugs a slow connect (not shown). */
function trace(what) {
  state.trace.push({ what, ms: Math.round(performance.now() - t0) });
}
function mark(label) {
  if (state.timeline.some((m) => m.label === label)) return;
  const ms = Math.round(performance.now() - t0);
  state.timeline.push({ label, ms });
  const li = document.createElement("li");
  li.textContent = `${label}: ${ms} ms`;
  $("timeline").append(li);
}

// ---------- legs ----------
/** Browsers can stay in "checking" for a minute when no UDP gets through; say so much sooner. */
const CONNECT_TIMEOUT_MS = 10_000;

async function startLeg(kind, track) {
  const onStep = (label) => {
    trace(`${kind} ${label}`);
    if (label === "POST sent" || label === "201 received") mark(label);
  };
  const token = $("token").value.trim();
  const session = new Session({ endpoint: endpoint(kind), kind, track, token, onStep, trickle: token ? undefined : trickle });
  legs.push(session);
  watchLeg(session);
  await session.start();
  state.resources.push(session.resource);
  setTimeout(() => {
    const pc = session.pc;
    if (legs.includes(session) && pc.connectionState !== "connected" && state.status !== "failed") iceFailed(pc);
  }, CONNECT_TIMEOUT_MS);
  return session;
}

/** Timeline marks and failure hints from one leg's connection. */
function watchLeg(session) {
  const { pc } = session;
  pc.addEventListener("iceconnectionstatechange", () => {
    if (pc.iceConnectionState === "connected" || pc.iceConnectionState === "completed") mark("ICE connected");
    if (pc.iceConnectionState === "failed") iceFailed(pc);
  });
  pc.addEventListener("connectionstatechange", () => {
    if (pc.connectionState === "connected") {
      mark("DTLS connected");
      findPath(session);
      if (legs.every((l) => l.pc.connectionState === "connected")) {
        setStatus("connected", "Connected.");
        setTimeout(startMeters, 0);
      }
    }
    if (pc.connectionState === "failed") iceFailed(pc);
  });
  pc.addEventListener("track", (e) => {
    const stream = e.streams[0] || new MediaStream([e.track]);
    $("out").srcObject = stream;
    meterLater(stream, $("out-level"), "out");
  });
}

async function iceFailed(pc) {
  const kinds = new Set();
  const stats = await pc.getStats().catch(() => new Map());
  for (const s of stats.values()) {
    if (s.type === "local-candidate" || s.type === "remote-candidate") kinds.add(`${s.type.split("-")[0]} ${s.protocol}/${s.candidateType}`);
  }
  // The ports the server's answer announced (RFC 8839 §5.1: foundation component transport
  // priority address port typ ...), whether or not this browser could pair with them.
  const ports = { udp: new Set(), tcp: new Set() };
  for (const [, transport, port] of (pc.remoteDescription?.sdp || "").matchAll(/^a=candidate:\S+ \d+ (\w+) \d+ \S+ (\d+) /gm)) {
    ports[transport.toLowerCase()]?.add(Number(port));
  }
  const tried = [...kinds].sort().join(", ") || "no candidates";
  const how = pc.iceConnectionState === "failed" ? "ICE failed" : `ICE failed: not connected after ${CONNECT_TIMEOUT_MS / 1000} s`;
  const list = (set) => [...set].sort((a, b) => a - b).join(", ");
  const open = [ports.udp.size && `UDP ${list(ports.udp)}`, ports.tcp.size && `TCP ${list(ports.tcp)}`].filter(Boolean).join(" or ");
  showError(`Media could not connect (${how}). Tried: ${tried}.\n` +
    "The HTTP part worked, so UDP to the server is probably blocked on this network, and TCP to its media ports too. " +
    (open ? `Ask the operator to open ${open} on the server (the ports its answer announced), ` : "Ask the operator to open the server's media ports, ") +
    "or try another network.");
  setStatus("failed", "ICE failed.");
  await hangup({ quiet: true, keepState: true }); // DELETE: the server need not wait for a timeout
}

/**
 * The transport of a connection's selected candidate pair, as people name it: "UDP", "TCP",
 * "TCP on the HTTP port" (whip-echo takes ICE-TCP on the port that serves this page) or "relay".
 */
async function mediaPath(pc) {
  const stats = await pc.getStats().catch(() => new Map());
  let pair = null;
  for (const s of stats.values()) {
    if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
  }
  if (!pair) return null;
  const local = stats.get(pair.localCandidateId);
  const remote = stats.get(pair.remoteCandidateId);
  if (!local || !remote) return null;
  // Chromium hides a peer-reflexive remote's address (RFC 8445 §7.3.1.3 learnt it from a check).
  const where = remote.address ? `${remote.address}:${remote.port}` : `port ${remote.port}`;
  if (local.candidateType === "relay" || remote.candidateType === "relay") {
    return { name: "relay", label: `relay (TURN over ${local.relayProtocol || local.protocol}) to ${where}` };
  }
  if (remote.protocol === "udp") return { name: "udp", label: `UDP to ${where}` };
  const pagePort = Number(location.port || (location.protocol === "https:" ? 443 : 80));
  if (remote.port === pagePort) return { name: "tcp-http-port", label: `TCP on the HTTP port (${where})` };
  return { name: "tcp", label: `TCP to ${where}` };
}

/** Names the leg's media path on the timeline once its connection has a selected pair. */
async function findPath(session) {
  if (session.path) return;
  const path = await mediaPath(session.pc);
  if (!path || session.path) return;
  session.path = path;
  state.paths = legs.filter((l) => l.path).map((l) => ({ kind: l.kind, ...l.path }));
  mark(`media path: ${path.label}`);
}

/**
 * The server's start-up self-test of its media paths (GET /healthz as JSON), shown once it is
 * done (it takes milliseconds, but a page loaded right after start-up may ask before).
 */
async function showServerPaths(attempts = 40) {
  let health;
  try {
    const res = await fetch("/healthz", { headers: { Accept: "application/json" } });
    health = await res.json();
  } catch {
    return; // an older server or another origin: nothing to show
  }
  state.serverPaths = health.self_test;
  if (health.self_test?.state === "running" && attempts > 0) {
    setTimeout(() => showServerPaths(attempts - 1), 250);
    return;
  }
  if (health.self_test?.state !== "done") return;
  const name = { udp: "UDP", tcp: "TCP", "tcp-http-port": "TCP on the HTTP port" };
  $("server-paths").textContent = "Server self-test: " + health.self_test.paths
    .map((p) => `${name[p.path] || p.path} ${p.addr.split(":").pop()} ${p.error ? "failed" : "ok"}`).join(" · ");
}
showServerPaths();

// ---------- actions ----------
async function run(action) {
  await hangup({ quiet: true });
  t0 = performance.now();
  state.timeline = [];
  state.trace = [];
  pendingMeters = [];
  state.resources = [];
  state.firstAudioMs = undefined;
  state.paths = [];
  $("timeline").replaceChildren();
  showError(null);
  setStatus("connecting", "Connecting…");
  try {
    await action();
    startStats();
  } catch (e) {
    showError(describe(e));
    setStatus("failed", "Failed.");
    await hangup({ quiet: true, keepState: true });
  }
}

async function microphone() {
  if (!mic) mic = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
  trace("microphone ready");
  meterLater(mic, $("in-level"), "in");
  return mic.getAudioTracks()[0];
}

function describe(e) {
  if (e instanceof HttpError) return `The server answered ${e.status}: ${e.reason || "(no reason given)"}`;
  if (e && e.name === "NotAllowedError") return "Microphone permission was denied. Allow microphone access for this page and try again.";
  if (e && e.name === "NotFoundError") return "No microphone was found.";
  return `Error: ${e && e.message ? e.message : e}`;
}

async function hangup({ quiet = false, keepState = false } = {}) {
  clearInterval(statsTimer);
  statsTimer = null;
  const stopping = legs;
  legs = [];
  await Promise.all(stopping.map((l) => l.stop()));
  $("out").srcObject = null;
  if (!quiet || (!keepState && stopping.length)) setStatus("idle", quiet ? "Idle." : "Hung up.");
}

$("echo").addEventListener("click", () => run(async () => {
  if ($("single").checked) {
    await startLeg("echo", await microphone());
  } else {
    // Both legs at once: the player needs no microphone, so it starts while permission is asked.
    await Promise.all([startLeg("whep"), microphone().then((track) => startLeg("whip", track))]);
  }
}));
$("publish").addEventListener("click", () => run(async () => startLeg("whip", await microphone())));
$("play").addEventListener("click", () => run(async () => startLeg("whep")));
$("hangup").addEventListener("click", () => hangup());
addEventListener("pagehide", () => { for (const l of legs) l.stop({ keepalive: true }); });

// ---------- meters ----------
// Starting an AudioContext blocks the page for tens of milliseconds, so meters start only once
// media flows: they must not delay the connection they measure.
let pendingMeters = [];
function meterLater(stream, element, name) {
  if (state.status === "connected") meter(stream, element, name);
  else pendingMeters.push([stream, element, name]);
}
function startMeters() {
  for (const args of pendingMeters.splice(0)) meter(...args);
}
function meter(stream, element, name) {
  audioCtx ||= new AudioContext();
  audioCtx.resume().catch(() => {});
  const analyser = audioCtx.createAnalyser();
  analyser.fftSize = 512;
  audioCtx.createMediaStreamSource(stream).connect(analyser);
  const data = new Float32Array(analyser.fftSize);
  const draw = () => {
    analyser.getFloatTimeDomainData(data);
    let peak = 0;
    for (const v of data) peak = Math.max(peak, Math.abs(v));
    element.value = Math.min(1, peak * 1.5);
    state.peak[name] = Math.max(state.peak[name] || 0, peak);
    if (stream.active) requestAnimationFrame(draw);
  };
  draw();
}

// ---------- statistics ----------
function startStats() {
  const poll = async () => {
    const out = {};
    for (const leg of legs) {
      if (leg.pc.connectionState === "connected") await findPath(leg);
      const stats = await leg.pc.getStats().catch(() => new Map());
      for (const s of stats.values()) {
        if (s.type === "inbound-rtp" && s.kind === "audio") {
          out.packetsReceived = s.packetsReceived;
          out.packetsLost = s.packetsLost;
          out.jitterMs = Math.round((s.jitter || 0) * 1000);
          if (s.packetsReceived > 0) firstAudio();
        }
        if (s.type === "outbound-rtp" && s.kind === "audio") out.packetsSent = s.packetsSent;
        if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) {
          out.rttMs = Math.round(s.currentRoundTripTime * 1000);
        }
      }
    }
    state.stats = out;
    renderStats(out);
  };
  // Fast polling until the first packet arrives (for the timeline), then about once a second.
  const fast = setInterval(() => (state.firstAudioMs !== undefined || !legs.length ? clearInterval(fast) : poll()), 20);
  statsTimer = setInterval(poll, 1000);
}

function firstAudio() {
  if (state.firstAudioMs !== undefined) return;
  mark("first audio received");
  state.firstAudioMs = state.timeline.find((m) => m.label === "first audio received").ms;
}

function renderStats(s) {
  const rows = [
    ["Packets received", s.packetsReceived],
    ["Packets lost", s.packetsLost],
    ["Jitter", s.jitterMs !== undefined ? `${s.jitterMs} ms` : undefined],
    ["Packets sent", s.packetsSent],
    ["Round-trip time", s.rttMs !== undefined ? `${s.rttMs} ms` : undefined],
    ...(state.paths || []).map((p) => [`Media path (${p.kind})`, p.label]),
  ].filter(([, v]) => v !== undefined);
  $("stats").replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = k;
    dd.textContent = String(v);
    return [dt, dd];
  }));
}
