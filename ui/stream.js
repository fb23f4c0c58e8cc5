// A stream's page: OBS settings, the live preview, the renditions and the
// ingest warnings (refreshed while the page is open), and the chat.

import { request } from "./api.js";
import { SessionChart } from "./chart.js";
import { chatPanel } from "./chat.js";
import { RecordingControl } from "./recordcontrol.js";
import { badge, confirmAction, copyText, countOf, el, errorBox, showError } from "./dom.js";
import { streamSettings } from "./streamedit.js";

const REFRESH_MS = 3000;

export async function streamPage(streamId, { page, setTitle, onLeave }) {
  const error = errorBox();
  const statusLine = el("p", { "aria-live": "polite" });
  const obs = el("section", { "aria-labelledby": "obs-heading" }, el("h2", { id: "obs-heading" }, "OBS settings"));
  const video = el("video", {
    id: "preview", muted: true, autoplay: true, playsInline: true, controls: true,
    "aria-label": "Live preview",
  });
  const previewNote = el("p", { "aria-live": "polite" });
  const renditions = el("div", { class: "table-wrap" });
  const warnings = el("ul", { "aria-label": "Ingest warnings" });
  const chart = new SessionChart();
  page(
    "Stream",
    el("p", {}, el("a", { href: "#/apps" }, "← All apps")),
    error,
    statusLine,
    obs,
    el("section", { "aria-labelledby": "preview-heading" },
      el("h2", { id: "preview-heading" }, "Preview"), video, previewNote),
    el("section", { "aria-labelledby": "renditions-heading" },
      el("h2", { id: "renditions-heading" }, "Renditions"), renditions),
    el("section", { "aria-labelledby": "warnings-heading" },
      el("h2", { id: "warnings-heading" }, "Ingest warnings"), warnings),
    chart.section,
  );

  let stream;
  let app;
  try {
    stream = await request("GET", `/api/streams/${encodeURIComponent(streamId)}`);
    app = await request("GET", `/api/apps/${encodeURIComponent(stream.app_id)}`);
  } catch (exc) {
    showError(error, exc);
    return;
  }
  setTitle(stream.title);
  pointBackLinkAt(stream.app_id);
  renderObsSettings(obs, stream);

  const chat = chatPanel(stream.id);
  const settings = streamSettings(stream, { onSaved: (updated) => setTitle(updated.title) });
  const recording = new RecordingControl(stream);
  document.getElementById("main").append(recording.section, chat.section, settings, deleteSection(stream));

  const player = new PreviewPlayer(video, previewNote, stream, app);
  let stopped = false;
  const refresh = async () => {
    // A tab in the background skips its polls, so an open but unseen page
    // sends the box no status requests.
    if (document.hidden) return;
    try {
      const status = await request("GET", `/api/streams/${stream.id}/status`);
      if (stopped) return;
      error.textContent = "";
      renderStatus(statusLine, status);
      renderRenditions(renditions, status.renditions || []);
      renderWarnings(warnings, status.ingest_warnings || []);
      chart.add(status);
      recording.update(status);
      player.update(status.status);
    } catch (exc) {
      showError(error, exc);
    }
  };
  const timer = setInterval(refresh, REFRESH_MS);
  onLeave(() => {
    stopped = true;
    clearInterval(timer);
    player.stop();
    chat.stop();
  });
  await refresh();
}

function pointBackLinkAt(appId) {
  const link = document.querySelector("#main > p > a");
  link.href = `#/apps/${appId}`;
  link.textContent = "← Back to the app";
}

function deleteSection(stream) {
  const error = errorBox();
  const remove = async () => {
    const confirmed = await confirmAction(`Delete the stream ${stream.title}? A live publisher is disconnected.`, "Delete stream");
    if (!confirmed) return;
    try {
      await request("DELETE", `/api/streams/${stream.id}`);
      location.hash = `#/apps/${stream.app_id}`;
    } catch (exc) {
      showError(error, exc);
    }
  };
  return el("section", {},
    el("h2", {}, "Delete"),
    error,
    el("button", { type: "button", onclick: remove }, "Delete stream"));
}

function renderStatus(node, status) {
  const parts = [countOf(status.viewer_count, "viewer")];
  if (status.started_at) {
    parts.push(`${status.duration_seconds} s in this session`);
  }
  node.replaceChildren(badge(status.status), " ", parts.join(", "));
}

// The Server and Stream Key fields of OBS, with copy, reveal and reset.
function renderObsSettings(section, stream) {
  const heading = section.firstElementChild;
  const note = el("p", { "aria-live": "polite" });
  const server = el("input", { id: "obs-server", readOnly: true, value: stream.rtmp_url });
  const key = el("input", { id: "obs-key", type: "password", readOnly: true, value: stream.stream_key });
  const reveal = el("button", { type: "button", "aria-pressed": "false" }, "Reveal");
  reveal.addEventListener("click", () => {
    const hidden = key.type === "password";
    key.type = hidden ? "text" : "password";
    reveal.textContent = hidden ? "Hide" : "Reveal";
    reveal.setAttribute("aria-pressed", String(hidden));
  });
  const reset = async () => {
    const confirmed = await confirmAction("Reset the stream key? The old key stops working at once and a live publisher is disconnected.", "Reset key");
    if (!confirmed) return;
    try {
      const updated = await request("POST", `/api/streams/${stream.id}/reset-key`);
      key.value = updated.stream_key;
      note.textContent = "The stream key was reset. Put the new key in OBS.";
    } catch (exc) {
      showError(note, exc);
    }
  };
  section.replaceChildren(
    heading,
    el("div", { class: "field-row" },
      el("label", { for: "obs-server" }, "Server", server),
      el("button", { type: "button", onclick: () => copyText(server.value, note) }, "Copy server")),
    // Present only when the box has a TLS certificate and rtmp_url is rtmps://.
    ...(stream.plain_rtmp_url ? [el("p", { id: "obs-plain-server" },
      `For an encoder that cannot use RTMPS or trust the box's certificate: ${stream.plain_rtmp_url}`)] : []),
    el("div", { class: "field-row" },
      el("label", { for: "obs-key" }, "Stream key", key),
      reveal,
      el("button", { type: "button", onclick: () => copyText(key.value, note) }, "Copy key"),
      el("button", { type: "button", onclick: reset }, "Reset key")),
    note,
  );
}

function renderRenditions(node, renditions) {
  if (renditions.length === 0) {
    node.replaceChildren(el("p", {}, "No renditions: the stream is passed through as published, or it is offline."));
    return;
  }
  const columns = ["Name", "State", "Size", "FPS", "Bitrate (kbps)", "Encoder", "Speed", "Reason"];
  const rows = renditions.map((rendition) => el("tr", {},
    el("td", {}, rendition.name),
    el("td", {}, rendition.state),
    el("td", {}, rendition.width ? `${rendition.width}×${rendition.height}` : "–"),
    el("td", {}, rendition.fps ?? "–"),
    el("td", {}, rendition.bitrate ?? "–"),
    el("td", {}, rendition.encoder ?? "–"),
    el("td", {}, rendition.speed ?? "–"),
    el("td", {}, rendition.reason ?? "")));
  node.replaceChildren(el("table", {},
    el("thead", {}, el("tr", {}, columns.map((name) => el("th", { scope: "col" }, name)))),
    el("tbody", {}, rows)));
}

function renderWarnings(list, warnings) {
  if (warnings.length === 0) {
    list.replaceChildren(el("li", {}, "None."));
    return;
  }
  list.replaceChildren(...warnings.map((warning) => el("li", {}, el("strong", {}, warning.code), ": ", warning.message)));
}

function playbackPolicy(stream, app) {
  return stream.settings?.playback_policy || app.settings?.playback_policy || "public";
}

// hls.js on the preview <video>. It starts when the stream turns live and
// starts again after a fatal error (such as the playlist not existing yet
// in the first second of a session) for as long as the stream stays live.
class PreviewPlayer {
  constructor(video, note, stream, app) {
    this.video = video;
    this.note = note;
    this.stream = stream;
    this.app = app;
    this.hls = null;
    this.live = false;
    this.starting = false;
  }

  update(status) {
    const wasLive = this.live;
    this.live = status === "live" || status === "reconnecting";
    if (this.live && !wasLive && this.hls) {
      // A new session after an ended one: the old player stopped at the
      // ended playlist, so a fresh one joins the new session.
      this.stop();
    }
    if (this.live && !this.hls && !this.starting) {
      this.start();
    } else if (!this.live && !this.hls) {
      this.note.textContent = "The preview starts when a publisher goes live.";
    }
  }

  async start() {
    if (!window.Hls || !Hls.isSupported()) {
      this.note.textContent = "This browser has no MediaSource support, so it cannot show the preview.";
      return;
    }
    this.starting = true;
    try {
      const url = await this.sourceUrl();
      const hls = new Hls();
      hls.on(Hls.Events.ERROR, (_event, data) => {
        if (data.fatal) this.restart(`The preview failed (${data.details}); retrying.`);
      });
      hls.on(Hls.Events.MANIFEST_PARSED, () => {
        this.video.play().catch(() => {
          this.note.textContent = "Press play to start the preview.";
        });
      });
      hls.loadSource(url);
      hls.attachMedia(this.video);
      this.hls = hls;
      this.note.textContent = "";
    } catch (exc) {
      this.note.textContent = `The preview could not start: ${exc.message}`;
    } finally {
      this.starting = false;
    }
  }

  async sourceUrl() {
    // Read at each start, so a policy saved on this page applies to the
    // next session's preview.
    if (playbackPolicy(this.stream, this.app) !== "signed") return this.stream.hls_url;
    const body = { viewer_id: "admin-preview", expiry_minutes: 60 };
    const token = await request("POST", `/api/streams/${this.stream.id}/playback-token`, body);
    return token.playback_url;
  }

  // Drops the failed player; the next status refresh starts a new one
  // while the stream is live.
  restart(message) {
    this.note.textContent = message;
    if (this.hls) {
      this.hls.destroy();
      this.hls = null;
    }
  }

  stop() {
    if (this.hls) {
      this.hls.destroy();
      this.hls = null;
    }
  }
}
