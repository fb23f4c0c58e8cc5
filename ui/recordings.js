// An app's recordings: thumbnails, playback of the MP4 from /vod, editing
// the title and description, delete.
// The list refreshes while the page is open, so a recording that is being
// written turns completed without a reload.

import { request } from "./api.js";
import { confirmAction, el, errorBox, field, formatBytes, formatTime, showError } from "./dom.js";

const REFRESH_MS = 5000;

export async function recordingsPage(appId, { page, setTitle, onLeave }) {
  const error = errorBox();
  const list = el("ul", { class: "items recordings", "aria-label": "Recordings" });
  const video = el("video", { id: "recording-player", controls: true, playsInline: true, "aria-label": "Recording player" });
  const playing = el("p", { "aria-live": "polite" }, "Choose Play on a recording.");
  const note = el("p", { id: "recordings-note", "aria-live": "polite" });
  page(
    "Recordings",
    el("p", {}, el("a", { href: `#/apps/${appId}` }, "← Back to the app")),
    el("section", { "aria-labelledby": "player-heading" },
      el("h2", { id: "player-heading" }, "Player"), playing, video),
    el("section", {}, el("h2", {}, "Recordings"), error, note, list),
  );

  let app;
  try {
    app = await request("GET", `/api/apps/${encodeURIComponent(appId)}`);
  } catch (exc) {
    showError(error, exc);
    return;
  }
  setTitle(`Recordings of ${app.name}`);
  const tokens = new PlaybackTokens(app);
  const view = { list, error, note, video, playing, tokens, appId };

  let stopped = false;
  const refresh = async () => {
    if (document.hidden || stopped) return;
    await refreshRecordings(view);
  };
  const timer = setInterval(refresh, REFRESH_MS);
  onLeave(() => {
    stopped = true;
    clearInterval(timer);
    video.removeAttribute("src");
    video.load();
  });
  await refresh();
}

// Playback tokens for the recordings of signed streams: /vod follows the
// playback policy of the recording's stream. One token per stream.
class PlaybackTokens {
  constructor(app) {
    this.app = app;
    this.streams = new Map();
    this.tokens = new Map();
  }

  async urlFor(streamId, url) {
    if (!url) return url;
    let stream = this.streams.get(streamId);
    if (!stream) {
      stream = await request("GET", `/api/streams/${encodeURIComponent(streamId)}`);
      this.streams.set(streamId, stream);
    }
    const policy = stream.settings?.playback_policy || this.app.settings?.playback_policy || "public";
    if (policy !== "signed") return url;
    let token = this.tokens.get(streamId);
    // A token is replaced 5 minutes before it expires, so a page left open
    // for hours keeps loading thumbnails.
    if (!token || Date.parse(token.expires_at) - Date.now() < 5 * 60 * 1000) {
      const body = { viewer_id: "admin-recordings", expiry_minutes: 60 };
      token = await request("POST", `/api/streams/${streamId}/playback-token`, body);
      this.tokens.set(streamId, token);
    }
    return `${url}?token=${encodeURIComponent(token.playback_token)}`;
  }
}

async function refreshRecordings(view) {
  try {
    const recordings = await request("GET", `/api/recordings?app_id=${encodeURIComponent(view.appId)}&limit=100`);
    // An unchanged list is left as it is, so the refresh neither reloads the
    // thumbnails nor moves the focus.
    const json = JSON.stringify(recordings);
    if (json === view.renderedJson) return;
    // A recording being written changes at every refresh, so the list is
    // left alone while the person types in one of its edit forms.
    if (view.list.contains(document.activeElement) && document.activeElement.closest("form")) return;
    const items = [];
    for (const recording of recordings) items.push(await recordingItem(recording, view));
    if (items.length === 0) {
      items.push(el("li", {}, "No recordings yet. Turn on recording in a stream's settings, and its next session is recorded."));
    }
    // Keep the focus on a button that survives the refresh.
    const focusedId = document.activeElement?.closest?.("[data-recording-id]")?.dataset.recordingId;
    const focusedLabel = document.activeElement?.getAttribute?.("aria-label");
    view.list.replaceChildren(...items);
    view.renderedJson = json;
    if (focusedId && focusedLabel) {
      view.list.querySelector(`[data-recording-id="${CSS.escape(focusedId)}"] [aria-label="${CSS.escape(focusedLabel)}"]`)?.focus();
    }
    view.error.textContent = "";
  } catch (exc) {
    showError(view.error, exc);
  }
}

async function recordingItem(recording, view) {
  const thumbnailUrl = recording.thumbnail_url && await view.tokens.urlFor(recording.stream_id, recording.thumbnail_url);
  const thumbnail = thumbnailUrl
    ? el("img", { src: thumbnailUrl, alt: `Poster frame of ${recording.title}`, width: 160, height: 90, loading: "lazy" })
    : el("span", { class: "no-thumbnail" }, "No thumbnail yet");
  const play = async () => {
    try {
      view.video.src = await view.tokens.urlFor(recording.stream_id, recording.cdn_url);
      view.playing.textContent = `Playing ${recording.title}.`;
      view.video.focus();
      await view.video.play();
    } catch (exc) {
      if (exc.name !== "NotAllowedError" && exc.name !== "AbortError") showError(view.error, exc);
    }
  };
  const remove = async () => {
    if (!(await confirmAction(`Delete the recording ${recording.title}? Its file is deleted too.`, "Delete recording"))) return;
    try {
      await request("DELETE", `/api/recordings/${recording.id}`);
      view.renderedJson = null;
      await refreshRecordings(view);
    } catch (exc) {
      showError(view.error, exc);
    }
  };
  const facts = [
    recording.status,
    recording.duration ? `${recording.duration.toFixed(1)} s` : null,
    recording.file_size ? formatBytes(recording.file_size) : null,
    formatTime(recording.created_at),
  ].filter(Boolean).join(" · ");
  const finished = recording.status === "completed" || recording.status === "failed";
  return el("li", { "data-recording-id": recording.id, "data-status": recording.status },
    thumbnail,
    el("strong", {}, recording.title),
    recording.description ? el("span", { class: "description" }, recording.description) : null,
    el("span", {}, facts),
    recording.failure_reason ? el("span", { class: "error-text" }, `Failed: ${recording.failure_reason}`) : null,
    recording.cdn_url
      ? el("button", { type: "button", onclick: play, "aria-label": `Play ${recording.title}` }, "Play")
      : null,
    finished
      ? el("button", { type: "button", onclick: remove, "aria-label": `Delete recording ${recording.title}` }, "Delete")
      : null,
    editForm(recording, view));
}

// A folded form that changes a recording's title and description.
function editForm(recording, view) {
  const title = field("Title", {
    required: true, maxLength: 200, value: recording.title,
    "aria-label": `Title of the recording ${recording.title}`,
  });
  const description = field("Description", {
    value: recording.description || "",
    "aria-label": `Description of the recording ${recording.title}`,
  });
  const error = errorBox();
  const save = async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      const body = { title: title.input.value, description: description.input.value };
      await request("PUT", `/api/recordings/${recording.id}`, body);
      view.note.textContent = `Saved the recording ${body.title}.`;
      // The refresh replaces this form, so the focus moves to the new
      // item's Edit control.
      document.getElementById("main").focus();
      await refreshRecordings(view);
      view.list.querySelector(`[data-recording-id="${CSS.escape(recording.id)}"] summary`)?.focus();
    } catch (exc) {
      showError(error, exc);
    }
  };
  return el("details", { class: "edit" },
    el("summary", { "aria-label": `Edit title and description of ${recording.title}` }, "Edit"),
    el("form", { onsubmit: save },
      title.label, description.label, error,
      el("button", { type: "submit" }, "Save recording")));
}
