// What the page says when media does not flow: who ended a session, why ICE failed and what to
// open, which path the media took, and what the server's own self-test found.

/**
 * Why the server ended the session of `resource`, in words, or null when it did not (the
 * resource is still live: the network failed). `closed`: the DTLS transport was closed by the
 * peer (a close_notify), which only the server sends. `unreachableIsEnd`: whether a server that
 * does not answer counts as ended.
 */
export async function describeEnd(resource, { closed = false, unreachableIsEnd = true } = {}) {
  if (!resource) return null;
  let res;
  try {
    // A black-holed network must not keep the page waiting for its verdict.
    res = await fetch(resource, { method: "GET", cache: "no-store", signal: AbortSignal.timeout(3000) });
  } catch {
    return unreachableIsEnd ? "The server stopped, or cannot be reached any more: the session ended." : null;
  }
  // 410: whip-echo says why the session ended (GET on an ended resource).
  if (res.status === 410) {
    const why = (await res.text()).trim().replace(/^session ended: /, "");
    return `The server ended the session: ${why}.`;
  }
  // 503: the server is stopping (its sessions are closed first) or cannot serve the resource.
  if (res.status === 503) {
    if (!unreachableIsEnd) return null;
    const why = (await res.text()).trim();
    return `The server stopped, or cannot be reached any more: the session ended (${why || "503"}).`;
  }
  if (res.status === 404 || closed) return "The server ended the session.";
  return null;
}

/** The message for a connection whose ICE failed (or did not connect within `timeoutMs`). */
export async function iceFailure(pc, timeoutMs) {
  const kinds = new Set();
  let local = 0;
  const stats = await pc.getStats().catch(() => new Map());
  for (const s of stats.values()) {
    if (s.type === "local-candidate" || s.type === "remote-candidate") kinds.add(`${s.type.split("-")[0]} ${s.protocol}/${s.candidateType}`);
    if (s.type === "local-candidate") local++;
  }
  // The ports the server's answer announced (RFC 8839 §5.1: foundation component transport
  // priority address port typ ...), whether or not this browser could pair with them.
  const ports = { udp: new Set(), tcp: new Set() };
  for (const [, transport, port] of (pc.remoteDescription?.sdp || "").matchAll(/^a=candidate:\S+ \d+ (\w+) \d+ \S+ (\d+) /gm)) {
    ports[transport.toLowerCase()]?.add(Number(port));
  }
  const how = timeoutMs ? `ICE failed: not connected after ${timeoutMs / 1000} s` : "ICE failed";
  if (!local) {
    return `Media could not connect (${how}): this browser gathered no ICE candidates at all, so it had ` +
      "no address to send from. A browser setting, an extension or a policy may block WebRTC, or no network " +
      "interface is up.";
  }
  const tried = [...kinds].sort().join(", ");
  const list = (set) => [...set].sort((a, b) => a - b).join(", ");
  const open = [ports.udp.size && `UDP ${list(ports.udp)}`, ports.tcp.size && `TCP ${list(ports.tcp)}`].filter(Boolean).join(" or ");
  return `Media could not connect (${how}). Tried: ${tried}.\n` +
    "The HTTP part worked, so UDP to the server is probably blocked on this network, and TCP to its media ports too. " +
    (open ? `Ask the operator to open ${open} on the server (the ports its answer announced), ` : "Ask the operator to open the server's media ports, ") +
    "or try another network.";
}

/**
 * The transport of a connection's selected candidate pair, as people name it: "UDP", "TCP",
 * "TCP on the HTTP port" (whip-echo takes ICE-TCP on the port that serves this page) or "relay".
 */
export async function mediaPath(pc) {
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

/**
 * The server's start-up self-test of its media paths (GET /healthz as JSON), shown in `element`
 * once it is done (it takes milliseconds, but a page loaded right after start-up may ask before).
 */
export async function showServerPaths(state, element, attempts = 40) {
  let health;
  try {
    const res = await fetch("/healthz", { headers: { Accept: "application/json" } });
    health = await res.json();
  } catch {
    return; // an older server or another origin: nothing to show
  }
  state.serverPaths = health.self_test;
  if (health.self_test?.state === "running" && attempts > 0) {
    setTimeout(() => showServerPaths(state, element, attempts - 1), 250);
    return;
  }
  if (health.self_test?.state !== "done") return;
  const name = { udp: "UDP", tcp: "TCP", "tcp-http-port": "TCP on the HTTP port" };
  element.textContent = "Server self-test: " + health.self_test.paths
    .map((p) => `${name[p.path] || p.path} ${p.addr.split(":").pop()} ${p.error ? "failed" : "ok"}`).join(" · ");
}
