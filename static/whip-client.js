// A small WHIP (RFC 9725) / WHEP client: one RTCPeerConnection, one POST, optional trickle ICE by
// PATCH when the server advertises it, DELETE on hang-up. No dependencies.

/** An HTTP error with the server's short plain-text reason. */
export class HttpError extends Error {
  constructor(status, reason) {
    super(`${status} ${reason}`.trim());
    this.status = status;
    this.reason = reason;
  }
}

/**
 * Waits until the offer carries candidates: gathering complete, or the first candidate plus a short
 * settle time for its siblings (host candidates come together), at most `ms`. Waiting for
 * "complete" would add ~100 ms even on loopback, and the server learns any missing address from
 * the client's own connectivity checks (peer-reflexive, RFC 8445 §7.3.1.3).
 */
function gathered(pc, ms, settleMs = 10) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    let settle = null;
    const done = () => {
      clearTimeout(cap);
      clearTimeout(settle);
      pc.removeEventListener("icecandidate", onCandidate);
      resolve();
    };
    const onCandidate = (e) => {
      if (!e.candidate) done();
      else settle ??= setTimeout(done, settleMs);
    };
    const cap = setTimeout(done, ms);
    pc.addEventListener("icecandidate", onCandidate);
  });
}

/**
 * What the endpoint's OPTIONS answer says: whether its sessions take trickle ICE (`Accept-Patch:
 * application/trickle-ice-sdpfrag`, or PATCH among its methods as some servers say it), and the
 * STUN/TURN servers of its `Link: <url>; rel="ice-server"` headers (RFC 9725 §4.6), as
 * RTCIceServer objects.
 */
export async function discover(url, headers = {}) {
  try {
    const res = await fetch(url, { method: "OPTIONS", headers });
    const methods = `${res.headers.get("Allow") || ""},${res.headers.get("Access-Control-Allow-Methods") || ""}`;
    const patches = /trickle-ice-sdpfrag/i.test(res.headers.get("Accept-Patch") || "");
    return { trickle: patches || /\bPATCH\b/i.test(methods), iceServers: iceServers(res.headers.get("Link") || "") };
  } catch {
    return { trickle: false, iceServers: [] };
  }
}

/**
 * The ice-server links of a `Link` value (RFC 8288: `<target>; param="quoted"`, fields joined by
 * commas, and a comma may sit inside a quoted credential).
 */
export function iceServers(value) {
  const servers = [];
  const re = /<([^>]*)>((?:\s*;\s*[\w-]+\s*=\s*(?:"(?:[^"\\]|\\.)*"|[^;,]*))*)/g;
  for (const [, url, params] of value.matchAll(re)) {
    const p = {};
    for (const [, k, quoted, bare] of params.matchAll(/;\s*([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;,]*))/g)) {
      p[k.toLowerCase()] = quoted !== undefined ? quoted.replace(/\\(.)/g, "$1") : bare.trim();
    }
    if (p.rel !== "ice-server") continue;
    const server = { urls: url };
    if (p.username !== undefined) server.username = p.username;
    if (p.credential !== undefined) server.credential = p.credential;
    servers.push(server);
  }
  return servers;
}

/** The SDP fragment (RFC 8840) carrying `candidates` for the first m-line. */
function sdpFrag(pc, candidates) {
  const sdp = pc.localDescription.sdp;
  const ufrag = sdp.match(/a=ice-ufrag:(.*)\r?\n/)?.[1];
  const pwd = sdp.match(/a=ice-pwd:(.*)\r?\n/)?.[1];
  const mid = sdp.match(/a=mid:(.*)\r?\n/)?.[1] ?? "0";
  let frag = `a=ice-ufrag:${ufrag}\r\na=ice-pwd:${pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:${mid}\r\n`;
  for (const c of candidates) frag += c ? `a=${c.candidate}\r\n` : "a=end-of-candidates\r\n";
  return frag;
}

/**
 * One WHIP or WHEP session.
 * kind: "whip" | "whep" | "echo"; track: the microphone track to send (whip/echo); video: a camera
 * track to send as well (whip/echo), or `true` to receive video too (whep).
 * onStep(label): called at each step ("offer created", "POST sent", "201 received", ...).
 * discovered: a promise of `discover(endpoint)` (trickle support and ICE servers; asked with
 * OPTIONS when not given; a page can ask once, ahead of time, to keep the round trip out of the
 * connect time).
 */
export class Session {
  constructor({ endpoint, kind, track, video, token, discovered, onStep = () => {} }) {
    this.endpoint = endpoint;
    this.kind = kind;
    this.track = track;
    this.video = video;
    this.token = token;
    this.onStep = onStep;
    this.discovered = discovered;
    this.pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
    this.resource = null;
    this.etag = null;
  }

  headers(extra = {}) {
    return this.token ? { ...extra, Authorization: `Bearer ${this.token}` } : extra;
  }

  async start() {
    const { pc, kind } = this;
    const direction = kind === "whip" ? "sendonly" : kind === "whep" ? "recvonly" : "sendrecv";
    if (this.track && direction !== "recvonly") pc.addTransceiver(this.track, { direction });
    else pc.addTransceiver("audio", { direction });
    if (this.video instanceof MediaStreamTrack && direction !== "recvonly") pc.addTransceiver(this.video, { direction });
    else if (this.video) pc.addTransceiver("video", { direction });
    // The OPTIONS answer (asked ahead of time by the page, or now): trickle support and the ICE
    // servers, which must be configured before gathering starts.
    const info = await (this.discovered ?? discover(this.endpoint, this.headers()));
    const trickle = info.trickle;
    this.onStep("OPTIONS answered");
    if (info.iceServers.length) {
      pc.setConfiguration({ ...pc.getConfiguration(), iceServers: info.iceServers });
      this.onStep(`ICE servers: ${info.iceServers.map((s) => s.urls).join(" ")}`);
    }
    const pending = [];
    // Firefox ends each generation with an empty candidate before the final null: not one.
    const real = (e) => !e.candidate || e.candidate.candidate;
    pc.addEventListener("icecandidate", (e) => real(e) && pending.push(e.candidate));
    const offerGathered = pc.createOffer().then((offer) => pc.setLocalDescription(offer))
      .then(() => this.onStep("offer created"));
    await offerGathered;
    // Without trickle the offer carries the candidates (RFC 9725 §4.3.2); with it, the offer goes
    // at once and the candidates follow by PATCH.
    if (!trickle) await gathered(pc, 2000);
    this.trickling = trickle;
    this.onStep(trickle ? "offer without waiting for candidates (trickle ICE)" : "candidates in offer");
    this.onStep("POST sent");
    const res = await fetch(this.endpoint, {
      method: "POST",
      headers: this.headers({ "Content-Type": "application/sdp" }),
      body: pc.localDescription.sdp,
    });
    const body = await res.text();
    if (this.stopped) {
      // Hung up while the POST was in flight: the session it created must not be left behind.
      const location = res.status === 201 && res.headers.get("Location");
      if (location) fetch(new URL(location, res.url || this.endpoint), { method: "DELETE", headers: this.headers() }).catch(() => {});
      throw Object.assign(new Error("hung up"), { stale: true });
    }
    if (res.status !== 201) throw new HttpError(res.status, body.trim());
    this.onStep("201 received");
    // RFC 9725 §4.5: after a redirect, the Location is relative to where the POST ended up.
    this.resource = new URL(res.headers.get("Location"), res.url || this.endpoint).href;
    this.etag = res.headers.get("ETag");
    await pc.setRemoteDescription({ type: "answer", sdp: body });
    if (trickle) this.trickle(pending);
    return this;
  }

  /**
   * Sends buffered and later candidates by PATCH (RFC 9725 §4.3.2), best effort; each answer is a
   * step ("candidates trickled: 204", "end of candidates trickled: 204"), counted in `trickled`.
   */
  trickle(pending) {
    this.trickled = { candidates: 0, patches: 0, statuses: [] };
    const send = async (candidates) => {
      // Candidates of a restart's new generation wait for its PATCH: they need its ETag, and the
      // server must know the new credentials first (RFC 9725 §4.3.3).
      await this.restarting;
      if (!this.resource) return;
      const real = candidates.filter(Boolean);
      const label = real.length ? "candidates trickled" : "end of candidates trickled";
      // A trickle names the ICE session it belongs to, or none (never "*": with new credentials
      // that would restart ICE, RFC 9725 §4.3.1).
      const match = this.etag ? { "If-Match": this.etag } : {};
      fetch(this.resource, {
        method: "PATCH",
        headers: this.headers({ "Content-Type": "application/trickle-ice-sdpfrag", ...match }),
        body: sdpFrag(this.pc, candidates),
      }).then((res) => {
        this.trickled.patches += 1;
        this.trickled.candidates += real.length;
        this.trickled.statuses.push(res.status);
        this.onStep(`${label}: ${res.status}`);
      }).catch(() => this.onStep(`${label}: failed`));
    };
    if (pending.length) send(pending.splice(0));
    this.pc.addEventListener("icecandidate", (e) => (!e.candidate || e.candidate.candidate) && send([e.candidate]));
  }

  /**
   * Restarts ICE (RFC 9725 §4.3.3), e.g. after a network change: new local credentials by
   * `restartIce()`, a PATCH with them and `If-Match: *`, then the server's fragment (its new
   * credentials and candidates) applied to the connection. DTLS and the tracks carry on.
   */
  async restartIce() {
    let done;
    this.restarting = new Promise((resolve) => { done = resolve; });
    try {
      return await this.restartNow();
    } finally {
      done();
    }
  }

  async restartNow() {
    const { pc } = this;
    pc.restartIce();
    await pc.setLocalDescription(await pc.createOffer());
    const res = await fetch(this.resource, {
      method: "PATCH",
      headers: this.headers({ "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*" }),
      body: sdpFrag(pc, []),
    });
    const body = await res.text();
    if (res.status !== 200) {
      // The server kept the old ICE session: so does the connection.
      await pc.setLocalDescription({ type: "rollback" }).catch(() => {});
      throw new HttpError(res.status, body.trim());
    }
    this.etag = res.headers.get("ETag") || this.etag;
    const ufrag = body.match(/a=ice-ufrag:(.*)\r?\n/)?.[1];
    const pwd = body.match(/a=ice-pwd:(.*)\r?\n/)?.[1];
    const candidates = [...body.matchAll(/^a=(candidate:.*?)\r?$/gm)].map((m) => m[1]);
    const sdp = pc.remoteDescription.sdp
      .replace(/a=ice-ufrag:.*\r?\n/g, `a=ice-ufrag:${ufrag}\r\n`)
      .replace(/a=ice-pwd:.*\r?\n/g, `a=ice-pwd:${pwd}\r\n`)
      .replace(/a=(candidate:.*|end-of-candidates)\r?\n/g, "");
    await pc.setRemoteDescription({ type: "answer", sdp });
    const mid = pc.getTransceivers()[0]?.mid ?? "0";
    for (const candidate of candidates) await pc.addIceCandidate({ candidate, sdpMid: mid });
    this.onStep(`ICE restarted: ${res.status}`);
    return res;
  }

  /** Closes the connection and DELETEs the resource (`keepalive` so it survives page unload). */
  async stop({ keepalive = false } = {}) {
    this.stopped = true;
    this.pc.close();
    if (!this.resource) return null;
    const url = this.resource;
    this.resource = null;
    try {
      const res = await fetch(url, { method: "DELETE", headers: this.headers(), keepalive });
      return res.status;
    } catch {
      return null;
    }
  }
}
