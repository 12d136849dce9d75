// The page's client report panel (issue 31): each leg's report from whip-echo (the URL its 201
// names in a Link, rel "urn:whip-echo:client-report"), findings first, then the numbers, refreshed
// every two seconds while the leg lives and read once more after it ends (the server keeps it 60 s).

const REFRESH_MS = 2000;
const panels = new Map();

/** Follows `session`'s report (its leg is `session.name`) until `alive()` turns false. */
export function watchReport(session, alive) {
  const url = `${session.resource}/report`;
  const box = panel(session.name);
  const read = async () => {
    try {
      const res = await fetch(url, { headers: { Accept: "application/json" } });
      if (res.ok) render(box, await res.json());
    } catch {
      // The next read tries again; after the end there is none.
    }
  };
  read();
  const timer = setInterval(() => {
    if (alive()) read();
    else {
      clearInterval(timer);
      // Its last words: the report as the session ended.
      setTimeout(read, 500);
    }
  }, REFRESH_MS);
}

/** Empties the panel (a new run). */
export function clearReports() {
  panels.clear();
  document.getElementById("reports").replaceChildren();
}

function panel(name) {
  if (!panels.has(name)) {
    const box = document.createElement("div");
    box.className = "report";
    box.dataset.leg = name;
    document.getElementById("reports").append(box);
    panels.set(name, box);
  }
  return panels.get(name);
}

function el(tag, text, className) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (className) e.className = className;
  return e;
}

function render(box, r) {
  const findings = el("ul", undefined, "findings");
  for (const f of r.findings) {
    const li = el("li", undefined, f.level);
    li.append(el("strong", f.level === "ok" ? "ok" : f.level.toUpperCase()), ` ${f.text} `, el("span", `(${f.basis})`, "hint"));
    findings.append(li);
  }
  const numbers = el("dl");
  const add = (term, value) => { numbers.append(el("dt", term), el("dd", value)); };
  const ms = (v) => (v == null ? "–" : `${v} ms`);
  add("connected", `${ms(r.connectivity.connected_ms)} over ${r.connectivity.transport ?? "–"}`);
  add("first media", ms(r.connectivity.first_media_ms));
  for (const t of r.tracks) {
    const what = t.direction === "from_client" ? `sent ${t.kind}` : `received ${t.kind}`;
    const loss = t.direction === "from_client" ? `, lost ${t.loss_percent.toFixed(1)} %, jitter ${t.jitter_ms.toFixed(1)} ms` : "";
    add(what, `${t.packets} packets${loss}`);
  }
  const x = r.rtcp;
  add("your RTCP", `${x.sender_reports} sender, ${x.receiver_reports} receiver reports${x.rtt_ms == null ? "" : `, round trip ${x.rtt_ms.toFixed(1)} ms`}`);
  box.replaceChildren(el("h3", `${box.dataset.leg}: ${r.state}${r.ended ? ` (${r.ended})` : ""}`), findings, numbers);
}
