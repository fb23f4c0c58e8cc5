// An app's transcoding profiles: each one is an editable form with its
// ladder of qualities, and one more form creates a profile. The box checks
// every field, and the form shows its 400, which names the first field at
// fault.

import { request } from "./api.js";
import { confirmAction, el, errorBox, field, showError } from "./dom.js";

// At most 8 qualities per profile, as the API allows.
const MAX_QUALITIES = 8;
const NEW_QUALITY = { name: "720p", width: 1280, height: 720, bitrate: 2500, fps: 30 };

export async function profilesPage(appId, { page, setTitle }) {
  const error = errorBox();
  const list = el("div", { id: "profile-list" });
  const view = { appId, list, error };
  page(
    "Transcoding profiles",
    el("p", {}, el("a", { href: `#/apps/${appId}` }, "← Back to the app")),
    el("p", {}, "A stream uses a profile once it is chosen in the stream's settings; the profile in force when a session starts stays until the session ends."),
    el("section", {}, el("h2", {}, "Profiles"), error, list),
    el("section", {}, el("h2", {}, "New profile"), profileForm(null, view)),
  );
  try {
    const app = await request("GET", `/api/apps/${encodeURIComponent(appId)}`);
    setTitle(`Transcoding profiles of ${app.name}`);
  } catch (exc) {
    showError(error, exc);
    return;
  }
  await refreshProfiles(view);
}

async function refreshProfiles(view) {
  try {
    const profiles = await request("GET", `/api/transcoding-profiles?app_id=${encodeURIComponent(view.appId)}&limit=100`);
    const forms = profiles.map((profile) => el("section", {
      class: "profile", "data-profile-id": profile.id, "aria-label": `Profile ${profile.name}`,
    }, el("h3", {}, profile.name), profileForm(profile, view)));
    if (forms.length === 0) forms.push(el("p", {}, "No profiles yet: streams are passed through as published."));
    view.list.replaceChildren(...forms);
    view.error.textContent = "";
  } catch (exc) {
    showError(view.error, exc);
  }
}

// The form of one profile, or of a new one when `profile` is null. The
// accessible names of an existing profile's controls end in "of NAME", so
// that each control on the page has a distinct name. The visible labels
// leave it out.
function profileForm(profile, view) {
  const suffix = profile ? ` of ${profile.name}` : "";
  const named = (label, attrs) => field(label, { ...attrs, "aria-label": `${label}${suffix}` });
  const name = named("Profile name", { required: true, maxLength: 200, value: profile?.name ?? "" });
  const description = named("Profile description", { value: profile?.description ?? "" });
  const audio = named("Audio bitrate (kbps)", {
    type: "number", min: 32, max: 512, step: 1, required: true, value: profile?.audio_bitrate ?? 128,
  });
  const gpu = el("input", {
    type: "checkbox", checked: Boolean(profile?.enable_gpu_acceleration),
    "aria-label": `Use a hardware encoder when the box has one${suffix}`,
  });
  const rows = el("tbody", {});
  const error = errorBox();
  const note = el("p", { "aria-live": "polite" });

  const addRow = (quality) => {
    if (rows.children.length >= MAX_QUALITIES) {
      error.textContent = `A profile has at most ${MAX_QUALITIES} qualities.`;
      return;
    }
    rows.append(qualityRow(quality, rows.children.length + 1, suffix));
  };
  for (const quality of profile?.qualities ?? [NEW_QUALITY]) addRow(quality);

  const submit = async (event) => {
    event.preventDefault();
    error.textContent = "";
    note.textContent = "";
    const body = {
      name: name.input.value,
      description: description.input.value,
      audio_bitrate: Number(audio.input.value),
      enable_gpu_acceleration: gpu.checked,
      qualities: [...rows.children].map(readQuality),
    };
    try {
      if (profile) {
        await request("PUT", `/api/transcoding-profiles/${profile.id}`, body);
      } else {
        await request("POST", "/api/transcoding-profiles", { app_id: view.appId, ...body });
        name.input.value = "";
      }
      await refreshProfiles(view);
      note.textContent = profile ? "Saved." : "";
    } catch (exc) {
      showError(error, exc);
    }
  };
  const remove = async () => {
    if (!(await confirmAction(`Delete the profile ${profile.name}? Streams that chose it are passed through from their next session.`, "Delete profile"))) return;
    try {
      await request("DELETE", `/api/transcoding-profiles/${profile.id}`);
      await refreshProfiles(view);
    } catch (exc) {
      showError(error, exc);
    }
  };

  return el("form", { class: "wide", onsubmit: submit },
    name.label, description.label, audio.label,
    el("label", { class: "check" }, gpu, "Use a hardware encoder when the box has one"),
    el("div", { class: "table-wrap" },
      el("table", { "aria-label": `Qualities${suffix}` },
        el("thead", {}, el("tr", {},
          ["Name", "Width", "Height", "Bitrate (kbps)", "FPS", ""].map((text) => el("th", { scope: "col" }, text)))),
        rows)),
    el("p", {}, el("button", {
      type: "button", "aria-label": `Add quality${suffix}`,
      onclick: () => addRow({ ...NEW_QUALITY, name: "" }),
    }, "Add quality")),
    error, note,
    el("div", { class: "field-row" },
      el("button", { type: "submit", class: "primary" }, profile ? `Save profile ${profile.name}` : "Create profile"),
      profile ? el("button", { type: "button", onclick: remove }, `Delete profile ${profile.name}`) : null));
}

function qualityRow(quality, number, suffix) {
  const input = (key, label, attrs) => el("td", {}, el("input", {
    "aria-label": `${label} of quality ${number}${suffix}`, "data-key": key, value: quality[key], required: true, ...attrs,
  }));
  const row = el("tr", {},
    input("name", "Name", { maxLength: 32, pattern: "[A-Za-z0-9_\\-]+", size: 8 }),
    input("width", "Width", { type: "number", min: 16, max: 4096, step: 2 }),
    input("height", "Height", { type: "number", min: 16, max: 4096, step: 2 }),
    input("bitrate", "Bitrate", { type: "number", min: 100, max: 50000, step: 1 }),
    input("fps", "FPS", { type: "number", min: 1, max: 120, step: "any" }));
  row.append(el("td", {}, el("button", {
    type: "button", "aria-label": `Remove quality ${number}${suffix}`,
    onclick: () => row.remove(),
  }, "Remove")));
  return row;
}

function readQuality(row) {
  const quality = {};
  for (const input of row.querySelectorAll("input")) {
    const key = input.dataset.key;
    quality[key] = key === "name" ? input.value : Number(input.value);
  }
  return quality;
}
