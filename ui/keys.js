// An app's API keys: list, create, regenerate and delete. A new secret is
// shown once, because the box stores only a hash of it.

import { request } from "./api.js";
import { closablePanel, confirmAction, copyText, el, errorBox, field, showError } from "./dom.js";

// The scope names of the API, in the order the API lists them.
const SCOPES = [
  "apps:read",
  "streams:read",
  "streams:write",
  "profiles:read",
  "profiles:write",
  "audit:read",
  "webhooks:read",
  "webhooks:write",
  "recordings:read",
  "recordings:write",
  "chat:read",
  "chat:write",
];

export async function keysPage(appId, { page, setTitle }) {
  const error = errorBox();
  const list = el("ul", { class: "items", "aria-label": "API keys" });
  const secretPanel = el("section", { id: "new-secret", "aria-live": "polite", hidden: true });
  const name = field("Key name", { name: "key_name", required: true, maxLength: 200 });
  const checkboxes = SCOPES.map((scope) => el("input", { type: "checkbox", value: scope }));
  const createError = errorBox();
  const create = async (event) => {
    event.preventDefault();
    createError.textContent = "";
    const scopes = checkboxes.filter((box) => box.checked).map((box) => box.value);
    if (scopes.length === 0) {
      createError.textContent = "Select at least one scope.";
      return;
    }
    try {
      const key = await request("POST", "/api/api-keys", { app_id: appId, name: name.input.value, scopes });
      showSecret(secretPanel, key);
      name.input.value = "";
      await refreshKeys(appId, list, error, secretPanel);
    } catch (exc) {
      showError(createError, exc);
    }
  };
  page(
    "API keys",
    el("p", {}, el("a", { href: `#/apps/${appId}` }, "← Back to the app")),
    secretPanel,
    el("section", {}, el("h2", {}, "Keys"), error, list),
    el("section", {},
      el("h2", {}, "New key"),
      el("form", { onsubmit: create },
        name.label,
        el("fieldset", {},
          el("legend", {}, "Scopes"),
          checkboxes.map((box) => el("label", { class: "check" }, box, box.value))),
        createError,
        el("button", { type: "submit", class: "primary" }, "Create key"))),
  );
  try {
    const app = await request("GET", `/api/apps/${encodeURIComponent(appId)}`);
    setTitle(`API keys of ${app.name}`);
  } catch (exc) {
    showError(error, exc);
    return;
  }
  await refreshKeys(appId, list, error, secretPanel);
}

// Shows the key's secret with a copy button, once: the box cannot show
// it again.
function showSecret(panel, key) {
  const secret = el("input", { id: "new-secret-value", readOnly: true, value: key.api_secret });
  const note = el("p", { "aria-live": "polite" });
  panel.replaceChildren(
    el("h2", {}, `Secret of ${key.name}`),
    el("p", {}, "Copy the secret now. The box stores only a hash of it, so it cannot show it again."),
    el("p", {}, "API key: ", el("code", {}, key.api_key)),
    el("div", { class: "field-row" },
      el("label", { for: "new-secret-value" }, "API secret", secret),
      el("button", { type: "button", onclick: () => copyText(secret.value, note) }, "Copy secret"),
      closablePanel(panel)),
    note,
  );
  panel.hidden = false;
  secret.focus();
}

async function refreshKeys(appId, list, error, secretPanel) {
  try {
    const keys = await request("GET", `/api/api-keys?app_id=${encodeURIComponent(appId)}&limit=100`);
    const items = keys.map((key) => keyItem(key, appId, list, error, secretPanel));
    if (items.length === 0) items.push(el("li", {}, "No API keys yet."));
    list.replaceChildren(...items);
  } catch (exc) {
    showError(error, exc);
  }
}

function keyItem(key, appId, list, error, secretPanel) {
  const regenerate = async () => {
    if (!(await confirmAction(`Regenerate the secret of ${key.name}? The old secret stops working at once.`, "Regenerate"))) return;
    try {
      showSecret(secretPanel, await request("POST", `/api/api-keys/${key.id}/regenerate`));
    } catch (exc) {
      showError(error, exc);
    }
  };
  const remove = async () => {
    if (!(await confirmAction(`Delete the key ${key.name}? Requests with it fail at once.`, "Delete key"))) return;
    try {
      await request("DELETE", `/api/api-keys/${key.id}`);
      await refreshKeys(appId, list, error, secretPanel);
    } catch (exc) {
      showError(error, exc);
    }
  };
  const lastUsed = key.last_used_at ? `last used ${key.last_used_at}` : "never used";
  return el("li", {},
    el("strong", {}, key.name),
    el("code", {}, key.api_key),
    el("span", {}, key.scopes.join(", ")),
    el("span", {}, lastUsed),
    el("button", { type: "button", onclick: regenerate, "aria-label": `Regenerate secret of ${key.name}` }, "Regenerate"),
    el("button", { type: "button", onclick: remove, "aria-label": `Delete key ${key.name}` }, "Delete"));
}
