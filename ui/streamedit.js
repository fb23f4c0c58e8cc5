// The settings form of a stream's page: title, description, playback
// policy, bitrate limit, recording and the transcoding profile, and the
// button that revokes the stream's playback tokens.

import { request } from "./api.js";
import { confirmAction, el, errorBox, field, selectField, showError } from "./dom.js";

// Settings keys this form edits. Every other key of the stream's settings
// is sent back unchanged, because PUT replaces the whole settings object.
const EDITED_KEYS = ["playback_policy", "max_bitrate_kbps", "recording", "transcoding_profile_id"];

// Returns the section at once and fills the profile choices when their
// request completes, so the page does not wait for it.
export function streamSettings(stream, { onSaved }) {
  const settings = stream.settings || {};
  const title = field("Stream title", { name: "stream_title", required: true, value: stream.title });
  const description = field("Stream description", { name: "stream_description", value: stream.description || "" });
  const policy = selectField("Playback", { name: "playback_policy" }, [
    ["", "As the app sets it"],
    ["public", "Public: anyone with the link"],
    ["signed", "Signed: needs a playback token"],
  ], settings.playback_policy || "");
  const maxBitrate = field("Maximum bitrate (kbps, empty for none)", {
    name: "max_bitrate_kbps", type: "number", min: 1, step: "any",
    value: settings.max_bitrate_kbps ?? "",
  });
  const recording = selectField("Record each session", { name: "recording" }, [
    ["", "As the app sets it"],
    ["true", "Yes"],
    ["false", "No"],
  ], settings.recording === undefined || settings.recording === null ? "" : String(settings.recording));
  const profile = selectField("Transcoding profile", { name: "transcoding_profile_id" },
    [["", "None: pass the stream through as published"]], settings.transcoding_profile_id || "");
  const error = errorBox();
  const note = el("p", { "aria-live": "polite" });

  const save = async (event) => {
    event.preventDefault();
    error.textContent = "";
    note.textContent = "";
    const next = { ...stream.settings };
    for (const key of EDITED_KEYS) delete next[key];
    if (policy.input.value) next.playback_policy = policy.input.value;
    if (maxBitrate.input.value) next.max_bitrate_kbps = Number(maxBitrate.input.value);
    if (recording.input.value) next.recording = recording.input.value === "true";
    if (profile.input.value) next.transcoding_profile_id = profile.input.value;
    try {
      const body = { title: title.input.value, description: description.input.value, settings: next };
      const updated = await request("PUT", `/api/streams/${stream.id}`, body);
      Object.assign(stream, updated);
      note.textContent = "Saved. A new profile or playback setting applies from the next session.";
      onSaved(updated);
    } catch (exc) {
      showError(error, exc);
    }
  };

  const revokeNote = el("p", { "aria-live": "polite" });
  const revoke = async () => {
    const confirmed = await confirmAction("Revoke every playback token of this stream? Players with one stop at their next playlist reload; tokens issued afterwards work.", "Revoke tokens");
    if (!confirmed) return;
    try {
      const result = await request("POST", `/api/streams/${stream.id}/playback-token/revoke`);
      revokeNote.textContent = `Every token issued before ${new Date(result.revoked_at).toLocaleString()} is revoked.`;
    } catch (exc) {
      showError(revokeNote, exc);
    }
  };

  const section = el("section", { "aria-labelledby": "settings-heading" },
    el("h2", { id: "settings-heading" }, "Stream settings"),
    el("form", { onsubmit: save },
      title.label, description.label, policy.label, maxBitrate.label, recording.label,
      profile.label,
      el("p", {}, el("a", { href: `#/apps/${stream.app_id}/profiles` }, "Edit the app's transcoding profiles")),
      error, note,
      el("button", { type: "submit" }, "Save stream")),
    el("h3", {}, "Playback tokens"),
    el("p", {}, "A signed stream plays only with a playback token. Revoking ends every token issued so far."),
    el("button", { type: "button", onclick: revoke }, "Revoke playback tokens"),
    revokeNote);

  loadProfiles(stream, profile.input, error);
  return section;
}

async function loadProfiles(stream, select, error) {
  try {
    const query = `app_id=${encodeURIComponent(stream.app_id)}&limit=100`;
    const profiles = await request("GET", `/api/transcoding-profiles?${query}`);
    const chosen = stream.settings?.transcoding_profile_id;
    for (const item of profiles) {
      const sizes = item.qualities.map((quality) => quality.name).join(", ");
      select.append(el("option", { value: item.id, selected: item.id === chosen }, `${item.name} (${sizes})`));
    }
  } catch (exc) {
    showError(error, exc);
  }
}
