// An app's webhooks: create with a choice of events, change the URL and
// events, rotate the signing secret, the delivery log of each with every
// attempt, redeliver, send a test event, enable or disable, and delete.

import { request } from "./api.js";
import { closablePanel, confirmAction, copyText, el, errorBox, field, formatTime, showError, table } from "./dom.js";

// The event types of the API, in the order its reference lists them.
const EVENTS = [
  ["stream.live", "A stream goes live"],
  ["stream.offline", "A stream's session ends"],
  ["stream.health.warning", "A problem in a publisher's feed"],
  ["viewer.count.update", "The viewer count changes"],
  ["recording.started", "A recording starts"],
  ["recording.ready", "A recording is ready"],
  ["recording.failed", "A recording fails"],
  ["chat.message.new", "A chat message is stored"],
  ["webhook.test", "Send test event, on this page"],
];

// How often an open delivery log is fetched again, so new deliveries and
// retries appear while the page is open.
const REFRESH_MS = 5000;

export async function webhooksPage(appId, { page, setTitle, onLeave }) {
  const error = errorBox();
  const list = el("div", { id: "webhook-list" });
  const secretPanel = el("section", { id: "new-webhook-secret", "aria-live": "polite", hidden: true });
  const url = field("Receiver URL", { name: "webhook_url", type: "url", required: true, maxLength: 2048, placeholder: "https://example.lan/hooks/realcast" });
  const checkboxes = EVENTS.map(([type]) => el("input", { type: "checkbox", value: type, checked: type.startsWith("stream.") && type !== "stream.health.warning" }));
  const createError = errorBox();
  // The delivery logs on screen: webhook id to a function that fetches
  // that log again.
  const openLogs = new Map();
  const view = { appId, list, error, secretPanel, openLogs };
  const timer = setInterval(() => {
    if (document.hidden) return;
    for (const refresh of openLogs.values()) refresh();
  }, REFRESH_MS);
  onLeave(() => clearInterval(timer));

  const create = async (event) => {
    event.preventDefault();
    createError.textContent = "";
    const events = checkboxes.filter((box) => box.checked).map((box) => box.value);
    if (events.length === 0) {
      createError.textContent = "Select at least one event.";
      return;
    }
    try {
      const webhook = await request("POST", "/api/webhooks", { app_id: appId, url: url.input.value, events });
      showSecret(secretPanel, webhook);
      url.input.value = "";
      await refreshWebhooks(view);
    } catch (exc) {
      showError(createError, exc);
    }
  };

  page(
    "Webhooks",
    el("p", {}, el("a", { href: `#/apps/${appId}` }, "← Back to the app")),
    secretPanel,
    el("section", {}, el("h2", {}, "Webhooks"), error, list),
    el("section", {},
      el("h2", {}, "New webhook"),
      el("form", { onsubmit: create },
        url.label,
        el("fieldset", {},
          el("legend", {}, "Events"),
          checkboxes.map((box, index) => el("label", { class: "check" }, box, `${EVENTS[index][0]}: ${EVENTS[index][1]}`))),
        createError,
        el("button", { type: "submit", class: "primary" }, "Create webhook"))),
  );
  try {
    const app = await request("GET", `/api/apps/${encodeURIComponent(appId)}`);
    setTitle(`Webhooks of ${app.name}`);
  } catch (exc) {
    showError(error, exc);
    return;
  }
  await refreshWebhooks(view);
}

// A secret in the form the box generates: "whsec_" and the base64 of 32
// random bytes from the browser's cryptographic generator.
function newSecret() {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return `whsec_${btoa(String.fromCharCode(...bytes))}`;
}

// Shows a generated signing secret once: no call returns it again.
function showSecret(panel, webhook) {
  if (!webhook.secret) return;
  const secret = el("input", { id: "new-webhook-secret-value", readOnly: true, value: webhook.secret });
  const note = el("p", { "aria-live": "polite" });
  panel.replaceChildren(
    el("h2", {}, "Signing secret"),
    el("p", {}, "Copy the secret now: your receiver needs it to check signatures, and the box cannot show it again."),
    el("div", { class: "field-row" },
      el("label", { for: "new-webhook-secret-value" }, "Webhook secret", secret),
      el("button", { type: "button", onclick: () => copyText(secret.value, note) }, "Copy secret"),
      closablePanel(panel)),
    note,
  );
  panel.hidden = false;
  secret.focus();
}

async function refreshWebhooks(view) {
  view.openLogs.clear();
  try {
    const webhooks = await request("GET", `/api/webhooks?app_id=${encodeURIComponent(view.appId)}&limit=100`);
    const sections = webhooks.map((webhook) => webhookSection(webhook, view));
    if (sections.length === 0) sections.push(el("p", {}, "No webhooks yet. Create one below."));
    view.list.replaceChildren(...sections);
    view.error.textContent = "";
  } catch (exc) {
    showError(view.error, exc);
  }
}

function webhookSection(webhook, view) {
  const note = el("p", { "aria-live": "polite" });
  const deliveries = el("div", {});
  const call = async (method, path, done) => {
    note.textContent = "";
    try {
      await request(method, path, method === "PUT" ? done.body : undefined);
      note.textContent = done.text;
      if (done.reload) {
        await refreshWebhooks(view);
      } else {
        await showDeliveries(webhook, deliveries, view);
      }
    } catch (exc) {
      showError(note, exc);
    }
  };
  const test = () => call("POST", `/api/webhooks/${webhook.id}/test`, { text: "A test event was queued. The delivery log shows its result." });
  const toggle = () => {
    const status = webhook.status === "active" ? "disabled" : "active";
    return call("PUT", `/api/webhooks/${webhook.id}`, { body: { status }, text: `The webhook is ${status}.`, reload: true });
  };
  const rotate = async () => {
    const confirmed = await confirmAction(
      `Rotate the signing secret of the webhook to ${webhook.url}? Deliveries are signed with the new secret from the next attempt on, so update your receiver at once.`,
      "Rotate secret");
    if (!confirmed) return;
    note.textContent = "";
    try {
      const secret = newSecret();
      await request("PUT", `/api/webhooks/${webhook.id}`, { secret });
      showSecret(view.secretPanel, { secret });
    } catch (exc) {
      showError(note, exc);
    }
  };
  const remove = async () => {
    if (!(await confirmAction(`Delete the webhook to ${webhook.url}? Its delivery log is deleted too.`, "Delete webhook"))) return;
    await call("DELETE", `/api/webhooks/${webhook.id}`, { text: "", reload: true });
  };
  const disabled = webhook.status === "disabled"
    ? el("p", {}, `Disabled ${formatTime(webhook.disabled_at)}${webhook.disabled_reason ? `: ${webhook.disabled_reason}` : ""}.`)
    : null;
  return el("section", { class: "webhook", "data-webhook-id": webhook.id, "aria-label": `Webhook to ${webhook.url}` },
    el("h3", {}, webhook.url),
    el("p", {}, `Events: ${webhook.events.join(", ")}. Status: ${webhook.status}.`),
    disabled,
    el("div", { class: "field-row" },
      el("button", { type: "button", onclick: () => showDeliveries(webhook, deliveries, view) }, "Show delivery log"),
      el("button", { type: "button", onclick: test, disabled: webhook.status !== "active" }, "Send test event"),
      el("button", { type: "button", onclick: toggle }, webhook.status === "active" ? "Disable" : "Enable"),
      el("button", { type: "button", onclick: rotate, "aria-label": `Rotate secret of webhook to ${webhook.url}` }, "Rotate secret"),
      el("button", { type: "button", onclick: remove, "aria-label": `Delete webhook to ${webhook.url}` }, "Delete")),
    editForm(webhook, view),
    note,
    deliveries);
}

// A folded form that changes a webhook's URL and events (the secret stays).
function editForm(webhook, view) {
  const url = field("URL", {
    type: "url", required: true, maxLength: 2048, value: webhook.url,
    "aria-label": `URL of the webhook to ${webhook.url}`,
  });
  const checkboxes = EVENTS.map(([type]) => el("input", {
    type: "checkbox", value: type, checked: webhook.events.includes(type),
    "aria-label": `${type} for the webhook to ${webhook.url}`,
  }));
  const error = errorBox();
  const save = async (event) => {
    event.preventDefault();
    error.textContent = "";
    const events = checkboxes.filter((box) => box.checked).map((box) => box.value);
    if (events.length === 0) {
      error.textContent = "Select at least one event.";
      return;
    }
    try {
      await request("PUT", `/api/webhooks/${webhook.id}`, { url: url.input.value, events });
      await refreshWebhooks(view);
    } catch (exc) {
      showError(error, exc);
    }
  };
  return el("details", {},
    el("summary", {}, "Edit URL and events"),
    el("form", { onsubmit: save },
      url.label,
      el("fieldset", {},
        el("legend", {}, "Events"),
        checkboxes.map((box) => el("label", { class: "check" }, box, box.value))),
      error,
      el("button", { type: "submit" }, "Save webhook")));
}

async function showDeliveries(webhook, node, view) {
  view.openLogs.set(webhook.id, () => showDeliveries(webhook, node, view));
  let items;
  try {
    items = await request("GET", `/api/webhooks/${webhook.id}/deliveries?limit=50`);
  } catch (exc) {
    showError(view.error, exc);
    return;
  }
  // An unchanged log is left as it is, so a periodic refresh does not take
  // the focus away from a Redeliver button.
  const json = JSON.stringify(items);
  if (json === node.dataset.renderedJson) return;
  node.dataset.renderedJson = json;
  if (items.length === 0) {
    node.replaceChildren(el("p", {}, "No deliveries yet."));
    return;
  }
  const redeliver = async (delivery) => {
    try {
      await request("POST", `/api/webhooks/${webhook.id}/deliveries/${delivery.id}/redeliver`);
      await showDeliveries(webhook, node, view);
    } catch (exc) {
      showError(view.error, exc);
    }
  };
  // Attempt lists the person opened stay open when the log is redrawn.
  const open = new Set([...node.querySelectorAll("details[open][data-delivery-id]")].map((item) => item.dataset.deliveryId));
  const rows = items.map((delivery) => [
    delivery.event_type,
    delivery.status,
    String(delivery.attempt_count),
    formatTime(delivery.last_attempt_at),
    delivery.last_status_code === null ? "–" : String(delivery.last_status_code),
    delivery.last_error || "",
    attemptList(delivery, open.has(delivery.id)),
    el("button", {
      type: "button", onclick: () => redeliver(delivery), disabled: webhook.status !== "active",
      "aria-label": `Redeliver ${delivery.event_type} of ${formatTime(delivery.created_at)}`,
    }, "Redeliver"),
  ]);
  node.replaceChildren(
    el("h4", {}, "Delivery log"),
    table(`Deliveries to ${webhook.url}`, ["Event", "Status", "Attempts", "Last attempt", "HTTP status", "Error", "Each attempt", "Action"], rows));
}

// Every attempt of a delivery, folded: its time, HTTP status or error,
// latency and the start of the receiver's response body.
function attemptList(delivery, open) {
  if (delivery.attempts.length === 0) return "None yet";
  const items = delivery.attempts.map((attempt) => el("li", { "data-attempt": attempt.attempt },
    el("div", {}, `Attempt ${attempt.attempt} at ${formatTime(attempt.attempted_at)}: `,
      attempt.status_code === null ? "no HTTP response" : `HTTP ${attempt.status_code}`,
      `, ${attempt.latency_ms} ms`),
    attempt.error ? el("div", { class: "error-text" }, `Error: ${attempt.error}`) : null,
    attempt.response_body ? el("div", {}, "Response body: ", el("code", {}, attempt.response_body)) : null));
  return el("details", { "data-delivery-id": delivery.id, open },
    el("summary", { "aria-label": `Attempts of ${delivery.event_type} of ${formatTime(delivery.created_at)}` },
      `${delivery.attempts.length} attempt${delivery.attempts.length === 1 ? "" : "s"}`),
    el("ol", { class: "attempts" }, items));
}
