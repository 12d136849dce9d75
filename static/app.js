// The whip-echo page: echo test (WHIP publish + WHEP play, or the /echo extension), publish, play,
// hang up; a status and a timeline per leg; level meters; connection statistics; the measured echo
// latency; a delayed echo. Its state is mirrored on `window.whipEcho` so that tests (and curious
// people) can read it.

import { HttpError, Session, discover } from "/whip-client.js";
import { delayedPlayback, measure, median } from "/latency.js";
import { describeEnd, iceFailure, mediaPath, showServerPaths } from "/diagnose.js";
import { startLiveList } from "/live.js";
import { clearReports, watchReport } from "/report.js";

const $ = (id) => document.getElementById(id);
const state = (window.whipEcho = {
  status: "idle", legs: {}, timeline: [], trace: [], error: null, stats: {}, resources: [], peak: {}, paths: [],
});
/** The legs of the current action, in start order; each a Session with `name`, `state`, `stream`. */
let legs = [];
/** The legs the current action will have (a leg waiting for the microphone is planned, not started). */
let plan = [];
let t0 = 0;
let mic = null;
let statsTimer = null;
let audioCtx = null;
let playback = null;
/** Bumped by every hang-up: work of an older action (a late POST, a granted microphone, a
 * measurement) sees it and stops instead of coming back to life. */
let generation = 0;
/** The latency measurement under way, if any (one at a time: it swaps the sender's track). */
let measuring = null;

const LEG_NAMES = { whip: "publish", whep: "play", echo: "echo" };
const title = (s) => s[0].toUpperCase() + s.slice(1);

// ---------- stream name, URLs and publisher set-ups ----------
$("stream").value = `echo-${Math.random().toString(36).slice(2, 8)}`;
const endpoint = (kind) => new URL(`/${kind}/${encodeURIComponent($("stream").value.trim())}`, location.href).href;
function showUrls() {
  $("whip-url").value = endpoint("whip");
  $("whep-url").value = endpoint("whep");
  $("obs-server").value = endpoint("whip");
  const token = $("token").value.trim();
  const auth = token ? ` auth-token="${token}"` : "";
  $("gst-publish").value = "gst-launch-1.0 audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! " +
    `opusenc ! rtpopuspay ! whipsink whip-endpoint="${endpoint("whip")}"${auth}`;
  // Both checked with GStreamer 1.22 and gst-plugin-webrtchttp 0.15.4 against whip-echo.
  $("gst-play").value = `gst-launch-1.0 whepsrc whep-endpoint="${endpoint("whep")}"${auth} ! ` +
    "rtpopusdepay ! opusdec ! audioconvert ! autoaudiosink";
}
$("stream").addEventListener("input", showUrls);
$("token").addEventListener("input", showUrls);
showUrls();
// Whether this server takes trickle ICE, and its STUN/TURN servers: asked once at load (OPTIONS)
// so that no click waits for it.
const discovered = discover(endpoint("whip"));
for (const button of document.querySelectorAll("button.copy")) {
  button.addEventListener("click", async () => {
    const input = $(button.dataset.copy);
    try { await navigator.clipboard.writeText(input.value); } catch { input.select(); document.execCommand("copy"); }
    button.textContent = "Copied";
    setTimeout(() => (button.textContent = "Copy"), 1200);
  });
}
showServerPaths(state, $("server-paths"));

// ---------- status, errors, timeline ----------
/** One leg's state; the page status is derived from all planned legs. */
function setLeg(name, legState) {
  state.legs[name] = legState;
  renderStatus();
}
function renderStatus() {
  const names = plan.length ? plan : Object.keys(state.legs);
  const of = (n) => state.legs[n] || "not started";
  const all = (s) => names.length && names.every((n) => [].concat(s).includes(of(n)));
  const connectedStates = ["connected", "waiting for the publisher", "receiving audio"];
  if (state.status === "failed" || state.status === "ended") {
    // Kept until the next action: the error says what happened.
  } else if (!names.length) {
    state.status = "idle";
  } else if (all(connectedStates)) {
    state.status = "connected";
  } else {
    state.status = "connecting";
  }
  const text = names.length === 1 ? `${title(of(names[0]))}.` : names.map((n) => `${title(n)}: ${of(n)}`).join(" · ");
  $("status").textContent = names.length ? text : state.idleText || "Idle.";
  const busy = state.status === "connecting" || state.status === "connected";
  for (const id of ["echo", "publish", "play"]) $(id).disabled = busy;
  $("hangup").disabled = !busy;
  $("latency").disabled = !!measuring || !(state.status === "connected" && canMeasure());
}
function fail(status, message) {
  state.status = status;
  showError(message);
  renderStatus();
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
/** A timeline mark; with two legs, each mark names its leg. */
function mark(label, leg) {
  const full = leg && plan.length > 1 ? `${leg}: ${label}` : label;
  if (state.timeline.some((m) => m.label === full)) return;
  const ms = Math.round(performance.now() - t0);
  state.timeline.push({ label: full, ms });
  const li = document.createElement("li");
  li.textContent = `${full}: ${ms} ms`;
  $("timeline").append(li);
}

// ---------- legs ----------
/** Browsers can stay in "checking" for a minute when no UDP gets through; say so much sooner. */
const CONNECT_TIMEOUT_MS = 10_000;

async function startLeg(kind, track, gen) {
  if (gen !== generation) throw Object.assign(new Error("hung up"), { stale: true });
  const name = LEG_NAMES[kind];
  const onStep = (label) => {
    trace(`${kind} ${label}`);
    // The timeline shows the signalling steps; with trickle ICE the first trickle PATCH's answer
    // and the end of candidates too (each once).
    if (label === "POST sent" || label === "201 received" || /trickle/.test(label)) mark(label, name);
  };
  const token = $("token").value.trim();
  const session = new Session({ endpoint: endpoint(kind), kind, track, token, onStep, discovered: token ? undefined : discovered });
  session.name = name;
  legs.push(session);
  setLeg(name, "connecting");
  watchLeg(session);
  try {
    await session.start();
  } catch (e) {
    throw Object.assign(e, { leg: name });
  }
  state.resources.push(session.resource);
  watchTransport(session);
  watchReport(session, () => legs.includes(session));
  setTimeout(() => {
    if (legs.includes(session) && !session.connected) legEnded(session, "timeout");
  }, CONNECT_TIMEOUT_MS);
  return session;
}

/** Timeline marks, states and the received track of one leg's connection. */
function watchLeg(session) {
  const { pc, name } = session;
  pc.addEventListener("iceconnectionstatechange", () => {
    if (pc.iceConnectionState === "connected" || pc.iceConnectionState === "completed") mark("ICE connected", name);
    if (pc.iceConnectionState === "failed") legEnded(session, "ice-failed");
    // Consent checks stopped getting answers (~6 s before "failed"): if the server has already
    // reaped the session, say so now; a passing glitch says nothing.
    if (pc.iceConnectionState === "disconnected") legEnded(session, "ice-disconnected", { onlyIfEnded: true });
  });
  pc.addEventListener("connectionstatechange", () => {
    if (pc.connectionState === "connected") {
      session.connected = true;
      mark("DTLS connected", name);
      if (!session.receives) setLeg(name, "connected");
      else if (!session.firstAudio) setLeg(name, session.kind === "whep" ? "waiting for the publisher" : "connected");
      findPath(session);
      if (state.status === "connected") setTimeout(startMeters, 0);
    }
    if (pc.connectionState === "failed") legEnded(session, "ice-failed");
  });
  session.receives = session.kind !== "whip";
  pc.addEventListener("track", (e) => {
    session.stream = e.streams[0] || new MediaStream([e.track]);
    $("out").srcObject = session.stream;
    meterLater(session.stream, $("out-level"), "out");
  });
}

/**
 * The server closes a session with a DTLS close_notify (DELETE by someone else, a publisher that
 * takes over, shutdown); Chromium then reports the DTLS transport `closed` at once, while the
 * connection itself stays "connected" until consent fails 6-17 s later.
 */
function watchTransport(session) {
  const transport = session.pc.getSenders()[0]?.transport || session.pc.getReceivers()[0]?.transport;
  transport?.addEventListener("statechange", () => {
    if (transport.state === "closed" || transport.state === "failed") legEnded(session, "dtls-" + transport.state);
  });
}

/** A leg stopped without a hang-up: find out whether the server ended it or the network failed. */
async function legEnded(session, how, { onlyIfEnded = false } = {}) {
  if (!legs.includes(session) || session.ending) return;
  session.ending = true;
  trace(`${session.kind} ${how}`);
  // Only the server sends close_notify: a transport that failed says nothing about who ended it.
  // While ICE is merely disconnected, an unreachable server may be this network's glitch.
  const ended = await describeEnd(session.resource, { closed: how === "dtls-closed", unreachableIsEnd: !onlyIfEnded });
  if (!legs.includes(session)) return; // hung up meanwhile
  if (!ended && onlyIfEnded) {
    session.ending = false;
    return;
  }
  const leg = plan.length > 1 ? `${title(session.name)}: ` : "";
  if (ended) {
    setLeg(session.name, "ended");
    fail("ended", `${leg}${ended}`);
  } else {
    setLeg(session.name, "failed");
    fail("failed", leg + await iceFailure(session.pc, how === "timeout" ? CONNECT_TIMEOUT_MS : 0));
  }
  await hangup({ keep: true }); // DELETE: the server need not wait for a timeout
}

/** Names the leg's media path on the timeline once its connection has a selected pair. */
async function findPath(session) {
  if (session.path) return;
  const path = await mediaPath(session.pc);
  if (!path || session.path) return;
  session.path = path;
  state.paths = legs.filter((l) => l.path).map((l) => ({ kind: l.kind, ...l.path }));
  mark(`media path: ${path.label}`, session.name);
}

// ---------- actions ----------
async function run(planned, action) {
  await hangup({ keep: false, quiet: true });
  const gen = generation;
  t0 = performance.now();
  Object.assign(state, { timeline: [], trace: [], resources: [], paths: [], legs: {}, firstAudioMs: undefined, status: "connecting" });
  plan = planned;
  pendingMeters = [];
  $("timeline").replaceChildren();
  clearReports();
  showError(null);
  renderStatus();
  try {
    await action(gen);
    if (gen === generation) startStats();
  } catch (e) {
    // A hung-up action's late error (its POST answered after the hang-up) is nobody's business.
    if (gen !== generation || e.stale) return;
    if (e.leg) setLeg(e.leg, "failed");
    const leg = e.leg && plan.length > 1 ? `${title(e.leg)}: ` : "";
    fail("failed", leg + describe(e));
    await hangup({ keep: true });
  }
}

async function microphone() {
  if (plan.includes("publish")) setLeg("publish", "waiting for the microphone");
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

/** Stops every leg; `keep` leaves the status and error of a failure on the page. */
async function hangup({ keep = false, quiet = false } = {}) {
  generation++;
  clearInterval(statsTimer);
  statsTimer = null;
  const stopping = legs;
  legs = [];
  playback?.stop();
  playback = null;
  await Promise.all(stopping.map((l) => l.stop()));
  $("out").srcObject = null;
  if (keep) {
    // The legs that did not fail themselves were stopped with them: say so.
    for (const n of plan) if (!["failed", "ended"].includes(state.legs[n])) state.legs[n] = state.legs[n] ? "stopped" : "not started";
    renderStatus();
    return;
  }
  plan = [];
  state.legs = {};
  state.status = "idle";
  state.idleText = quiet ? "Idle." : "Hung up.";
  renderStatus();
}

$("echo").addEventListener("click", () => {
  const single = $("single").checked;
  run(single ? ["echo"] : ["play", "publish"], async (gen) => {
    if (single) {
      await startLeg("echo", await microphone(), gen);
    } else {
      // Both legs at once: the player needs no microphone, so it starts while permission is asked.
      await Promise.all([startLeg("whep", null, gen), microphone().then((track) => startLeg("whip", track, gen))]);
    }
  });
});
$("publish").addEventListener("click", () => run(["publish"], async (gen) => startLeg("whip", await microphone(), gen)));
$("play").addEventListener("click", () => run(["play"], async (gen) => startLeg("whep", null, gen)));
// The live streams, each playable from the list: it fills in the stream name and plays it.
startLiveList({
  list: $("live"),
  note: $("live-note"),
  token: () => $("token").value.trim(),
  play: (name) => {
    $("stream").value = name;
    showUrls();
    $("play").click();
  },
});
$("hangup").addEventListener("click", () => hangup());
addEventListener("pagehide", () => { for (const l of legs) l.stop({ keepalive: true }); });

// ---------- playback: volume, delayed echo, latency ----------
function context() {
  audioCtx ||= new AudioContext();
  audioCtx.resume().catch(() => {});
  return audioCtx;
}
const volume = () => Number($("volume").value);
const delayS = () => Number($("delay").value);
/** Plays the received stream directly, or through a DelayNode for the delayed echo. */
function updatePlayback() {
  const receiving = legs.find((l) => l.receives && l.stream);
  $("out").volume = volume();
  playback?.stop();
  playback = null;
  $("out").muted = delayS() > 0;
  // Chromium feeds a remote stream into WebAudio only while a media element plays it (muted).
  if (receiving && delayS() > 0) playback = delayedPlayback(context(), receiving.stream, delayS(), volume());
}
$("volume").addEventListener("input", () => { $("out").volume = volume(); playback?.setVolume(volume()); });
$("delay").addEventListener("change", updatePlayback);

function canMeasure() {
  return legs.some((l) => l.kind !== "whep") && legs.some((l) => l.receives && l.stream);
}
$("latency").addEventListener("click", async () => {
  const sending = legs.find((l) => l.kind !== "whep");
  const receiving = legs.find((l) => l.receives && l.stream);
  const sender = sending?.pc.getSenders().find((s) => s.track?.kind === "audio");
  if (!sender || !receiving || measuring) return;
  const gen = generation;
  $("latency-result").textContent = "Measuring…";
  const ctx = context();
  const tap = playback?.tap || ctx.createMediaStreamSource(receiving.stream);
  measuring = measure(ctx, sender, tap, { extraDelayS: delayS(), cancelled: () => gen !== generation });
  renderStatus();
  const times = await measuring.finally(() => (measuring = null));
  if (gen !== generation) {
    $("latency-result").textContent = "";
    return;
  }
  const ms = median(times);
  state.latency = { ms, times };
  $("latency-result").textContent = ms === undefined ? "No burst came back." :
    `Echo latency ${ms} ms (median of ${times.length}: ${times.join(", ")} ms)` +
    (state.stats.rttMs !== undefined ? `; ICE round trip ${state.stats.rttMs} ms.` : ".");
  renderStatus();
});

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
  updatePlayback();
}
function meter(stream, element, name) {
  const ctx = context();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 512;
  ctx.createMediaStreamSource(stream).connect(analyser);
  const data = new Float32Array(analyser.fftSize);
  const draw = () => {
    analyser.getFloatTimeDomainData(data);
    let peak = 0;
    for (const v of data) peak = Math.max(peak, Math.abs(v));
    // Rise at once, fall smoothly (about 10 dB per 100 ms at 60 frames per second).
    element.value = Math.max(Math.min(1, peak * 1.5), element.value * 0.9);
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
          if (s.packetsReceived > 0) firstAudio(leg);
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
  const fast = setInterval(() => (state.firstAudioMs !== undefined || !legs.some((l) => l.receives)
    ? clearInterval(fast) : poll()), 20);
  statsTimer = setInterval(poll, 1000);
}

function firstAudio(leg) {
  if (leg.firstAudio) return;
  leg.firstAudio = true;
  mark("first audio received", leg.name);
  state.firstAudioMs ??= state.timeline.at(-1).ms;
  if (leg.pc.connectionState === "connected") setLeg(leg.name, leg.kind === "whep" ? "receiving audio" : "connected");
}

function renderStats(s) {
  const rows = [
    ["Packets received", s.packetsReceived],
    ["Packets lost", s.packetsLost],
    ["Jitter", s.jitterMs !== undefined ? `${s.jitterMs} ms` : undefined],
    ["Packets sent", s.packetsSent],
    ["Round-trip time", s.rttMs !== undefined ? `${s.rttMs} ms` : undefined],
    ...state.paths.map((p) => [`Media path (${LEG_NAMES[p.kind]})`, p.label]),
  ].filter(([, v]) => v !== undefined);
  $("stats").replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = k;
    dd.textContent = String(v);
    return [dt, dd];
  }));
}
