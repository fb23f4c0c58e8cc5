// The audit log and the security events, 50 entries a page. The API
// filters by app, age and the start of the action name.

import { request } from "./api.js";
import { el, errorBox, field, formatTime, selectField, showError, table } from "./dom.js";

const PAGE_SIZE = 50;

export async function auditPage({ page }) {
  const error = errorBox();
  const results = el("div", { id: "audit-results", "aria-live": "polite" });
  const kind = selectField("Show", { name: "kind" }, [
    ["all", "All entries"],
    ["security", "Security events only"],
  ], "all");
  const app = selectField("App", { name: "app_id" }, [["", "All apps"]], "");
  const days = selectField("Period", { name: "days" }, [
    ["1", "Last 24 hours"],
    ["7", "Last 7 days"],
    ["30", "Last 30 days"],
    ["", "Everything kept"],
  ], "7");
  const action = field("Action starts with", {
    name: "action", type: "search", placeholder: "login", maxLength: 100, autocomplete: "off",
  });
  const state = { skip: 0 };

  const load = async () => {
    error.textContent = "";
    const query = new URLSearchParams({ limit: PAGE_SIZE, skip: state.skip });
    if (app.input.value) query.set("app_id", app.input.value);
    if (days.input.value) query.set("days", days.input.value);
    const actionPrefix = action.input.value.trim();
    // A trailing "*" requests a prefix match from the API.
    if (actionPrefix) query.set("action", `${actionPrefix}*`);
    const path = kind.input.value === "security" ? "/api/audit-logs/security-events" : "/api/audit-logs";
    try {
      const entries = await request("GET", `${path}?${query}`);
      renderEntries(results, entries, actionPrefix, state, load);
    } catch (exc) {
      showError(error, exc);
    }
  };
  const submit = (event) => {
    event.preventDefault();
    state.skip = 0;
    load();
  };

  page(
    "Audit log",
    el("section", {},
      el("h2", {}, "Filters"),
      el("form", { class: "filters", onsubmit: submit },
        kind.label, app.label, days.label, action.label,
        el("button", { type: "submit", class: "primary" }, "Apply filters"))),
    el("section", {}, el("h2", {}, "Entries"), error, results),
  );
  try {
    const apps = await request("GET", "/api/apps?limit=100");
    for (const item of apps) app.input.append(el("option", { value: item.id }, item.name));
  } catch (exc) {
    showError(error, exc);
  }
  await load();
}

function renderEntries(node, entries, actionPrefix, state, load) {
  const rows = entries.map((entry) => [
    formatTime(entry.timestamp),
    entry.security_event ? el("strong", {}, entry.action) : entry.action,
    entry.status,
    entry.resource_type ? `${entry.resource_type} ${entry.resource_id || ""}` : "",
    entry.ip_address || "",
    entry.api_key_id ? `API key ${entry.api_key_id}` : "",
    entry.detail || "",
  ]);
  const first = state.skip + 1;
  const summary = entries.length === 0
    ? "No entries match."
    : `Entries ${first} to ${state.skip + entries.length}${actionPrefix ? ` with an action starting with "${actionPrefix}"` : ""}.`;
  const newer = () => {
    state.skip = Math.max(0, state.skip - PAGE_SIZE);
    load();
  };
  const older = () => {
    state.skip += PAGE_SIZE;
    load();
  };
  node.replaceChildren(
    el("p", {}, summary),
    rows.length ? table("Audit entries", ["Time", "Action", "Result", "Resource", "Address", "By", "Detail"], rows) : "",
    el("div", { class: "field-row" },
      el("button", { type: "button", onclick: newer, disabled: state.skip === 0 }, "Newer entries"),
      el("button", { type: "button", onclick: older, disabled: entries.length < PAGE_SIZE }, "Older entries")));
}
