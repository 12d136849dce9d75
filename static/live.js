// The page's list of live streams (GET /api/streams), each with a Play button, so that a visitor
// can listen to any stream being published on this server. Refreshed every 5 s while the page is
// visible. On a server with tokens the list needs the admin token (typed as the bearer token).

export function startLiveList({ list, note, token, play }) {
  const say = (text) => { note.textContent = text; };
  async function refresh() {
    const headers = token() ? { Authorization: `Bearer ${token()}` } : {};
    let body;
    try {
      const response = await fetch("/api/streams", { headers, cache: "no-store" });
      if (response.status === 401 || response.status === 403) {
        list.replaceChildren();
        return say("Listing the live streams needs the admin token (type it as the bearer token).");
      }
      if (!response.ok) return say(`The list of live streams is unavailable (${response.status}).`);
      body = await response.json();
    } catch {
      return say("The list of live streams is unavailable.");
    }
    const live = body.streams.filter((s) => s.publisher);
    say(live.length ? "" : "Nobody is publishing right now.");
    list.replaceChildren(...live.map((s) => {
      const item = document.createElement("li");
      item.dataset.stream = s.stream;
      const codecs = s.publisher.codecs.map((c) => c.split("/")[1]).join(" + ");
      const viewers = `${s.viewers} ${s.viewers === 1 ? "listener" : "listeners"}`;
      item.append(`${s.stream} (${codecs}, ${viewers}) `);
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = "Play";
      button.setAttribute("aria-label", `Play ${s.stream}`);
      button.addEventListener("click", () => play(s.stream));
      item.append(button);
      return item;
    }));
  }
  refresh();
  setInterval(() => { if (!document.hidden) refresh(); }, 5000);
  return { refresh };
}
