// The recording controls of a stream's page: start and stop a recording of
// the live session, and show the one in progress.

import { request } from "./api.js";
import { el, errorBox, formatTime, showError } from "./dom.js";

export class RecordingControl {
  constructor(stream) {
    this.stream = stream;
    this.live = false;
    this.busy = false;
    this.error = errorBox();
    this.state = el("p", { id: "recording-state" }, "The stream is offline, so there is nothing to record.");
    this.note = el("p", { id: "recording-note", "aria-live": "polite" });
    this.start = el("button", { type: "button", disabled: true, onclick: () => this.call("start") }, "Start recording");
    this.stop = el("button", { type: "button", disabled: true, onclick: () => this.call("stop") }, "Stop recording");
    this.section = el("section", { "aria-labelledby": "recording-heading" },
      el("h2", { id: "recording-heading" }, "Recording"),
      this.state,
      this.note,
      this.error,
      el("div", { class: "field-row" }, this.start, this.stop),
      el("p", {}, el("a", { href: `#/apps/${stream.app_id}/recordings` }, "All recordings of the app")));
  }

  // Updates the controls from a status refresh. While the stream is live,
  // it fetches the stream's newest recording too, because a session may
  // also be recorded automatically.
  async update(status) {
    this.live = status.status === "live" || status.status === "reconnecting";
    if (!this.live) {
      this.show(null);
      return;
    }
    try {
      const query = `stream_id=${encodeURIComponent(this.stream.id)}&limit=1`;
      const [newest] = await request("GET", `/api/recordings?${query}`);
      this.show(newest && (newest.status === "recording" || newest.status === "processing") ? newest : null);
    } catch (exc) {
      showError(this.error, exc);
    }
  }

  show(active) {
    if (this.busy) return;
    if (active) {
      this.state.textContent = `Recording ${active.title} since ${formatTime(active.created_at)} (${active.status}).`;
    } else if (this.live) {
      this.state.textContent = "Not recording.";
    } else {
      this.state.textContent = "The stream is offline, so there is nothing to record.";
    }
    this.start.disabled = !this.live || Boolean(active);
    this.stop.disabled = !active;
  }

  async call(action) {
    this.error.textContent = "";
    this.note.textContent = "";
    this.busy = true;
    this.start.disabled = true;
    this.stop.disabled = true;
    try {
      if (action === "start") {
        const recording = await request("POST", "/api/recordings/start", { stream_id: this.stream.id });
        this.busy = false;
        this.show(recording);
        this.note.textContent = "Recording started. It begins with the next segment of the stream.";
      } else {
        this.note.textContent = "Stopping: the box is writing the file…";
        const recording = await request("POST", `/api/recordings/stop/${encodeURIComponent(this.stream.id)}`);
        this.busy = false;
        this.show(null);
        const seconds = recording.duration === null ? "" : `, ${recording.duration.toFixed(1)} s`;
        this.note.textContent = `Saved the recording ${recording.title} (${recording.status}${seconds}).`;
      }
    } catch (exc) {
      this.busy = false;
      showError(this.error, exc);
      this.show(null);
    }
  }
}
